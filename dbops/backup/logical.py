"""Logical backups: pg_dump (custom format) in an exported snapshot, streamed through zstd and AES-256-GCM.

The figures the restore drill compares (rows and content checksum per table) are read in the same snapshot that
pg_dump dumps, so they describe exactly the data in the backup, even while the application keeps writing.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from dbops.backup.figures import table_figures
from dbops.backup.keys import MasterKey
from dbops.backup.manifest import object_key, save_manifest
from dbops.backup.store import Store
from dbops.backup.stream import CHUNK, compress, encrypt
from dbops.pg.commands import find_program, finish_process, start_process
from dbops.pg.connect import connect, database_name, split_password

DUMP_OBJECT = "dump.pgc.zst.enc"
ZSTD_LEVEL = 3


def new_backup_id(kind: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{kind}-{uuid.uuid4().hex[:6]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def logical_backup(
    url: str,
    store: Store,
    key: MasterKey,
    *,
    bin_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Take a logical backup of ``url`` into ``store``; return its manifest (already stored, so now "latest")."""
    backup_id = new_backup_id("logical")
    started = time.monotonic()
    data_key = os.urandom(32)
    bare_url, password = split_password(url)
    conn = connect(url, autocommit=False)
    stored_key = object_key(backup_id, DUMP_OBJECT)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET lock_timeout = '5min'")  # an exclusive lock held elsewhere fails the backup, never hangs it
        info = conn.execute(
            "SELECT pg_export_snapshot(), current_setting('server_version'), "
            "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text"
        ).fetchone()
        snapshot_id, server_version, lsn = info  # type: ignore[misc]
        started_at = _now()
        figures = table_figures(conn)
        args = [find_program("pg_dump", bin_dir), "--format=custom", "-Z", "0", f"--snapshot={snapshot_id}",
                "--no-password", f"--dbname={bare_url}", *(extra_args or [])]
        proc = start_process(args, password=password, stdout=subprocess.PIPE)
        raw = {"bytes": 0}

        def dump_chunks():  # type: ignore[no-untyped-def]
            assert proc.stdout is not None
            while block := proc.stdout.read(CHUNK):
                raw["bytes"] += len(block)
                yield block
            # pg_dump's failure must stop the upload before the object is completed.
            finish_process(proc, "pg_dump")

        try:
            result = store.put(stored_key, encrypt(compress(dump_chunks(), ZSTD_LEVEL), data_key), progress)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _discard(store, stored_key)
            raise
    finally:
        conn.close()

    manifest: dict[str, Any] = {
        "format": 1,
        "id": backup_id,
        "kind": "logical",
        "parent": None,
        "database": database_name(url),
        "server_version": server_version,
        "start_lsn": lsn,
        "snapshot": snapshot_id,
        "started_at": started_at,
        "finished_at": _now(),
        "duration_seconds": round(time.monotonic() - started, 3),
        "tool": "pg_dump --format=custom -Z 0",
        "objects": [{"name": DUMP_OBJECT, "size": result.size, "sha256": result.sha256, "raw_size": raw["bytes"]}],
        "raw_bytes": raw["bytes"],
        "stored_bytes": result.size,
        "compression": {"algorithm": "zstd", "level": ZSTD_LEVEL},
        "encryption": {"algorithm": "AES-256-GCM", "chunk_bytes": CHUNK, **key.wrap(data_key, backup_id)},
        "tables": figures,
    }
    try:
        save_manifest(store, key, manifest)
    except BaseException:
        _discard(store, stored_key)
        raise
    return manifest


def _discard(store: Store, key: str) -> None:
    """Best-effort removal of a partial object; the failure that got us here is the one to report."""
    try:
        store.delete(key)
    except Exception:  # noqa: S110 - e.g. the S3 server is the thing that went away
        pass


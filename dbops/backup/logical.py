"""Logical backups: pg_dump in an exported snapshot, streamed through zstd and AES-256-GCM into the store.

Two dump formats:

- **custom** (the default): one ``pg_dump --format=custom`` stream piped straight through compression and encryption
  into one object. Nothing is written to local disk.
- **directory** (``jobs=N``): ``pg_dump --format=directory --jobs=N`` dumps N tables at a time. pg_dump can only write
  this format to a local directory, so **this mode stages the dump files, unencrypted, on this machine**, in a
  private directory under ``staging_root`` (``$DBOPS_HOME/staging/<pid>-<random>``, mode 0700, never the system
  temp dir; pg_dump's own compression off). Each file is compressed, encrypted (its name bound into the
  authenticated data) and uploaded as its own object as soon as pg_dump has closed it, then deleted; the staging
  directory is removed at the end, also on failure, Ctrl-C or SIGTERM, and pg_dump dies with dbops even on SIGKILL
  (the next backup then removes the killed run's staging directory; see :mod:`dbops.staging`). Staging needs at most
  the raw size of the dump in free space (less while uploads keep up).

The figures the restore drill compares (rows and content checksum per table) are read in the same snapshot that
pg_dump dumps, on the exporting connection while pg_dump runs, so they describe exactly the data in the backup, even
while the application keeps writing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import psycopg

from dbops.backup.figures import table_figures
from dbops.backup.keys import MasterKey
from dbops.backup.manifest import discard, new_backup_id, now_iso, object_key, save_manifest
from dbops.backup.store import Store
from dbops.backup.stream import CHUNK, ProcessOutput, compress, encrypt, read_file
from dbops.pg.binaries import client_bin_dir, find_program
from dbops.pg.connect import connect, database_name, split_password
from dbops.programs import finish_process, start_process, stop_process
from dbops.staging import remove_leftovers, staging_dir

DUMP_OBJECT = "dump.pgc.zst.enc"
DIRECTORY_PREFIX = "dump.d/"  # objects of a directory-format dump: dump.d/<pg_dump's file name>.zst.enc
OBJECT_SUFFIX = ".zst.enc"
ZSTD_LEVEL = 3
POLL_SECONDS = 0.2
DUMP_TIMEOUT = 6 * 3600.0


def directory_object_name(file_name: str) -> str:
    return f"{DIRECTORY_PREFIX}{file_name}{OBJECT_SUFFIX}"


def logical_backup(
    url: str,
    store: Store,
    key: MasterKey,
    *,
    bin_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    extra_args: list[str] | None = None,
    jobs: int | None = None,
    staging_root: Path | None = None,
) -> dict[str, Any]:
    """Take a logical backup of ``url`` into ``store``; return its manifest (already stored, so now "latest").

    ``jobs`` (≥ 1) selects the directory format dumped by that many pg_dump workers, staged locally under
    ``staging_root`` (see above; :attr:`dbops.settings.Settings.staging_root`), which it then requires. Staging
    directories left by killed runs under ``staging_root`` are removed first.
    """
    if jobs is not None and jobs < 1:
        raise ValueError("jobs must be at least 1")
    if jobs is not None and staging_root is None:
        raise ValueError("a directory-format dump (jobs) stages files locally: pass staging_root "
                         "(Settings.staging_root, $DBOPS_HOME/staging)")
    if staging_root is not None and staging_root.is_dir():
        remove_leftovers(staging_root)
    backup_id = new_backup_id("logical")
    started = time.monotonic()
    data_key = os.urandom(32)
    bare_url, password = split_password(url)
    conn = connect(url, autocommit=False)
    stored: list[str] = []  # object keys written so far: removed again if the backup fails
    figures_future: Future[dict[str, dict[str, Any]]] | None = None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbops-figures")
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET lock_timeout = '5min'")  # an exclusive lock held elsewhere fails the backup, never hangs it
        info = conn.execute(
            "SELECT pg_export_snapshot(), current_setting('server_version'), "
            "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text"
        ).fetchone()
        snapshot_id, server_version, lsn = info  # type: ignore[misc]
        started_at = now_iso()
        common = ["-Z", "0", f"--snapshot={snapshot_id}", "--no-password", f"--dbname={bare_url}", *(extra_args or [])]
        pg_dump = find_program("pg_dump", client_bin_dir(bin_dir, int(server_version.split(".")[0])))
        if jobs is None:
            proc = start_process([pg_dump, "--format=custom", *common], password=password, stdout=subprocess.PIPE)
            figures_future = pool.submit(table_figures, conn)  # the exporting transaction, while pg_dump runs
            objects = [_stream_custom(proc, store, backup_id, data_key, progress, stored)]
            tool = "pg_dump --format=custom -Z 0"
        else:
            assert staging_root is not None
            with staging_dir(staging_root) as staging:
                dump_dir = staging / "dump"
                # --no-sync: each file is read back and uploaded at once; fsyncing the staging area is wasted work
                # (and would race with the files already uploaded and deleted).
                proc = start_process([pg_dump, "--format=directory", f"--jobs={jobs}", "--no-sync",
                                      f"--file={dump_dir}", *common],
                                     password=password, stdout=subprocess.DEVNULL)
                figures_future = pool.submit(table_figures, conn)
                objects = _upload_directory(proc, dump_dir, store, backup_id, data_key, progress, stored)
            tool = f"pg_dump --format=directory --jobs={jobs} --no-sync -Z 0"
        figures = figures_future.result()
    except BaseException:
        if figures_future is not None and not figures_future.done():
            with contextlib.suppress(Exception):  # stop the figures query; its error is not the one to report
                conn.cancel_safe()
        pool.shutdown(wait=True)
        conn.close()
        for name in stored:
            discard(store, name)
        raise
    pool.shutdown(wait=True)
    conn.close()

    raw_bytes = sum(o["raw_size"] for o in objects)
    stored_bytes = sum(o["size"] for o in objects)
    manifest: dict[str, Any] = {  # "format" is set by save_manifest, the one writer
        "id": backup_id,
        "kind": "logical",
        "dump_format": "custom" if jobs is None else "directory",
        "jobs": jobs or 1,
        "parent": None,
        "database": database_name(url),
        "server_version": server_version,
        "start_lsn": lsn,
        "snapshot": snapshot_id,
        "started_at": started_at,
        "finished_at": now_iso(),
        "duration_seconds": round(time.monotonic() - started, 3),
        "tool": tool,
        "objects": objects,
        "raw_bytes": raw_bytes,
        "stored_bytes": stored_bytes,
        "compression": {"algorithm": "zstd", "level": ZSTD_LEVEL},
        "encryption": {"algorithm": "AES-256-GCM", "chunk_bytes": CHUNK, **key.wrap(data_key, backup_id)},
        "tables": figures,
    }
    try:
        save_manifest(store, key, manifest)
    except BaseException:
        for name in stored:
            discard(store, name)
        raise
    return manifest


def _stream_custom(proc: subprocess.Popen[bytes], store: Store, backup_id: str, data_key: bytes,
                   progress: Callable[[int], None] | None, stored: list[str]) -> dict[str, Any]:
    """pg_dump's stdout → zstd → AES-GCM → one object; pg_dump's failure fails the upload before it completes."""
    output = ProcessOutput(proc, "pg_dump", DUMP_TIMEOUT)
    stored_key = object_key(backup_id, DUMP_OBJECT)
    stored.append(stored_key)
    try:
        result = store.put(stored_key, encrypt(compress(output, ZSTD_LEVEL), data_key), progress)
    except BaseException:
        stop_process(proc)
        raise
    return {"name": DUMP_OBJECT, "size": result.size, "sha256": result.sha256, "raw_size": output.bytes}


def _upload_directory(proc: subprocess.Popen[bytes], dump_dir: Path, store: Store, backup_id: str, data_key: bytes,
                      progress: Callable[[int], None] | None, stored: list[str]) -> list[dict[str, Any]]:
    """Upload each file of pg_dump's directory once pg_dump has closed it; the rest (toc.dat) when it exits."""
    objects: list[dict[str, Any]] = []
    total = 0

    def upload(path: Path) -> None:
        nonlocal total
        name = directory_object_name(path.name)
        stored_key = object_key(backup_id, name)
        stored.append(stored_key)
        base = total
        report = (lambda n: progress(base + n)) if progress else None
        with open(path, "rb") as handle:
            chunks = encrypt(compress(read_file(handle), ZSTD_LEVEL), data_key, name.encode())
            result = store.put(stored_key, chunks, report)
        objects.append({"name": name, "file": path.name, "size": result.size, "sha256": result.sha256,
                        "raw_size": path.stat().st_size})
        total += result.size
        path.unlink()  # keep the staging area small: it only holds what is not uploaded yet

    deadline = time.monotonic() + DUMP_TIMEOUT
    try:
        while proc.poll() is None:
            for path in _closed_files(dump_dir, proc):
                upload(path)
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        finish_process(proc, "pg_dump", timeout=10)
        for path in sorted(p for p in dump_dir.iterdir() if p.is_file()):
            upload(path)
    except BaseException:
        stop_process(proc)
        raise
    return objects


def _closed_files(dump_dir: Path, proc: subprocess.Popen[bytes]) -> list[Path]:
    """Files pg_dump (leader and workers) created and no longer holds open: complete, as it never reopens one."""
    if not dump_dir.is_dir():
        return []
    present = sorted(p for p in dump_dir.iterdir() if p.is_file())  # listed *before* looking at open files
    if not present:
        return []
    open_now: set[str] = set()
    try:
        leader = psutil.Process(proc.pid)
        for member in [leader, *leader.children(recursive=True)]:
            try:
                open_now.update(f.path for f in member.open_files())
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
    except psutil.NoSuchProcess:
        return []  # pg_dump just exited: its remaining files are uploaded after its exit status is known
    return [p for p in present if str(p) not in open_now and str(p.resolve()) not in open_now]


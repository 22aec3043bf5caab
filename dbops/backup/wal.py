"""Continuous WAL archiving into the backup store, for point-in-time recovery.

Every finished WAL file becomes ``wal/<name>.zst.enc``: a small header holding the file's own data key wrapped by the
master key (bound to the file name, so objects cannot be swapped), then the zstd-compressed, AES-256-GCM-chunked
content. Rotating the master key only rewrites headers.

Two ways in:

- ``dbops wal push %p`` as PostgreSQL's ``archive_command``, where the server's OS user can run dbops;
- a spool: ``archive_command`` only copies the finished file into a spool directory the server user owns (a shell
  one-liner, no Python), and ``dbops wal push --spool DIR`` (run by the ``wal_archive`` asset, by every base backup and
  drill, or by cron) moves the files into the store. The embedded server uses the spool: it runs as an unprivileged OS
  user who cannot reach dbops' virtual environment. The spool's backlog is part of the measured archive lag (RPO).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.store import Store, StoreError
from dbops.backup.stream import ChunkReader, compress, decompress, decrypt, encrypt, read_file

WAL_PREFIX = "wal/"
SUFFIX = ".zst.enc"
MAGIC = b"DBOPSWAL1"
SEGMENT = re.compile(r"^[0-9A-F]{24}$")
WAL_NAME = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$")


def wal_key(name: str) -> str:
    return f"{WAL_PREFIX}{name}{SUFFIX}"


def archive_command(spool: Path) -> str:
    """A shell ``archive_command`` that copies a finished WAL file into ``spool`` atomically (copy, sync, rename)."""
    target = shlex.quote(str(spool))
    return f"cp %p {target}/%f.part && sync {target}/%f.part && mv -f {target}/%f.part {target}/%f"


def _check_name(name: str) -> None:
    if not WAL_NAME.match(name):
        raise StoreError(f"{name!r} is not a WAL file name", "pass the path PostgreSQL gives as %p")


def push_file(store: Store, key: MasterKey, path: Path, name: str | None = None) -> bool:
    """Store one WAL file; return False when the store already had it (PostgreSQL may archive a file twice)."""
    name = name or path.name
    _check_name(name)
    if store.exists(wal_key(name)):
        return False
    data_key = os.urandom(32)
    header = json.dumps(key.wrap(data_key, f"wal:{name}")).encode()

    def chunks() -> Iterator[bytes]:
        yield MAGIC + len(header).to_bytes(2, "big") + header
        with open(path, "rb") as handle:
            yield from encrypt(compress(read_file(handle), 3), data_key)

    store.put(wal_key(name), chunks())
    return True


def push_spool(store: Store, key: MasterKey, spool: Path) -> list[str]:
    """Move every finished file of the spool into the store, timeline histories first, then oldest first; return
    their names."""
    pushed = []
    for path in sorted(spool_backlog(spool), key=lambda p: (not p.name.endswith(".history"), p.name)):
        push_file(store, key, path)
        path.unlink()
        pushed.append(path.name)
    return pushed


def spool_backlog(spool: Path) -> list[Path]:
    """The finished WAL files waiting in the spool (a copy still being written ends in ``.part`` and is left out)."""
    if not spool.is_dir():
        return []
    return sorted(p for p in spool.iterdir() if WAL_NAME.match(p.name))


def list_wal(store: Store) -> list[str]:
    """The archived WAL file names; objects under ``wal/`` with any other name (``../x``, a nested key) are left out,
    so fetch and prune only ever touch ``wal/<WAL file name>.zst.enc``."""
    names = (n[len(WAL_PREFIX):-len(SUFFIX)] for n in store.list(WAL_PREFIX) if n.endswith(SUFFIX))
    return sorted(n for n in names if WAL_NAME.match(n))


def fetch(store: Store, key: MasterKey, name: str) -> Iterator[bytes]:
    """The plaintext of an archived WAL file, authenticated chunk by chunk."""
    label = f"archived WAL file {name}"
    reader = ChunkReader(store.get(wal_key(name)))

    def read(size: int) -> bytes:
        data = reader.read(size)
        if len(data) < size:
            raise BackupIntegrityError(f"{label} is truncated in its header", "it is incomplete")
        return data

    head = read(len(MAGIC) + 2)
    if not head.startswith(MAGIC):
        raise BackupIntegrityError(f"{label} is not a dbops WAL object", "it was damaged")
    try:
        wrapped = json.loads(read(int.from_bytes(head[len(MAGIC):], "big")))
    except ValueError as exc:
        raise BackupIntegrityError(f"{label} has a damaged header", "it was damaged") from exc
    data_key = key.unwrap(wrapped, f"wal:{name}")
    yield from decompress(decrypt(reader.remaining(), data_key, label), label)


def segment_position(name: str) -> str:
    """The log/segment part of a WAL file name (timeline-independent, sortable as text)."""
    return name[8:24]


def stage(store: Store, key: MasterKey, dest: Path, from_segment: str) -> list[str]:
    """Decrypt every archived WAL file from ``from_segment``'s position on (and every timeline history) into
    ``dest``, for a ``restore_command`` that only copies: the restored server's OS user need not run dbops."""
    dest.mkdir(parents=True, exist_ok=True)
    staged = []
    start = segment_position(from_segment)
    for name in list_wal(store):
        if not name.endswith(".history") and segment_position(name) < start:
            continue
        if name.endswith(".partial"):
            continue
        partial = dest / f"{name}.part"
        with open(partial, "wb") as out:
            for chunk in fetch(store, key, name):
                out.write(chunk)
        partial.replace(dest / name)
        staged.append(name)
    return staged


def restore_command(staged: Path) -> str:
    return f"cp {shlex.quote(str(staged))}/%f %p"


def prune_wal(store: Store, oldest_needed: str, *, dry_run: bool = False) -> list[str]:
    """Delete archived WAL older than ``oldest_needed`` (the start segment of the oldest kept base backup)."""
    start = segment_position(oldest_needed)
    doomed = [n for n in list_wal(store) if not n.endswith(".history") and segment_position(n) < start]
    if not dry_run:
        for name in doomed:
            store.delete(wal_key(name))
    return doomed


def _position_number(name: str, segment_bytes: int) -> int:
    per_log = 0x100000000 // segment_bytes
    return int(name[8:16], 16) * per_log + int(name[16:24], 16)


def archive_status(url: str, store: Store, spool: Path | None) -> dict[str, Any]:
    """How far the archive (the store) is behind the server: the recovery point objective, measured.

    ``segments_behind`` counts finished WAL files the store does not have yet (0: only the file being written is at
    risk, and archive_timeout bounds its age); ``failing`` is true while the server's last archive attempt failed.
    """
    from dbops.pg.connect import connection

    with connection(url) as conn:
        row = conn.execute(
            "SELECT current_setting('archive_mode'), pg_walfile_name(pg_current_wal_lsn()), "
            "(SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 WHEN 'MB' THEN 1048576 END "
            "   FROM pg_settings WHERE name = 'wal_segment_size'), "
            "archived_count, last_archived_wal, extract(epoch FROM now() - last_archived_time), failed_count, "
            "coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) FROM pg_stat_archiver"
        ).fetchone()
    mode, current, segment_bytes, archived, last_wal, last_age, failed, failing = row  # type: ignore[misc]
    stored = [n for n in list_wal(store) if SEGMENT.match(n)]
    backlog = spool_backlog(spool) if spool else []
    behind = None
    if stored:
        behind = max(0, _position_number(current, segment_bytes) - _position_number(stored[-1], segment_bytes) - 1)
    return {
        "archive_mode": mode,
        "current_wal": current,
        "newest_stored_wal": stored[-1] if stored else None,
        "stored_wal_files": len(stored),
        "segments_behind": behind,
        "spool_backlog": len(backlog),
        "archived_count": int(archived or 0),
        "failed_count": int(failed or 0),
        "failing": bool(failing),
        "last_archived_wal": last_wal,
        "last_archived_age_seconds": round(float(last_age), 1) if last_age is not None else None,
    }

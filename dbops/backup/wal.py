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

Neither way overwrites: a name already archived with other bytes is refused (the same bytes succeed, as PostgreSQL
asks of an archive_command). A push also refuses WAL its store's history never produced (:class:`WalChain`): a
segment of another cluster (the system identifier in its page header) or of a timeline no base backup of the store is
on, such as the timeline a restored copy starts when it promotes. Such a file stays where it was, nothing is lost,
and it cannot pollute the timelines later restores and drills follow.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.physical import physical_backups
from dbops.backup.store import ObjectMissing, Store, StoreError
from dbops.backup.stream import ChunkReader, compress, decompress, decrypt, encrypt, read_file
from dbops.pg.connect import connection

WAL_PREFIX = "wal/"
SUFFIX = ".zst.enc"
MAGIC = b"DBOPSWAL1"
SEGMENT = re.compile(r"^[0-9A-F]{24}$")
WAL_NAME = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$")
CHAIN_KEY = f"{WAL_PREFIX}timelines.json"  # the cluster and timelines this store archives (see WalChain)
# XLogLongPageHeaderData, the header of a segment's first page: magic, info, timeline, page address, remaining
# length, (padding), system identifier, segment size, block size. Little-endian (x86-64, arm64).
LONG_HEADER = struct.Struct("<HHIQI4xQII")
XLP_LONG_HEADER = 0x0002


def wal_key(name: str) -> str:
    return f"{WAL_PREFIX}{name}{SUFFIX}"


def _check_name(name: str) -> None:
    if not WAL_NAME.match(name):
        raise StoreError(f"{name!r} is not a WAL file name", "pass the path PostgreSQL gives as %p")


class ForeignWalError(StoreError):
    """A WAL file the store's history never produced (another cluster, the timeline of a restored copy), or a file
    whose name is already archived with other content: refused, so a stray copy can never pollute the archive."""


def timeline_of(name: str) -> int:
    return int(name[:8], 16)


def segment_system_identifier(path: Path, name: str) -> str:
    """The database system identifier in a WAL segment's first page header (the long header every segment starts
    with carries pg_control's identifier), as text."""
    with open(path, "rb") as handle:
        head = handle.read(LONG_HEADER.size)
    if len(head) == LONG_HEADER.size:
        _magic, info, _tli, _addr, _rem, system_id, seg_size, block = LONG_HEADER.unpack(head)
        power_of_two = seg_size & (seg_size - 1) == 0 and block and block & (block - 1) == 0
        if info & XLP_LONG_HEADER and power_of_two and (1 << 20) <= seg_size <= (1 << 30) and system_id:
            return str(system_id)
    raise ForeignWalError(f"{name} is not a PostgreSQL WAL segment (it has no WAL page header)",
                          "archive only the files PostgreSQL hands to archive_command (%p)")


def history_parents(path: Path, name: str) -> list[int]:
    """The ancestor timelines a ``.history`` file lists (a line per switch: parent timeline, switch LSN, reason)."""
    parents = []
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split()
        if fields and not line.lstrip().startswith("#"):
            parents.append(int(fields[0]) if fields[0].isdigit() else -1)
    if not parents or any(not 0 < parent < timeline_of(name) for parent in parents):
        raise ForeignWalError(f"{name} is not a PostgreSQL timeline history file",
                              "archive only the files PostgreSQL hands to archive_command (%p)")
    return parents


class WalChain:
    """Which cluster a store archives, and the timelines of its history: ``wal/timelines.json``, signed.

    Built from the store's base backups (their system identifier and timelines) or, in a store that has none yet,
    from the first WAL file archived; it grows by a timeline only when a base backup was taken on it (after a
    promotion or an in-place point-in-time restore: the base backup proves the source moved there). Read once per
    push; written when it grows.
    """

    def __init__(self, store: Store, key: MasterKey) -> None:
        self.store, self.key = store, key
        self.system_identifier: str | None = None
        self.timelines: set[int] = set()
        self._loaded = self._changed = False

    def _load(self, name: str) -> None:
        if self._loaded:
            return
        try:
            raw = self.store.read_bytes(CHAIN_KEY)
        except ObjectMissing:
            raw = None
        except StoreError as exc:
            raise StoreError(f"cannot archive {name}: {exc.problem}", exc.fix) from exc
        if raw is None:
            self.system_identifier, self.timelines = self._from_backups(None)
            self._changed = bool(self.timelines)
        else:
            try:
                record = json.loads(raw)
                valid = isinstance(record, dict) and self.key.verify_signature(record)
            except ValueError:
                valid = False
            if not valid or record.get("kind") != "wal-timelines":
                raise BackupIntegrityError(f"the WAL history record {CHAIN_KEY} in {self.store.describe()} does not "
                                           "verify", "it was modified: remove it, and it is rebuilt from the base "
                                           "backups on the next push")
            self.system_identifier = record.get("system_identifier")
            self.timelines = {int(t) for t in record.get("timelines", [])}
        self._loaded = True

    def _from_backups(self, system_identifier: str | None) -> tuple[str | None, set[int]]:
        """The system identifier of the newest base backup (or the one given) and the timelines its backups are on."""

        try:
            backups = physical_backups(self.store, self.key)
        except StoreError as exc:
            raise StoreError(f"cannot check the origin of WAL: {exc.problem}", exc.fix) from exc
        if not backups:
            return system_identifier, set()
        system_identifier = system_identifier or str(backups[-1].get("system_identifier"))
        return system_identifier, {int(m["timeline"]) for m in backups if m.get("timeline") is not None
                                   and str(m.get("system_identifier")) == system_identifier}

    def admit(self, name: str, path: Path) -> None:
        """Refuse (:class:`ForeignWalError`) a file of another cluster or of a timeline outside the history."""
        self._load(name)
        where = self.store.describe()
        if SEGMENT.match(name[:24]) and not name.endswith(".backup"):
            system_id = segment_system_identifier(path, name)
            if self.system_identifier is None:
                self.system_identifier, self._changed = system_id, True
            elif system_id != self.system_identifier:
                raise ForeignWalError(
                    f"WAL file {name} comes from database system {system_id}, but {where} archives system "
                    f"{self.system_identifier}", "archive each cluster into a store (or DBOPS_BACKUP_PREFIX) of its "
                    "own; a copy of another cluster must not archive here")
        parents = history_parents(path, name) if name.endswith(".history") else []
        timeline = timeline_of(name)
        if timeline not in self.timelines:
            if self.timelines and timeline not in self._from_backups(self.system_identifier)[1]:
                known = ", ".join(str(t) for t in sorted(self.timelines))
                raise ForeignWalError(
                    f"WAL file {name} is on timeline {timeline}, which is not in the history archived in {where} "
                    f"(timeline {known})", "a restored or copied cluster must not archive here: turn its archiving "
                    "off. If this server itself was promoted or restored in place, take a full base backup "
                    "(`dbops backup run --kind full`): its timeline then joins the history and this file is "
                    "archived on the next push")
            self.timelines.add(timeline)
            self._changed = True
        if not set(parents) <= self.timelines:
            self.timelines |= set(parents)
            self._changed = True

    def save(self) -> None:
        if not self._changed:
            return
        record: dict[str, Any] = {"kind": "wal-timelines", "system_identifier": self.system_identifier,
                                  "timelines": sorted(self.timelines)}
        record["signature"] = self.key.sign(record)
        self.store.write_bytes(CHAIN_KEY, json.dumps(record, sort_keys=True).encode())
        self._changed = False


def _same_content(store: Store, key: MasterKey, name: str, path: Path) -> bool:
    with open(path, "rb") as handle:
        for chunk in fetch(store, key, name):
            if handle.read(len(chunk)) != chunk:
                return False
        return handle.read(1) == b""


def push_file(store: Store, key: MasterKey, path: Path, name: str | None = None, *,
              chain: WalChain | None = None) -> bool:
    """Store one WAL file; return False when the store already has it with the same content (PostgreSQL may archive
    a file twice).

    Refused (:class:`ForeignWalError`, nothing written): a file of another cluster or of a timeline the store's
    history never had (:class:`WalChain`), and a file whose name is archived already with other content.
    """
    name = name or path.name
    _check_name(name)
    chain = chain or WalChain(store, key)
    chain.admit(name, path)
    if store.exists(wal_key(name)):
        if _same_content(store, key, name, path):
            return False
        raise ForeignWalError(f"WAL file {name} is already archived in {store.describe()} with other content",
                              "two clusters (a restored copy?) archive into this store: turn the other one's "
                              "archiving off; the archived file is kept")
    data_key = os.urandom(32)
    header = json.dumps(key.wrap(data_key, f"wal:{name}")).encode()

    def chunks() -> Iterator[bytes]:
        yield MAGIC + len(header).to_bytes(2, "big") + header
        with open(path, "rb") as handle:
            yield from encrypt(compress(read_file(handle), 3), data_key)

    store.put(wal_key(name), chunks())
    chain.save()
    return True


def _push_order(path: Path) -> tuple[int, int, str]:
    """Timeline histories first, the newest first (it names its ancestors), then the rest oldest first."""
    if path.name.endswith(".history"):
        return 0, -timeline_of(path.name), path.name
    return 1, 0, path.name


def push_spool(store: Store, key: MasterKey, spool: Path) -> list[str]:
    """Move every finished file of the spool into the store (see :func:`_push_order`); return their names.

    A refused file (:class:`ForeignWalError`) stays in the spool and does not hold the others back; the refusal is
    raised once the rest is archived. Any other failure (the store unreachable) stops at once, spool kept.
    """
    chain = WalChain(store, key)
    pushed: list[str] = []
    refused: list[ForeignWalError] = []
    for path in sorted(spool_backlog(spool), key=_push_order):
        try:
            push_file(store, key, path, chain=chain)
        except ForeignWalError as exc:
            refused.append(exc)
            continue
        path.unlink()
        pushed.append(path.name)
    if refused:
        more = f" ({len(refused) - 1} more file(s) refused)" if len(refused) > 1 else ""
        raise ForeignWalError(f"{refused[0].problem}{more}",
                              f"{refused[0].fix}. The refused files stay in {spool}; {len(pushed)} other file(s) "
                              "were archived")
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

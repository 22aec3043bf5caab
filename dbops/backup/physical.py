"""Physical base backups: ``pg_basebackup`` full or incremental, streamed as one tar through zstd and AES-256-GCM.

``pg_basebackup -D - -Ft -X fetch`` writes the whole cluster as a tar on stdout, the WAL needed for consistency and
PostgreSQL's own ``backup_manifest`` included, so every base backup restores on its own; the WAL archive
(:mod:`dbops.backup.wal`) adds point-in-time recovery after it. On PostgreSQL 17 and newer, an incremental backup
(``--incremental``) is taken against the previous backup's ``backup_manifest`` (``summarize_wal`` must be on); each
manifest names its parent, so restores rebuild the chain with ``pg_combinebackup``. PostgreSQL 15 and 16 get full
backups and WAL only.

Nothing full-size is written locally: the tar stream is read once, its ``backup_manifest`` and ``backup_label``
captured on the way (:class:`TarWatcher`), and stored; the ``backup_manifest`` is also stored on its own, encrypted,
for the next incremental.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.manifest import (
    KeySource,
    discard,
    list_backups,
    load_manifest,
    new_backup_id,
    now_iso,
    object_key,
    read_store,
    save_manifest,
)
from dbops.backup.progress import ByteMeter, Progress, mib, report
from dbops.backup.store import Store
from dbops.backup.stream import CHUNK, ProcessOutput, compress, decompress, decrypt, encrypt
from dbops.errors import ConfigError
from dbops.pg.binaries import client_bin_dir, find_program
from dbops.pg.connect import connection, split_password
from dbops.programs import start_process, stop_process

BASE_OBJECT = "base.tar.zst.enc"
MANIFEST_OBJECT = "backup_manifest.zst.enc"
PHYSICAL_KINDS = ("full", "incremental")
ZSTD_LEVEL = 3
BLOCK = 512


class TarWatcher:
    """Passes a tar stream through unchanged while keeping the content of a few small members (by name)."""

    def __init__(self, wanted: Iterable[str], limit: int = 256 << 20) -> None:
        self.wanted = set(wanted)
        self.limit = limit
        self.found: dict[str, bytes] = {}
        self.members = 0
        self._buf = bytearray()
        self._skip = 0  # bytes of member data (and padding) still to pass
        self._keep: bytearray | None = None
        self._keep_left = 0
        self._name = ""

    def watch(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._feed(chunk)
            yield chunk

    def _feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._skip:
                take = min(self._skip, len(view))
                if self._keep is not None and self._keep_left:
                    part = min(take, self._keep_left)
                    self._keep += view[:part]
                    self._keep_left -= part
                    if not self._keep_left:
                        self.found[self._name] = bytes(self._keep)
                        self._keep = None
                self._skip -= take
                view = view[take:]
                continue
            need = BLOCK - len(self._buf)
            self._buf += view[:need]
            view = view[need:]
            if len(self._buf) == BLOCK:
                self._header(bytes(self._buf))
                self._buf.clear()

    def _header(self, block: bytes) -> None:
        if not block.strip(b"\0"):
            return  # end-of-archive blocks
        name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix:
            name = f"{prefix}/{name}"
        size_field = block[124:136]
        if size_field[0] & 0x80:  # base-256 for very large members
            size = int.from_bytes(size_field[1:], "big")
        else:
            size = int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
        self.members += 1
        self._skip = (size + BLOCK - 1) // BLOCK * BLOCK
        name = name.removeprefix("./")
        if name in self.wanted and size <= self.limit:
            self._name, self._keep, self._keep_left = name, bytearray(), size
            if size == 0:
                self.found[name] = b""
                self._keep = None


def physical_backups(store: Store, key: KeySource) -> list[dict[str, Any]]:
    """The base backups whose manifest verifies, oldest first."""
    return [m for m in list_backups(store, key) if m.get("kind") in PHYSICAL_KINDS]


def chain(store: Store, key: MasterKey, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The backups a physical backup needs, full first, each manifest verified; a loop or a parent of another
    cluster is refused."""
    out = [manifest]
    while out[0].get("parent"):
        parent = load_manifest(store, out[0]["parent"], key)
        if parent["id"] in {m["id"] for m in out}:
            raise BackupIntegrityError(f"the chain of backup {manifest['id']} loops at {parent['id']}",
                                       "the manifests are not ones dbops wrote")
        if parent.get("system_identifier") != manifest.get("system_identifier"):
            raise BackupIntegrityError(f"backup {out[0]['id']}'s parent {parent['id']} is of another cluster",
                                       "the manifests are not ones dbops wrote")
        out.insert(0, parent)
    return out


def _server_facts(url: str) -> dict[str, Any]:
    with connection(url) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
            "(SELECT system_identifier::text FROM pg_control_system()), "
            "CASE WHEN current_setting('server_version_num')::int >= 170000 "
            "THEN current_setting('summarize_wal') ELSE 'off' END, current_setting('archive_mode')"
        ).fetchone()
    version, version_num, system_id, summarize, archive_mode = row  # type: ignore[misc]
    return {"server_version": version, "version_num": version_num, "system_identifier": system_id,
            "summarize_wal": summarize, "archive_mode": archive_mode}


def _parent_for_incremental(store: Store, key: MasterKey, facts: dict[str, Any]) -> dict[str, Any]:
    """The newest verified base backup of the same cluster: pg_basebackup builds on its backup_manifest."""
    if facts["version_num"] < 170000:
        raise ConfigError(f"incremental backups need PostgreSQL 17 or newer; this server is {facts['server_version']}",
                          "take a full base backup (kind=full); WAL archiving covers the time between")
    if facts["summarize_wal"] != "on":
        raise ConfigError("incremental backups need summarize_wal = on on the server",
                          "set summarize_wal = on (ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf())")
    listing = read_store(store, key)
    same = [m for m in listing.backups
            if m.get("kind") in PHYSICAL_KINDS and m.get("system_identifier") == facts["system_identifier"]]
    if not same:
        ignored = f" that verifies ({listing.ignored[0]})" if listing.ignored else ""
        raise ConfigError(f"there is no earlier base backup of this server{ignored} to build an incremental on",
                          "take a full base backup first (kind=full)")
    return same[-1]


def _label_fields(label: bytes) -> dict[str, str]:
    fields = {}
    for line in label.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition(": ")
        fields[name.strip()] = value.strip()
    return fields


def base_backup(
    url: str,
    store: Store,
    key: MasterKey,
    *,
    incremental: bool = False,
    bin_dir: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Take a full (or incremental) base backup of ``url``'s cluster into ``store``; return its stored manifest.

    ``progress`` gets one line per phase as it happens: pg_basebackup started, the MiB stored (at most every few
    seconds), pg_basebackup finished (size, tar members), the manifest stored.
    """
    facts = _server_facts(url)
    bin_dir = client_bin_dir(bin_dir, facts["version_num"] // 10000)
    parent = _parent_for_incremental(store, key, facts) if incremental else None
    kind = "incremental" if incremental else "full"
    backup_id = new_backup_id(kind)
    started = time.monotonic()
    started_at = now_iso()
    data_key = os.urandom(32)
    bare_url, password = split_password(url)
    watcher = TarWatcher(["backup_manifest", "backup_label"])
    stored: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dbops-basebackup-") as tmp:
        args = [find_program("pg_basebackup", bin_dir), "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast",
                "--no-password", f"--label=dbops {backup_id}", f"--dbname={bare_url}"]
        if parent is not None:
            previous = Path(tmp) / "parent_backup_manifest"
            previous.write_bytes(read_backup_manifest(store, key, parent))
            args.append(f"--incremental={previous}")
        proc = start_process(args, password=password, stdout=subprocess.PIPE)
        on = f" on {parent['id']}" if parent else ""
        report(progress, f"pg_basebackup started: {kind} base backup{on} of PostgreSQL {facts['server_version']} "
                         f"into {store.describe()} (backup {backup_id}, checkpoint fast)")
        output = ProcessOutput(proc, "pg_basebackup", timeout=600)
        meter = ByteMeter(progress, "pg_basebackup")
        try:
            base = store.put(object_key(backup_id, BASE_OBJECT),
                             encrypt(compress(watcher.watch(output), ZSTD_LEVEL), data_key), meter.for_object())
            stored.append(BASE_OBJECT)
            report(progress, f"pg_basebackup finished: {mib(output.bytes)} of tar ({watcher.members} members), "
                             f"{mib(base.size)} stored, {time.monotonic() - started:.1f} s")
            pg_manifest = watcher.found.get("backup_manifest")
            if pg_manifest is None:
                raise ConfigError("pg_basebackup wrote no backup_manifest", "use pg_basebackup 13 or newer")
            side = store.put(object_key(backup_id, MANIFEST_OBJECT),
                             encrypt(compress([pg_manifest], ZSTD_LEVEL), data_key))
            stored.append(MANIFEST_OBJECT)
        except BaseException:
            stop_process(proc)
            for name in (BASE_OBJECT, MANIFEST_OBJECT):
                discard(store, object_key(backup_id, name))
            raise

    label = _label_fields(watcher.found.get("backup_label", b""))
    ranges = json.loads(pg_manifest).get("WAL-Ranges", [])
    start_wal = re.search(r"file ([0-9A-F]{24})", label.get("START WAL LOCATION", ""))
    manifest: dict[str, Any] = {  # "format" is set by save_manifest, the one writer
        "id": backup_id,
        "kind": kind,
        "method": "physical",
        "parent": parent["id"] if parent else None,
        "system_identifier": facts["system_identifier"],
        "server_version": facts["server_version"],
        "timeline": int(label.get("START TIMELINE", ranges[0]["Timeline"] if ranges else 1)),
        "start_lsn": label.get("START WAL LOCATION", "").split(" ")[0] or (ranges[0]["Start-LSN"] if ranges else None),
        "end_lsn": ranges[-1]["End-LSN"] if ranges else None,
        "start_wal_file": start_wal.group(1) if start_wal else None,
        "incremental_from_lsn": label.get("INCREMENTAL FROM LSN"),
        "started_at": started_at,
        "finished_at": now_iso(),
        "duration_seconds": round(time.monotonic() - started, 3),
        "tool": "pg_basebackup -Ft -X fetch" + (" --incremental" if parent else ""),
        "archive_mode": facts["archive_mode"],
        "objects": [
            {"name": BASE_OBJECT, "size": base.size, "sha256": base.sha256, "raw_size": output.bytes},
            {"name": MANIFEST_OBJECT, "size": side.size, "sha256": side.sha256, "raw_size": len(pg_manifest)},
        ],
        "tar_members": watcher.members,
        "raw_bytes": output.bytes,
        "stored_bytes": base.size + side.size,
        "compression": {"algorithm": "zstd", "level": ZSTD_LEVEL},
        "encryption": {"algorithm": "AES-256-GCM", "chunk_bytes": CHUNK, **key.wrap(data_key, backup_id)},
    }
    try:
        save_manifest(store, key, manifest)
    except BaseException:
        for name in stored:
            discard(store, object_key(backup_id, name))
        raise
    report(progress, f"manifest signed and stored: backup {backup_id} ({len(manifest['objects'])} objects, "
                     f"{manifest['start_lsn']} to {manifest['end_lsn']}) complete in {manifest['duration_seconds']} s")
    return manifest


def read_backup_manifest(store: Store, key: MasterKey, manifest: dict[str, Any]) -> bytes:
    """PostgreSQL's own backup_manifest of a stored base backup (what ``--incremental`` needs)."""
    data_key = key.unwrap(manifest["encryption"], manifest["id"])
    name = f"object {MANIFEST_OBJECT} of backup {manifest['id']}"
    return b"".join(decompress(decrypt(store.get(object_key(manifest["id"], MANIFEST_OBJECT)), data_key, name), name))

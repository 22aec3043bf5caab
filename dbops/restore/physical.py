"""Restoring physical backups: a data directory rebuilt from a base backup chain, then WAL replay to a point in time.

Each backup of the chain (full first) is checked against its sha256, decrypted, decompressed and unpacked into a
working directory; a chain is merged with ``pg_combinebackup``; the result is checked with ``pg_verifybackup`` (every
file against PostgreSQL's own backup_manifest, and the WAL it needs). For point-in-time recovery the archived WAL is
staged next to the data directory and ``recovery.signal`` plus a ``restore_command`` that only copies are written,
so the restored server needs nothing from dbops.

The drill (:func:`physical_drill`) does all that in a scratch cluster on a free loopback port, replays WAL to a target
time, proves it by canary rows (one committed before the target must be there, one after must not), runs amcheck,
measures every phase and removes the scratch cluster, also on failure.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from dbops.backup import wal
from dbops.backup.keys import MasterKey
from dbops.backup.manifest import latest, load_manifest, object_key, verify_objects
from dbops.backup.physical import BASE_OBJECT, PHYSICAL_KINDS, chain
from dbops.backup.store import Store
from dbops.backup.stream import ChunkReader, decompress, decrypt
from dbops.errors import DbopsError
from dbops.pg.commands import client_bin_dir, find_program, run_command
from dbops.pg.connect import connection, with_database
from dbops.restore import DrillResult

# Settings of a restored scratch cluster: never archive into the production archive, modest memory.
SCRATCH_SETTINGS = {"archive_mode": "off", "shared_buffers": "'256MB'",
                    "log_connections": "off", "log_disconnections": "off"}


class PhysicalRestoreError(DbopsError):
    """A physical restore cannot proceed or did not recover."""


def _unpack(store: Store, key: MasterKey, manifest: dict[str, Any], dest: Path) -> None:
    data_key = key.unwrap(manifest["encryption"], manifest["id"])
    name = f"object {BASE_OBJECT} of backup {manifest['id']}"
    plain = decompress(decrypt(store.get(object_key(manifest["id"], BASE_OBJECT)), data_key, name), name)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tarfile.open(fileobj=ChunkReader(plain), mode="r|") as archive:  # type: ignore[call-overload]
        archive.extractall(dest, filter="data")
    dest.chmod(0o700)


def _major(manifest: dict[str, Any]) -> int:
    return int(str(manifest["server_version"]).split(".")[0])


def _check_empty(target: Path, force: bool) -> None:
    if target.exists() and any(target.iterdir()):
        if not force:
            raise PhysicalRestoreError(f"target directory {target} is not empty",
                                       "restore into a new directory, or pass --force to replace its content")
        shutil.rmtree(target)


def restore_physical(store: Store, key: MasterKey, manifest: dict[str, Any], target: Path, *,
                     bin_dir: Path | None = None, force: bool = False) -> dict[str, float]:
    """Rebuild ``manifest``'s data directory (its whole chain) in ``target``, checked by pg_verifybackup."""
    target = Path(target).absolute()
    _check_empty(target, force)
    bin_dir = client_bin_dir(bin_dir, _major(manifest))
    phases: dict[str, float] = {}
    backups = chain(store, key, manifest)
    began = time.monotonic()
    for item in backups:
        verify_objects(store, item)
    phases["download_verify"] = round(time.monotonic() - began, 3)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="dbops-restore-", dir=target.parent))
    try:
        if len(backups) == 1:
            _unpack(store, key, backups[0], target)
            phases["decrypt_unpack"] = round(time.monotonic() - began, 3)
        else:
            parts = []
            for item in backups:
                part = work / item["id"]
                _unpack(store, key, item, part)
                parts.append(part)
            phases["decrypt_unpack"] = round(time.monotonic() - began, 3)
            began = time.monotonic()
            run_command([find_program("pg_combinebackup", bin_dir), *parts, "-o", target], timeout=3600,
                        what="pg_combinebackup")
            # pg_combinebackup rebuilds the data files; the WAL that makes the last backup consistent comes with it.
            last_wal = parts[-1] / "pg_wal"
            for segment in last_wal.iterdir() if last_wal.is_dir() else []:
                if segment.is_file() and not (target / "pg_wal" / segment.name).exists():
                    shutil.copy2(segment, target / "pg_wal" / segment.name)
            phases["combine"] = round(time.monotonic() - began, 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    began = time.monotonic()
    run_command([find_program("pg_verifybackup", bin_dir), target], timeout=3600, what="pg_verifybackup")
    phases["pg_verifybackup"] = round(time.monotonic() - began, 3)
    return phases


def prepare_recovery(store: Store, key: MasterKey, manifest: dict[str, Any], target: Path,
                     pitr: datetime | str | None) -> tuple[dict[str, str], Path | None, int]:
    """Stage archived WAL beside ``target`` and return the recovery settings for a point-in-time restore.

    Returns (settings, staged WAL directory or None, number of WAL files staged). Without archived WAL after the
    backup, the restore stops at the backup's end (its own WAL, taken with -X fetch).
    """
    staged_dir = target.parent / f"{target.name}.wal"
    first = chain(store, key, manifest)[-1].get("start_wal_file")
    names = wal.stage(store, key, staged_dir, first) if first else []
    if not names:
        shutil.rmtree(staged_dir, ignore_errors=True)
        if pitr is not None:
            raise PhysicalRestoreError(f"no archived WAL after backup {manifest['id']}: a point-in-time restore is "
                                       "not possible", "turn WAL archiving on (dbops wal push) and take a new backup")
        return {}, None, 0
    (target / "recovery.signal").write_text("")
    settings = {"restore_command": f"'{wal.restore_command(staged_dir)}'", "recovery_target_action": "'promote'"}
    if pitr is not None:
        when = pitr.isoformat() if isinstance(pitr, datetime) else str(pitr)
        settings["recovery_target_time"] = f"'{when}'"
    else:
        settings["recovery_target_timeline"] = "'latest'"
    return settings, staged_dir, len(names)


def write_recovery_conf(target: Path, settings: dict[str, str]) -> None:
    """For `dbops restore --pitr`: the recovery settings in postgresql.auto.conf, read after every other file."""
    with open(target / "postgresql.auto.conf", "a") as conf:
        conf.write("# written by dbops restore: point-in-time recovery\n")
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


# ---- canaries -------------------------------------------------------------------------------------------------


def plant_canaries(url: str, *, gap_seconds: float = 0.2) -> dict[str, str]:
    """Commit canary row ``before``, take the target time, commit ``after``; switch WAL so both reach the archive.

    The canary table lives in the ``postgres`` maintenance database, outside the application's schema.
    """
    tag = uuid.uuid4().hex[:10]
    with connection(with_database(url, "postgres")) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.dbops_pitr_canary "
                     "(id text PRIMARY KEY, committed_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        conn.execute("INSERT INTO public.dbops_pitr_canary (id) VALUES (%s)", [f"before-{tag}"])
        time.sleep(gap_seconds)
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(gap_seconds)
        conn.execute("INSERT INTO public.dbops_pitr_canary (id) VALUES (%s)", [f"after-{tag}"])
        last = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT pg_switch_wal()")
    return {"before": f"before-{tag}", "after": f"after-{tag}", "target_time": target.isoformat(), "last_wal": last}


def wait_archived(url: str, wal_file: str, timeout: float = 120) -> None:
    """Wait until the server reports ``wal_file`` archived (pg_stat_archiver)."""
    deadline = time.monotonic() + timeout
    with connection(url) as conn:
        while True:
            row = conn.execute("SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
                               ).fetchone()
            archived = row[0] or ""  # type: ignore[index]
            if wal.SEGMENT.match(archived[:24]) and wal.segment_position(archived) >= wal.segment_position(wal_file):
                return
            if time.monotonic() > deadline:
                raise PhysicalRestoreError(
                    f"WAL file {wal_file} was not archived within {timeout:.0f} s (last archived: {archived or 'none'},"
                    f" failures: {row[1]})", "check archive_command in the server log")  # type: ignore[index]
            time.sleep(0.2)


# ---- drill ----------------------------------------------------------------------------------------------------


@dataclass
class PhysicalDrillResult(DrillResult):
    chain: list[str] = field(default_factory=list)
    target_time: str | None = None
    wal_files_replayed: int = 0
    notes: list[str] = field(default_factory=list)
    scratch_server: Any = None  # the running scratch cluster when kept; remove it with remove_scratch()


def _archive_mode(url: str) -> str:
    with connection(url) as conn:
        return str(conn.execute("SELECT current_setting('archive_mode')").fetchone()[0])  # type: ignore[index]


def _scratch_url(source_url: str, port: int) -> str:
    parts = urlsplit(source_url)
    user = parts.username or "postgres"
    auth = quote(user, safe="") + (f":{quote(parts.password or '', safe='')}" if parts.password else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{port}"))


def choose_physical(store: Store, key: MasterKey, backup_id: str | None) -> dict[str, Any]:
    if backup_id:
        return load_manifest(store, backup_id, key)
    newest = latest(store, key, PHYSICAL_KINDS)
    if newest is None:
        raise PhysicalRestoreError(f"there is no complete base backup in {store.describe()}",
                                   "take one first (`dbops backup run --kind full`)")
    return newest


def physical_drill(url: str, store: Store, key: MasterKey, *, backup_id: str | None = None,
                   bin_dir: Path | None = None, pitr: bool = True, spool: Path | None = None,
                   scratch_root: Path | None = None, keep: bool = False) -> PhysicalDrillResult:
    """Restore a base backup (chain) into a scratch cluster, replay archived WAL to a target time, and prove it.

    With ``pitr`` the drill first plants canary rows on ``url``'s server around a target time and waits until they
    are archived (pushing ``spool`` into the store when the server archives into a spool).
    """
    from dbops.pg.server import EmbeddedServer, free_port
    from dbops.restore import verify_restored

    manifest = choose_physical(store, key, backup_id)
    bin_dir = client_bin_dir(bin_dir, _major(manifest))
    result = PhysicalDrillResult(manifest["id"], chain=[m["id"] for m in chain(store, key, manifest)])
    canaries = None
    if pitr and _archive_mode(url) == "off":
        result.notes.append("WAL archiving is off on the server: restored to the end of the backup, no PITR")
        pitr = False
    if pitr:
        canaries = plant_canaries(url)
        wait_archived(url, canaries["last_wal"])
        if spool is not None:
            wal.push_spool(store, key, spool)
        result.target_time = canaries["target_time"]
    home = Path(tempfile.mkdtemp(prefix="dbops-drill-", dir=scratch_root))
    server = EmbeddedServer(home, free_port(), bin_dir, dict(SCRATCH_SETTINGS))
    try:
        result.phases.update(restore_physical(store, key, manifest, server.data_dir, bin_dir=bin_dir))
        began = time.monotonic()
        settings, _, staged = prepare_recovery(store, key, manifest, server.data_dir,
                                               canaries["target_time"] if canaries else None)
        result.wal_files_replayed = staged
        result.phases["stage_wal"] = round(time.monotonic() - began, 3)
        began = time.monotonic()
        server.extra_settings.update(settings)
        server.adopt_data_dir()
        server.start(timeout=3600)
        scratch = _scratch_url(url, server.port)
        _wait_promoted(scratch, server)
        result.phases["replay"] = round(time.monotonic() - began, 3)
        began = time.monotonic()
        if canaries:
            result.problems += _check_canaries(scratch, canaries)
        figures, result.indexes_checked = verify_restored(scratch)
        result.tables_checked = len(figures)
        result.rows_checked = sum(t["rows"] for t in figures.values())
        result.phases["verify"] = round(time.monotonic() - began, 3)
        if keep:
            result.restored_url, result.scratch_server = scratch, server
            return result
    except BaseException:
        keep = False
        raise
    finally:
        if not keep:
            remove_scratch(server)
    return result


def remove_scratch(server: Any) -> None:
    with suppress(Exception):
        server.stop()
    shutil.rmtree(server.home, ignore_errors=True)


def _wait_promoted(url: str, server: Any, timeout: float = 3600) -> None:
    """Wait until the restored cluster has finished recovery and promoted; fail fast if it stopped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connection(url) as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    return
        except DbopsError:
            if not server.is_running():
                raise PhysicalRestoreError(f"the restored cluster stopped during recovery: {server.log_tail()}",
                                           f"see {server.log_file}") from None
        if time.monotonic() > deadline:
            raise PhysicalRestoreError(f"the restored cluster was still recovering after {timeout:.0f} s",
                                       f"see {server.log_file}")
        time.sleep(0.2)


def _check_canaries(url: str, canaries: dict[str, str]) -> list[str]:
    with connection(with_database(url, "postgres")) as conn:
        present = {r[0] for r in conn.execute("SELECT id FROM public.dbops_pitr_canary WHERE id = ANY(%s)",
                                              [[canaries["before"], canaries["after"]]]).fetchall()}
    problems = []
    if canaries["before"] not in present:
        problems.append(f"canary {canaries['before']} committed before {canaries['target_time']} is missing")
    if canaries["after"] in present:
        problems.append(f"canary {canaries['after']} committed after {canaries['target_time']} is present")
    return problems

"""Restoring physical backups: a data directory rebuilt from a base backup chain, then WAL replay to a point in time.

Nothing touches the target before the backup is proven: every object of every backup of the chain (full first) is
checked against its sha256 and decrypted through (AES-GCM authentication), output discarded; only then is each one
decrypted, decompressed and unpacked into a staging directory beside the target, a chain merged with
``pg_combinebackup``, the result checked with ``pg_verifybackup`` (every file against PostgreSQL's own
backup_manifest, and the WAL it needs), and moved into the target (whose old content goes only then, with
``--force``). A directory a live server runs in is never a target. For point-in-time recovery the archived WAL is
staged (so authenticated) next to the data directory and ``recovery.signal`` plus a ``restore_command`` that only
copies are written, so the restored server needs nothing from dbops.

A restored cluster keeps to itself (:func:`restored_settings`, last in postgresql.auto.conf so they beat the
source's configuration and ALTER SYSTEM): its own port, loopback only, WAL archiving off (or into a spool of its
own), no standby settings of the source. `dbops restore` (:func:`restore_cluster`) also gives it to the OS user that
will run it and prints the pg_ctl commands that start and stop it.
"""
from __future__ import annotations

import os
import shlex
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from dbops.backup import wal
from dbops.backup.keys import MasterKey
from dbops.backup.manifest import object_key
from dbops.backup.physical import BASE_OBJECT, chain
from dbops.backup.progress import Progress, report
from dbops.backup.store import Store
from dbops.backup.stream import ChunkReader, decompress, decrypt
from dbops.errors import DbopsError
from dbops.pg.archive import archive_command, restore_command
from dbops.pg.binaries import client_bin_dir, find_program, run_as_user
from dbops.pg.server import check_reachable, free_port, hand_over_tree, port_is_free
from dbops.programs import run_command
from dbops.restore.verify import verify_backup


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


def manifest_major(manifest: dict[str, Any]) -> int:
    """The PostgreSQL major version a base backup was taken from (its client programs must match)."""
    return int(str(manifest["server_version"]).split(".")[0])


def live_postmaster(data_dir: Path) -> int | None:
    """The pid ``data_dir/postmaster.pid`` names when that process is alive: a server runs there (or may: like
    PostgreSQL itself, any live process with that pid counts)."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first)
    except (FileNotFoundError, NotADirectoryError, IndexError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return pid


def check_target(target: Path, force: bool) -> None:
    """Refuse a data directory a server runs in, whatever ``force`` says, and a non-empty one without ``force``.
    Nothing is changed here: the old content is only removed once the restored copy is proven (:func:`_replace`)."""
    try:
        pid = live_postmaster(target)
        if pid is not None:
            raise PhysicalRestoreError(
                f"{target} is the data directory of a running server (postmaster.pid names live process {pid}): "
                "a restore never replaces it, --force or not",
                f"stop that server first (pg_ctl -D {target} stop), or restore into another directory; if no "
                "server runs there, remove its stale postmaster.pid")
        if target.exists() and not target.is_dir():
            raise PhysicalRestoreError(f"target {target} is not a directory", "give a directory to restore into")
        busy = target.exists() and any(target.iterdir())
    except PermissionError as exc:
        raise PhysicalRestoreError(f"cannot read the target directory {target}: {exc.strerror}",
                                   "restore as a user who may read and replace it") from exc
    if busy and not force:
        raise PhysicalRestoreError(f"target directory {target} is not empty",
                                   "restore into a new directory, or pass --force to replace its content")


def _build(store: Store, key: MasterKey, backups: list[dict[str, Any]], out: Path, work: Path,
           bin_dir: Path | None, phases: dict[str, float], progress: Progress | None = None) -> None:
    """Unpack a backup (or combine a chain) into ``out`` and check it with pg_verifybackup."""
    began = time.monotonic()
    report(progress, f"unpacking {' + '.join(m['id'] for m in backups)} into {out}")
    if len(backups) == 1:
        _unpack(store, key, backups[0], out)
        phases["decrypt_unpack"] = round(time.monotonic() - began, 3)
    else:
        parts = []
        for item in backups:
            part = work / item["id"]
            _unpack(store, key, item, part)
            parts.append(part)
        phases["decrypt_unpack"] = round(time.monotonic() - began, 3)
        report(progress, f"unpacked in {phases['decrypt_unpack']:.1f} s; pg_combinebackup of {len(parts)} backups")
        began = time.monotonic()
        run_command([find_program("pg_combinebackup", bin_dir), *parts, "-o", out], timeout=3600,
                    what="pg_combinebackup")
        # pg_combinebackup rebuilds the data files; the WAL that makes the last backup consistent comes with it.
        last_wal = parts[-1] / "pg_wal"
        for segment in last_wal.iterdir() if last_wal.is_dir() else []:
            if segment.is_file() and not (out / "pg_wal" / segment.name).exists():
                shutil.copy2(segment, out / "pg_wal" / segment.name)
        for part in parts:
            shutil.rmtree(part, ignore_errors=True)
        phases["combine"] = round(time.monotonic() - began, 3)
    done = (f"combined in {phases['combine']:.1f} s" if "combine" in phases
            else f"unpacked in {phases['decrypt_unpack']:.1f} s")
    report(progress, f"{done}; pg_verifybackup started")
    began = time.monotonic()
    run_command([find_program("pg_verifybackup", bin_dir), out], timeout=3600, what="pg_verifybackup")
    phases["pg_verifybackup"] = round(time.monotonic() - began, 3)
    report(progress, f"pg_verifybackup passed in {phases['pg_verifybackup']:.1f} s")


def _replace(target: Path, built: Path, force: bool) -> None:
    """Put the proven data directory ``built`` in ``target``'s place (its old content goes only now)."""
    check_target(target, force)  # again: a server may have been started there while we restored
    if not target.exists():
        built.rename(target)
        return
    for child in list(target.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for child in list(built.iterdir()):
        shutil.move(str(child), str(target / child.name))
    owner, now = built.stat(), target.stat()
    if (owner.st_uid, owner.st_gid) != (now.st_uid, now.st_gid):
        os.chown(target, owner.st_uid, owner.st_gid)
    target.chmod(0o700)


def restore_physical(store: Store, key: MasterKey, manifest: dict[str, Any], target: Path, *,
                     bin_dir: Path | None = None, force: bool = False,
                     finish: Callable[[Path], None] | None = None,
                     progress: Progress | None = None) -> dict[str, float]:
    """Rebuild ``manifest``'s data directory (its whole chain) in ``target``; return the phase timings.

    Nothing touches ``target`` before the restore is proven: every object of every backup of the chain is verified
    first (sha256 and AES-GCM authentication, :func:`~dbops.restore.verify.verify_backup`), the cluster is rebuilt in a
    staging directory beside ``target`` and checked by pg_verifybackup, ``finish`` (recovery settings, ownership)
    runs on it; only then does ``target``'s old content go (``force``) and the rebuilt directory move in. Any failure
    before leaves ``target`` as it was. A directory a live server runs in is refused, ``force`` or not.
    """
    target = Path(target).absolute()
    check_target(target, force)
    bin_dir = client_bin_dir(bin_dir, manifest_major(manifest))
    phases: dict[str, float] = {}
    backups = chain(store, key, manifest)
    began = time.monotonic()
    report(progress, f"verifying {sum(len(m['objects']) for m in backups)} object(s) of "
                     f"{' + '.join(m['id'] for m in backups)} (sha256, decryption)")
    for item in backups:
        verify_backup(store, key, item)
    phases["download_verify"] = round(time.monotonic() - began, 3)
    report(progress, f"objects verified in {phases['download_verify']:.1f} s")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.dbops-restore-", dir=target.parent))
    try:
        built = staging / "pgdata"
        _build(store, key, backups, built, staging, bin_dir, phases, progress)
        if finish is not None:
            finish(built)
        _replace(target, built, force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return phases


def prepare_recovery(store: Store, key: MasterKey, manifest: dict[str, Any], target: Path,
                     pitr: datetime | str | None, *, wal_dir: Path | None = None,
                     serve_from: Path | None = None) -> tuple[dict[str, str], Path | None, int]:
    """Stage archived WAL (in ``wal_dir``, default beside ``target``) and return the recovery settings.

    Every staged file is decrypted, so authenticated, here. ``serve_from`` is where the restore_command will find
    the staged files when the server starts (default ``wal_dir``: a caller that moves them there later says so).
    Returns (settings, staged WAL directory or None, number of WAL files staged). Without archived WAL after the
    backup, the restore stops at the backup's end (its own WAL, taken with -X fetch).
    """
    staged_dir = wal_dir or target.parent / f"{target.name}.wal"
    first = chain(store, key, manifest)[-1].get("start_wal_file")
    names = wal.stage(store, key, staged_dir, first) if first else []
    if not names:
        shutil.rmtree(staged_dir, ignore_errors=True)
        if pitr is not None:
            raise PhysicalRestoreError(f"no archived WAL after backup {manifest['id']}: a point-in-time restore is "
                                       "not possible", "turn WAL archiving on (dbops wal push) and take a new backup")
        return {}, None, 0
    (target / "recovery.signal").write_text("")
    settings = {"restore_command": _quote(restore_command(serve_from or staged_dir)),
                "recovery_target_action": "'promote'"}
    if pitr is not None:
        when = pitr.isoformat() if isinstance(pitr, datetime) else str(pitr)
        settings["recovery_target_time"] = _quote(when)
    else:
        settings["recovery_target_timeline"] = "'latest'"
    return settings, staged_dir, len(names)


def _quote(value: str) -> str:
    """A string setting for a PostgreSQL configuration file."""
    return "'" + value.replace("'", "''") + "'"


def restored_settings(port: int, *, socket_dir: Path | str = "/tmp", archive_to: Path | None = None) -> dict[str, str]:
    """The settings that keep a restored cluster to itself, whatever its source's configuration said: its own port,
    loopback only, no WAL archiving (or into ``archive_to``, a spool of its own), no standby or synchronous-replica
    settings of the source."""
    settings = {"port": str(port), "listen_addresses": "'127.0.0.1'",
                "unix_socket_directories": _quote(str(socket_dir)), "archive_mode": "off",
                "primary_conninfo": "''", "synchronous_standby_names": "''"}
    if archive_to is not None:
        settings.update(archive_mode="on", archive_library="''",
                        archive_command=_quote(archive_command(archive_to)))
    return settings


def write_settings(data_dir: Path, settings: dict[str, str], why: str) -> None:
    """Append ``settings`` to postgresql.auto.conf: PostgreSQL reads it after every other configuration file, and the
    last line of a setting wins, so these override the source's postgresql.conf, its includes and its ALTER SYSTEM."""
    with open(data_dir / "postgresql.auto.conf", "a") as conf:
        conf.write(f"# {why}\n")
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


@dataclass
class RestoredCluster:
    """What `dbops restore --target DIR` made, and how to run it (the commands work as printed)."""

    data_dir: Path
    port: int
    phases: dict[str, float]
    wal_dir: Path | None
    wal_files: int
    log_file: Path
    start_command: str
    stop_command: str
    archive_to: Path | None = None


def pg_ctl_command(bin_dir: Path | None, data_dir: Path, action: str, log_file: Path | None = None) -> str:
    """A shell command that runs ``pg_ctl start|stop`` on ``data_dir`` as the OS user the cluster belongs to."""
    argv = [str(find_program("pg_ctl", bin_dir)), "-D", str(data_dir)]
    argv += ["-l", str(log_file), "-w", "start"] if action == "start" else ["-m", "fast", "-w", "stop"]
    user = run_as_user()
    if user:
        runuser = shutil.which("runuser")
        argv = [runuser, "-u", user, "--", *argv] if runuser else ["su", "-s", "/bin/sh", user, "-c", shlex.join(argv)]
    return shlex.join(argv)


def restore_cluster(store: Store, key: MasterKey, manifest: dict[str, Any], target: Path, *,
                    pitr: datetime | str | None = None, force: bool = False, bin_dir: Path | None = None,
                    port: int | None = None, archive_to: Path | None = None,
                    source_spools: tuple[Path, ...] = (), progress: Progress | None = None) -> RestoredCluster:
    """`dbops restore ID --target DIR`: a data directory that starts as it is and cannot hurt anything.

    :func:`restore_physical` (nothing touched before everything is proven); the archived WAL a point-in-time restore
    needs is staged, so authenticated, before the target is touched too, and lands in ``DIR.wal``. The restored
    cluster gets :func:`restored_settings` (archiving off unless ``archive_to``, which must not be one of
    ``source_spools``; ``port``, default a free one), a ``log`` directory, and is owned by the OS user that will run
    it; the returned commands start and stop it as printed. ``force`` replaces DIR's and DIR.wal's old content.
    ``progress`` gets a line per phase (see :func:`restore_physical`), and when the WAL is staged.
    """
    target = Path(target).absolute()
    wal_dir = target.parent / f"{target.name}.wal"
    check_target(target, force)
    if wal_dir.exists() and (not wal_dir.is_dir() or any(wal_dir.iterdir())) and not force:
        raise PhysicalRestoreError(f"{wal_dir} (where the restore stages archived WAL) is not empty",
                                   "restore into another directory, or pass --force to replace it too")
    if archive_to is not None:
        archive_to = Path(archive_to).absolute()
        if archive_to in {Path(s).absolute() for s in source_spools}:
            raise PhysicalRestoreError(f"{archive_to} is the source's WAL spool: the restored copy would archive "
                                       "into the production archive", "give the restored cluster a spool of its own")
    port = port or free_port()
    if not port_is_free(port):
        raise PhysicalRestoreError(f"port {port} on 127.0.0.1 is in use", "choose a free port with --port")
    for path in (target, *([archive_to] if archive_to else [])):
        check_reachable(path)  # the OS user that will run the cluster gets there, or nothing is done
    bin_dir = client_bin_dir(bin_dir, manifest_major(manifest))
    log_file = target / "log" / "postgresql.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    staged_wal = Path(tempfile.mkdtemp(prefix=f".{target.name}.wal.dbops-", dir=target.parent))
    staged = 0

    def finish(data_dir: Path) -> None:
        nonlocal staged
        recovery, _, staged = prepare_recovery(store, key, manifest, data_dir, pitr, wal_dir=staged_wal,
                                               serve_from=wal_dir)
        report(progress, f"{staged} archived WAL file(s) staged for recovery")
        write_settings(data_dir, {**restored_settings(port, archive_to=archive_to), **recovery},
                       "written by dbops restore: a restored copy keeps to itself (own port, loopback, no archiving "
                       "into its source's archive)" + ("; point-in-time recovery" if recovery else ""))
        (data_dir / "log").mkdir(mode=0o700, exist_ok=True)
        if archive_to is not None:
            archive_to.mkdir(parents=True, exist_ok=True, mode=0o700)
        hand_over_tree(data_dir, *([staged_wal] if staged else []), *([archive_to] if archive_to else []))

    try:
        phases = restore_physical(store, key, manifest, target, bin_dir=bin_dir, force=force, finish=finish,
                                  progress=progress)
        if staged:
            if wal_dir.is_dir() and not wal_dir.is_symlink():
                shutil.rmtree(wal_dir)
            elif wal_dir.exists() or wal_dir.is_symlink():
                wal_dir.unlink()
            staged_wal.rename(wal_dir)
    finally:
        shutil.rmtree(staged_wal, ignore_errors=True)
    return RestoredCluster(target, port, phases, wal_dir if staged else None, staged, log_file,
                           pg_ctl_command(bin_dir, target, "start", log_file), pg_ctl_command(bin_dir, target, "stop"),
                           archive_to)

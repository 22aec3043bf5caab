"""`dbops restore ID --target URL|DIR` and `dbops drill [--physical]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import unquote

from dbops.backup.keys import MasterKey
from dbops.backup.manifest import load_manifest
from dbops.backup.store import Store, store_for
from dbops.embedded import ensure_embedded
from dbops.health.targets import load_targets
from dbops.pg.connect import database_name
from dbops.redact import redact_url
from dbops.restore.drill import DrillResult, drill, physical_drill
from dbops.restore.logical import check_logical_target, restore_logical
from dbops.restore.physical import restore_cluster
from dbops.restore.verify import verify_backup
from dbops.settings import Settings
from dbops.settings.model import DAGSTER_DB_NAME


def _protected_databases(settings: Settings) -> dict[str, str]:
    """The databases a logical restore refuses unless --allow-overwrite names them (``postgres`` always is)."""
    managed = database_name(settings.database_url) if settings.database_url else settings.db_name
    dagster = database_name(settings.dagster_database_url) if settings.dagster_database_url else DAGSTER_DB_NAME
    return {unquote(dagster): "Dagster's storage database", unquote(managed): "the managed database"}


def restore_main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="dbops restore", description="Restore a backup into an empty database "
                                     "(logical) or data directory (physical), optionally to a point in time.")
    parser.add_argument("backup_id")
    parser.add_argument("--target", required=True,
                        help="logical: URL of the (empty) database; physical: the (empty) data directory to create")
    parser.add_argument("--pitr", metavar="TIMESTAMP",
                        help="physical: replay archived WAL up to this time (e.g. '2026-11-25 08:00:00+00')")
    parser.add_argument("--force", action="store_true",
                        help="restore even if the target is not empty (physical: its old content is replaced only "
                             "once the restored copy is proven; a directory a server runs in is always refused)")
    parser.add_argument("--allow-overwrite", metavar="DBNAME",
                        help="logical: restore into DBNAME although it is the managed database, Dagster's storage "
                             "database or postgres (repeat the target's database name)")
    parser.add_argument("--port", type=int, help="physical: the restored cluster's port (default: a free one)")
    parser.add_argument("--archive-to", metavar="SPOOL",
                        help="physical: the restored cluster archives its WAL into this spool of its own "
                             "(default: archiving off)")
    args = parser.parse_args(argv)
    if args.port is not None and not 1 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a TCP port (1 to 65535)")
    store, key = store_for(settings), target_key(settings)
    manifest = load_manifest(store, args.backup_id, key)
    if manifest["kind"] != "logical":
        return _restore_physical(store, key, manifest, args, settings)
    for flag, value in (("--pitr", args.pitr), ("--port", args.port), ("--archive-to", args.archive_to)):
        if value is not None:
            print(f"{flag} needs a physical base backup; logical backups restore into a database as they were taken")
            return 2
    protected = _protected_databases(settings)
    check_logical_target(args.target, force=args.force, protected=protected, allow_overwrite=args.allow_overwrite)
    _progress(f"verifying {len(manifest['objects'])} object(s) of {manifest['id']} (sha256, decryption)")
    verify_backup(store, key, manifest)  # every object, before the target is touched
    phases = restore_logical(store, key, manifest, args.target, force=args.force, bin_dir=settings.pg_bin,
                             staging_root=settings.staging_root, protected=protected,
                             allow_overwrite=args.allow_overwrite, progress=_progress)
    print(f"restored {args.backup_id} into {redact_url(args.target)}: {phases}")
    return 0


def _restore_physical(store: Store, key: MasterKey, manifest: dict, args: argparse.Namespace,
                      settings: Settings) -> int:
    if "://" in args.target:
        print(f"backup {manifest['id']} is a physical base backup: --target must be a data directory, not a URL")
        return 2
    if args.allow_overwrite is not None:
        print("--allow-overwrite is for logical restores; a physical restore replaces a directory (--force)")
        return 2
    restored = restore_cluster(store, key, manifest, Path(args.target), pitr=args.pitr, force=args.force,
                               bin_dir=settings.pg_bin, port=args.port,
                               archive_to=Path(args.archive_to) if args.archive_to else None,
                               source_spools=(settings.wal_spool,) if settings.wal_spool else (),
                               progress=_progress)
    print(f"restored {manifest['id']} into {restored.data_dir}: {restored.phases}")
    if restored.wal_dir:
        until = f"until {args.pitr}" if args.pitr else "to the end of the archive"
        print(f"{restored.wal_files} archived WAL file(s) staged in {restored.wal_dir}; on start the server replays "
              f"them {until}, then promotes.")
    archiving = (f"archives its WAL into {restored.archive_to}" if restored.archive_to else
                 "WAL archiving off (a restored copy never archives into its source's archive)")
    print(f"port {restored.port} on 127.0.0.1, {archiving}; server log {restored.log_file}")
    print(f"start it: {restored.start_command}")
    print(f"stop it:  {restored.stop_command}")
    return 0


def target_key(settings: Settings) -> MasterKey:
    """The default target's backup key."""
    return MasterKey.from_settings(settings.target().backup)


def _rto_line(result: DrillResult, limit_seconds: float) -> str:
    """The drill's RTO against the target's ``limits.rto_seconds``."""
    verdict = "met" if result.within_rto(limit_seconds) else "MISSED"
    return f"  RTO {result.rto_seconds} s, target < {limit_seconds:g} s (limits.rto_seconds): {verdict}"


def _progress(line: str) -> None:
    """A drill's phases, printed as they happen (dbops.backup.progress)."""
    print(f"  {line}", flush=True)


def drill_main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="dbops drill", description="Restore drill: the latest backup restored "
                                     "into a scratch copy, compared with the source and timed (RTO), then removed.")
    parser.add_argument("--backup", help="backup id (default: the latest)")
    parser.add_argument("--keep", action="store_true", help="keep the restored scratch database")
    parser.add_argument("--physical", action="store_true",
                        help="drill the latest base backup in a scratch cluster, with WAL replay to a target time")
    parser.add_argument("--no-pitr", action="store_true", help="physical: no canary rows, no WAL replay target")
    parser.add_argument("--allow-production", action="store_true",
                        help="logical: restore the scratch copy on the server although the target is production")
    args = parser.parse_args(argv)
    rto_limit = load_targets(settings.target().targets_file).limits.rto_seconds  # a bad file fails before the drill
    ensure_embedded(settings)
    if args.physical:
        presult = physical_drill(settings.target_url(), store_for(settings), target_key(settings),
                                 backup_id=args.backup, bin_dir=settings.pg_bin, pitr=not args.no_pitr,
                                 spool=settings.wal_spool, keep=args.keep, progress=_progress)
        print(f"physical drill of {' + '.join(presult.chain)}: RTO {presult.rto_seconds} s {presult.phases}; "
              f"{presult.wal_files_replayed} WAL file(s) replayed to {presult.target_time or 'the backup end'}; "
              f"{presult.tables_checked} tables, {presult.rows_checked} rows, {presult.indexes_checked} indexes")
        print(_rto_line(presult, rto_limit))
        if presult.restored_url:
            data_dir = presult.scratch_server.data_dir
            print(f"restored cluster kept at {redact_url(presult.restored_url)}, data in {data_dir} "
                  f"(stop it with pg_ctl -D {data_dir} stop, then remove {presult.scratch_server.home})")
        for note in presult.notes:
            print(f"  note: {note}")
        for problem in presult.problems:
            print(f"  MISMATCH {problem}")
        return 0 if presult.data_matches else 1
    result = drill(settings.target_url(), store_for(settings), target_key(settings), backup_id=args.backup,
                   keep=args.keep, bin_dir=settings.pg_bin, staging_root=settings.staging_root,
                   production=settings.target().production, allow_production=args.allow_production,
                   progress=_progress)
    print(f"drill of {result.backup_id}: RTO {result.rto_seconds} s {result.phases}; {result.tables_checked} tables,"
          f" {result.rows_checked} rows, {result.indexes_checked} indexes checked")
    print(_rto_line(result, rto_limit))
    if result.restored_url:
        print(f"restored copy kept at {redact_url(result.restored_url)}")
    for problem in result.problems:
        print(f"  MISMATCH {problem}")
    return 0 if result.data_matches else 1

"""`dbops backup run|list|verify|prune|keygen`, `dbops restore`, `dbops drill`, `dbops wal push|list|status`:
:func:`main` dispatches."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import unquote

from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.manifest import Ignored, load_manifest, read_store, verify_objects
from dbops.backup.store import Store, store_from_env
from dbops.config import Settings
from dbops.redact import redact_url


def _store(settings: Settings) -> Store:
    return store_from_env(default_root=settings.home / "backups")


def _report(ignored: list[Ignored]) -> None:
    """One line per backup whose manifest does not verify (it is left out, and prune never deletes it)."""
    for item in ignored:
        print(item, file=sys.stderr)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def backup_main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="dbops backup")
    parser.add_argument("action", choices=["run", "list", "verify", "prune", "keygen"])
    parser.add_argument("--kind", choices=["logical", "full", "incremental"], default="logical",
                        help="run: pg_dump (logical) or pg_basebackup full/incremental (physical)")
    parser.add_argument("--dry-run", action="store_true", help="prune: list what would be deleted")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="run: parallel pg_dump --format=directory with N workers (stages the dump files locally)")
    parser.add_argument("backup_id", nargs="?", help="backup to verify (default: every backup)")
    args = parser.parse_args(argv)
    if args.action == "keygen":
        print(generate_key())
        return 0
    store = _store(settings)
    if args.action == "list":
        listing = read_store(store, MasterKey.from_env)  # the key is needed once there is a manifest to verify
        _report(listing.ignored)
        for m in listing.backups:
            parent = f"  parent {m['parent']}" if m.get("parent") else ""
            print(f"{m['id']}  {m['kind']}  {m['finished_at']}  raw {_size(m['raw_bytes'])}  "
                  f"stored {_size(m['stored_bytes'])}  key {m['encryption']['key_id']}{parent}")
        return 0
    if args.action == "prune":
        from dbops.backup.retention import prune, rules_from_env

        result = prune(store, MasterKey.from_env, *rules_from_env(), dry_run=args.dry_run)
        _report(result.ignored)
        verb = "would delete" if args.dry_run else "deleted"
        for backup_id in result.ids:
            print(f"{verb} {backup_id}")
        if result.wal:
            print(f"{verb} {len(result.wal)} archived WAL file(s), {result.wal[0]} to {result.wal[-1]}")
        if result.unfinished:
            print(f"{verb} {len(result.unfinished)} unfinished upload(s) older than a day")
        print(f"kept {len(result.kept)} backup(s)")
        return 0
    key = MasterKey.from_env()
    if args.action == "verify":
        if args.backup_id:
            manifests, ignored = [load_manifest(store, args.backup_id, key)], []
        else:
            listing = read_store(store, key)
            manifests, ignored = listing.backups, listing.ignored
        _report(ignored)
        for manifest in manifests:
            verify_objects(store, manifest)
            print(f"{manifest['id']}: {len(manifest['objects'])} object(s) intact, manifest signature valid")
        return 1 if ignored else 0
    from dbops.instance import ensure_embedded

    ensure_embedded(settings)
    url = settings.target_url()
    last = {"mib": 0}

    def progress(stored: int) -> None:
        if stored >> 28 > last["mib"]:  # every 256 MiB
            last["mib"] = stored >> 28
            print(f"  {stored >> 20} MiB stored", flush=True)

    if args.kind != "logical":
        from dbops.backup.physical import base_backup
        from dbops.backup.wal import push_spool

        manifest = base_backup(url, store, key, incremental=args.kind == "incremental", bin_dir=settings.pg_bin,
                               progress=progress)
        if settings.wal_spool:
            push_spool(store, key, settings.wal_spool)
        parent = f" on {manifest['parent']}" if manifest["parent"] else ""
        print(f"{args.kind} base backup {manifest['id']}{parent} in {store.describe()}: raw "
              f"{_size(manifest['raw_bytes'])}, stored {_size(manifest['stored_bytes'])}, "
              f"{manifest['duration_seconds']} s")
        return 0
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    manifest = logical_backup(url, store, key, bin_dir=settings.pg_bin, progress=progress, jobs=args.jobs,
                              staging_root=settings.staging_root)
    print(f"backup {manifest['id']} of {redact_url(url)} in {store.describe()}: raw {_size(manifest['raw_bytes'])}, "
          f"stored {_size(manifest['stored_bytes'])}, {manifest['duration_seconds']} s")
    return 0


def _protected_databases(settings: Settings) -> dict[str, str]:
    """The databases a logical restore refuses unless --allow-overwrite names them (``postgres`` always is)."""
    from dbops.config import DAGSTER_DB_NAME
    from dbops.pg.connect import database_name

    managed = database_name(settings.database_url) if settings.database_url else settings.db_name
    dagster = database_name(settings.dagster_database_url) if settings.dagster_database_url else DAGSTER_DB_NAME
    return {unquote(dagster): "Dagster's storage database", unquote(managed): "the managed database"}


def restore_main(argv: list[str], settings: Settings) -> int:
    from dbops.restore import check_logical_target, restore_logical, verify_backup

    parser = argparse.ArgumentParser(prog="dbops restore")
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
    store, key = _store(settings), MasterKey.from_env()
    manifest = load_manifest(store, args.backup_id, key)
    if manifest["kind"] != "logical":
        return _restore_physical(store, key, manifest, args, settings)
    for flag, value in (("--pitr", args.pitr), ("--port", args.port), ("--archive-to", args.archive_to)):
        if value is not None:
            print(f"{flag} needs a physical base backup; logical backups restore into a database as they were taken")
            return 2
    protected = _protected_databases(settings)
    check_logical_target(args.target, force=args.force, protected=protected, allow_overwrite=args.allow_overwrite)
    verify_backup(store, key, manifest)  # every object, before the target is touched
    phases = restore_logical(store, key, manifest, args.target, force=args.force, bin_dir=settings.pg_bin,
                             staging_root=settings.staging_root, protected=protected,
                             allow_overwrite=args.allow_overwrite)
    print(f"restored {args.backup_id} into {redact_url(args.target)}: {phases}")
    return 0


def _restore_physical(store: Store, key: MasterKey, manifest: dict, args: argparse.Namespace,
                      settings: Settings) -> int:
    from pathlib import Path

    from dbops.restore.physical import restore_cluster

    if "://" in args.target:
        print(f"backup {manifest['id']} is a physical base backup: --target must be a data directory, not a URL")
        return 2
    if args.allow_overwrite is not None:
        print("--allow-overwrite is for logical restores; a physical restore replaces a directory (--force)")
        return 2
    restored = restore_cluster(store, key, manifest, Path(args.target), pitr=args.pitr, force=args.force,
                               bin_dir=settings.pg_bin, port=args.port,
                               archive_to=Path(args.archive_to) if args.archive_to else None,
                               source_spools=(settings.wal_spool,) if settings.wal_spool else ())
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


def drill_main(argv: list[str], settings: Settings) -> int:
    from dbops.instance import ensure_embedded
    from dbops.restore import drill

    parser = argparse.ArgumentParser(prog="dbops drill")
    parser.add_argument("--backup", help="backup id (default: the latest)")
    parser.add_argument("--keep", action="store_true", help="keep the restored scratch database")
    parser.add_argument("--physical", action="store_true",
                        help="drill the latest base backup in a scratch cluster, with WAL replay to a target time")
    parser.add_argument("--no-pitr", action="store_true", help="physical: no canary rows, no WAL replay target")
    args = parser.parse_args(argv)
    ensure_embedded(settings)
    if args.physical:
        from dbops.restore.physical import physical_drill

        presult = physical_drill(settings.target_url(), _store(settings), MasterKey.from_env(),
                                 backup_id=args.backup, bin_dir=settings.pg_bin, pitr=not args.no_pitr,
                                 spool=settings.wal_spool, keep=args.keep)
        print(f"physical drill of {' + '.join(presult.chain)}: RTO {presult.rto_seconds} s {presult.phases}; "
              f"{presult.wal_files_replayed} WAL file(s) replayed to {presult.target_time or 'the backup end'}; "
              f"{presult.tables_checked} tables, {presult.rows_checked} rows, {presult.indexes_checked} indexes")
        if presult.restored_url:
            data_dir = presult.scratch_server.data_dir
            print(f"restored cluster kept at {redact_url(presult.restored_url)}, data in {data_dir} "
                  f"(stop it with pg_ctl -D {data_dir} stop, then remove {presult.scratch_server.home})")
        for note in presult.notes:
            print(f"  note: {note}")
        for problem in presult.problems:
            print(f"  MISMATCH {problem}")
        return 0 if presult.data_matches else 1
    result = drill(settings.target_url(), _store(settings), MasterKey.from_env(), backup_id=args.backup,
                   keep=args.keep, bin_dir=settings.pg_bin, staging_root=settings.staging_root)
    print(f"drill of {result.backup_id}: RTO {result.rto_seconds} s {result.phases}; {result.tables_checked} tables,"
          f" {result.rows_checked} rows, {result.indexes_checked} indexes checked")
    if result.restored_url:
        print(f"restored copy kept at {redact_url(result.restored_url)}")
    for problem in result.problems:
        print(f"  MISMATCH {problem}")
    return 0 if result.data_matches else 1


def wal_main(argv: list[str], settings: Settings) -> int:
    """`dbops wal push PATH` (an archive_command), `dbops wal push --spool DIR`, `dbops wal list|status`."""
    from pathlib import Path

    from dbops.backup import wal

    parser = argparse.ArgumentParser(prog="dbops wal")
    parser.add_argument("action", choices=["push", "list", "status"])
    parser.add_argument("path", nargs="?", help="push: the WAL file (archive_command = 'dbops wal push %%p')")
    parser.add_argument("--spool", help="push: every finished file of this spool directory (default: the "
                                        "embedded server's, or DBOPS_WAL_SPOOL)")
    args = parser.parse_args(argv)
    store = _store(settings)
    if args.action == "list":
        for name in wal.list_wal(store):
            print(name)
        return 0
    spool = Path(args.spool) if args.spool else settings.wal_spool
    if args.action == "status":
        backlog = wal.spool_backlog(spool) if spool else []
        archived = wal.list_wal(store)
        print(f"{len(archived)} WAL file(s) in {store.describe()}, newest {archived[-1] if archived else 'none'}; "
              f"{len(backlog)} waiting in the spool {spool or '(none)'}")
        return 0
    key = MasterKey.from_env()
    if args.path:
        stored = wal.push_file(store, key, Path(args.path))
        print(f"{Path(args.path).name} {'archived' if stored else 'already archived'}")
        return 0
    if spool is None:
        print("dbops wal push: give a WAL file path or --spool DIR (no spool is configured: set DBOPS_WAL_SPOOL)")
        return 2
    pushed = wal.push_spool(store, key, spool)
    print(f"{len(pushed)} WAL file(s) moved from {spool} to {store.describe()}")
    return 0


def main(argv: list[str], settings: Settings) -> int:
    """``argv`` starts with the group: ``backup ...``, ``restore ...``, ``drill ...`` or ``wal ...``."""
    groups = {"backup": backup_main, "restore": restore_main, "drill": drill_main, "wal": wal_main}
    if not argv or argv[0] not in groups:
        print("usage: dbops {backup run|list|verify|prune|keygen, restore ID --target URL|DIR, drill, wal push|list}")
        return 2
    return groups[argv[0]](argv[1:], settings)

"""`dbops backup run|list|verify|prune|keygen`, `dbops restore`, `dbops drill`: :func:`main` dispatches."""

from __future__ import annotations

import argparse

from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.manifest import list_backups, load_manifest, verify_objects
from dbops.backup.store import Store, store_from_env
from dbops.config import Settings
from dbops.redact import redact_url


def _store(settings: Settings) -> Store:
    return store_from_env(default_root=settings.home / "backups")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def backup_main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="dbops backup")
    parser.add_argument("action", choices=["run", "list", "verify", "prune", "keygen"])
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
        for m in list_backups(store):
            print(f"{m['id']}  {m['kind']}  {m['finished_at']}  raw {_size(m['raw_bytes'])}  "
                  f"stored {_size(m['stored_bytes'])}  key {m['encryption']['key_id']}")
        return 0
    if args.action == "prune":
        from dbops.backup.retention import prune
        from dbops.backup.settings import BackupSettings

        conf = BackupSettings.from_env(home=settings.home)
        for backup_id in prune(store, conf.keep_last, conf.keep_days, dry_run=args.dry_run):
            print(f"{'would delete' if args.dry_run else 'deleted'} {backup_id}")
        return 0
    key = MasterKey.from_env()
    if args.action == "verify":
        ids = [args.backup_id] if args.backup_id else [m["id"] for m in list_backups(store)]
        for backup_id in ids:
            manifest = load_manifest(store, backup_id, key)
            verify_objects(store, manifest)
            print(f"{backup_id}: {len(manifest['objects'])} object(s) intact, manifest signature valid")
        return 0
    from dbops.instance import ensure_embedded

    ensure_embedded(settings)
    url = settings.target_url()
    last = {"mib": 0}

    def progress(stored: int) -> None:
        if stored >> 28 > last["mib"]:  # every 256 MiB
            last["mib"] = stored >> 28
            print(f"  {stored >> 20} MiB stored", flush=True)

    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    manifest = logical_backup(url, store, key, bin_dir=settings.pg_bin, progress=progress, jobs=args.jobs)
    print(f"backup {manifest['id']} of {redact_url(url)} in {store.describe()}: raw {_size(manifest['raw_bytes'])}, "
          f"stored {_size(manifest['stored_bytes'])}, {manifest['duration_seconds']} s")
    return 0


def restore_main(argv: list[str], settings: Settings) -> int:
    from dbops.restore import restore_logical

    parser = argparse.ArgumentParser(prog="dbops restore")
    parser.add_argument("backup_id")
    parser.add_argument("--target", required=True, help="URL of the (empty) database to restore into")
    parser.add_argument("--force", action="store_true", help="restore even if the target is not empty")
    args = parser.parse_args(argv)
    store, key = _store(settings), MasterKey.from_env()
    manifest = load_manifest(store, args.backup_id, key)
    verify_objects(store, manifest)
    phases = restore_logical(store, key, manifest, args.target, force=args.force, bin_dir=settings.pg_bin)
    print(f"restored {args.backup_id} into {redact_url(args.target)}: {phases}")
    return 0


def drill_main(argv: list[str], settings: Settings) -> int:
    from dbops.instance import ensure_embedded
    from dbops.restore import drill

    parser = argparse.ArgumentParser(prog="dbops drill")
    parser.add_argument("--backup", help="backup id (default: the latest)")
    parser.add_argument("--keep", action="store_true", help="keep the restored scratch database")
    args = parser.parse_args(argv)
    ensure_embedded(settings)
    result = drill(settings.target_url(), _store(settings), MasterKey.from_env(), backup_id=args.backup,
                   keep=args.keep, bin_dir=settings.pg_bin)
    print(f"drill of {result.backup_id}: RTO {result.rto_seconds} s {result.phases}; {result.tables_checked} tables,"
          f" {result.rows_checked} rows, {result.indexes_checked} indexes checked")
    if result.restored_url:
        print(f"restored copy kept at {redact_url(result.restored_url)}")
    for problem in result.problems:
        print(f"  MISMATCH {problem}")
    return 0 if result.data_matches else 1


def main(argv: list[str], settings: Settings) -> int:
    """``argv`` starts with the group: ``backup ...``, ``restore ...`` or ``drill ...``."""
    groups = {"backup": backup_main, "restore": restore_main, "drill": drill_main}
    if not argv or argv[0] not in groups:
        print("usage: dbops {backup run|list|verify|prune|keygen, restore ID --target URL, drill}")
        return 2
    return groups[argv[0]](argv[1:], settings)

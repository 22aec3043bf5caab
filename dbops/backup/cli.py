"""`dbops backup run|list|verify|export|prune|keygen` and `dbops wal push|list|status`: :func:`main` dispatches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection
from pathlib import Path

from dbops.backup import wal
from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import export_logical, logical_backup
from dbops.backup.manifest import Ignored, load_manifest, read_store, verify_objects
from dbops.backup.physical import base_backup
from dbops.backup.retention import prune, rules
from dbops.backup.store import store_for
from dbops.backup.wal import push_spool
from dbops.embedded import ensure_embedded
from dbops.redact import redact_url
from dbops.settings import Settings


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


def _aligned(rows: list[tuple[str, ...]], numeric: Collection[int] = ()) -> str:
    """Rows with each column as wide as its widest cell (``numeric`` columns right-aligned), no trailing blanks;
    nothing for no row (one line per backup, as scripts read it)."""
    if not rows:
        return ""
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join("  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip() for row in rows)


def backup_main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="dbops backup", description="Back up the target's database: a logical "
                                     "dump or a physical base backup (full or incremental), encrypted into the "
                                     "backup store; list, verify, export and prune backups; generate a key.")
    parser.add_argument("action", choices=["run", "list", "verify", "export", "prune", "keygen"])
    parser.add_argument("--kind", choices=["logical", "full", "incremental"], default="logical",
                        help="run: pg_dump (logical) or pg_basebackup full/incremental (physical)")
    parser.add_argument("--dry-run", action="store_true", help="prune: list what would be deleted")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="run: parallel pg_dump --format=directory with N workers (stages the dump files locally)")
    parser.add_argument("--output", type=Path, metavar="PATH",
                        help="export: where to write the plain pg_dump archive (a file; a folder for a "
                             "directory-format backup)")
    parser.add_argument("--force", action="store_true", help="export: replace PATH if it exists")
    parser.add_argument("backup_id", nargs="?", help="backup to verify (default: every backup) or export")
    args = parser.parse_args(argv)
    if args.action == "export" and (not args.backup_id or args.output is None):
        parser.error("export needs a backup id and --output PATH: dbops backup export ID --output PATH")
    if args.action != "export" and (args.output is not None or args.force):
        parser.error("--output and --force are options of export")
    if args.action == "keygen":
        print(generate_key())
        return 0
    store, backup = store_for(settings), settings.target().backup
    if args.action == "list":
        # the key is needed once there is a manifest to verify
        listing = read_store(store, lambda: MasterKey.from_settings(backup))
        _report(listing.ignored)
        rows = [(m["id"], m["kind"], m["finished_at"], "raw", _size(m["raw_bytes"]), "stored",
                 _size(m["stored_bytes"]), "key", m["encryption"]["key_id"], *(("parent", m["parent"]) if
                                                                            m.get("parent") else ("", "")))
                for m in listing.backups]
        if rows:
            print(_aligned(rows, numeric={4, 6}))
        return 0
    if args.action == "prune":
        result = prune(store, lambda: MasterKey.from_settings(backup), *rules(backup), dry_run=args.dry_run)
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
    key = MasterKey.from_settings(settings.target().backup)
    if args.action == "export":
        exported = export_logical(store, key, args.backup_id, args.output, force=args.force, bin_dir=settings.pg_bin)
        what = ("pg_dump directory archive (a folder)" if exported.dump_format == "directory"
                else "pg_dump custom archive")
        print(f"exported {exported.backup_id} to {exported.path}: {what}, {_size(exported.bytes)}, "
              f"{exported.entries} entries (pg_restore --list); restore it with "
              f"pg_restore --dbname=URL {exported.path}")
        if exported.database_settings:
            print(f"  the database's own settings ({'; '.join(exported.database_settings)}) are applied by "
                  "`pg_restore --create --dbname=postgres`; into another database, set them again with ALTER "
                  "DATABASE ... SET (`dbops restore` does)")
        return 0
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
    ensure_embedded(settings)
    url = settings.target_url()

    def progress(line: str) -> None:  # each phase as it happens (dbops.backup.progress)
        print(f"  {line}", flush=True)

    if args.kind != "logical":
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


def wal_main(argv: list[str], settings: Settings) -> int:
    """`dbops wal push PATH` (an archive_command), `dbops wal push --spool DIR`, `dbops wal list|status`."""


    parser = argparse.ArgumentParser(prog="dbops wal", description="The WAL archive: push WAL files into the "
                                     "backup store (the server's archive_command), list them, show the archive's "
                                     "lag.")
    parser.add_argument("action", choices=["push", "list", "status"])
    parser.add_argument("path", nargs="?", help="push: the WAL file (archive_command = 'dbops wal push %%p')")
    parser.add_argument("--spool", help="push: every finished file of this spool directory (default: the "
                                        "embedded server's, or DBOPS_WAL_SPOOL)")
    args = parser.parse_args(argv)
    store = store_for(settings)
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
    key = MasterKey.from_settings(settings.target().backup)
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
    """``argv`` starts with the group: ``backup ...`` or ``wal ...``."""
    groups = {"backup": backup_main, "wal": wal_main}
    if not argv or argv[0] not in groups:
        print("usage: dbops {backup run|list|verify|export|prune|keygen, wal push|list|status}")
        return 2
    return groups[argv[0]](argv[1:], settings)

"""Restore drills: prove a backup brings the data back, and measure how long it takes.

A logical drill (:func:`drill`) proves every object first (:func:`~dbops.backup.manifest.verify_objects`), restores
the backup into a scratch database (:func:`~dbops.restore.logical.restore_logical`), compares rows and content
checksums of every table with the manifest and runs amcheck on every btree index, both shared out over two
connections, and drops the scratch database, also on failure, unless the caller asked to keep the restored copy.

A physical drill (:func:`physical_drill`) restores a base backup chain into a scratch cluster on a free loopback port
(:func:`~dbops.restore.physical.restore_physical`), replays WAL to a target time, proves it by canary rows (one
committed before the target must be there, one after must not), reads every table, runs amcheck, measures every phase
and removes the scratch cluster, also on failure.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbops.backup import wal
from dbops.backup.figures import compare_figures, compare_tables, hash_methods, leaf_tables, table_figure
from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.manifest import latest, load_manifest, verify_objects
from dbops.backup.physical import PHYSICAL_KINDS, chain
from dbops.backup.progress import Progress, report
from dbops.backup.store import Store
from dbops.errors import DbopsError
from dbops.pg.binaries import client_bin_dir
from dbops.pg.connect import connection, drop_database, ensure_database, with_address, with_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops.redact import redact_url
from dbops.restore.logical import RestoreError, restore_logical
from dbops.restore.physical import (
    PhysicalRestoreError,
    manifest_major,
    prepare_recovery,
    restore_physical,
    restored_settings,
    write_settings,
)
from dbops.staging import remove_leftovers

VERIFY_CONNECTIONS = 2
# Settings of a restored scratch cluster: never archive into the production archive, modest memory.
SCRATCH_SETTINGS = {"archive_mode": "off", "shared_buffers": "'256MB'",
                    "log_connections": "off", "log_disconnections": "off"}


@dataclass
class DrillResult:
    backup_id: str
    phases: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    tables_checked: int = 0
    rows_checked: int = 0
    indexes_checked: int = 0
    restored_url: str | None = None  # set when the copy was kept
    # One row per table: logical, the comparison with the manifest (figures.compare_tables: table, rows_backed_up,
    # rows_restored, result, matches); physical, the rows read back (table, rows_restored).
    tables: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rto_seconds(self) -> float:
        return round(sum(self.phases.values()), 3)

    def within_rto(self, limit_seconds: float) -> bool:
        """Whether the drill restored in less than ``limit_seconds``, the recovery-time objective: the targets
        file's ``limits.rto_seconds`` (``load_targets(target.targets_file).limits.rto_seconds``)."""
        return self.rto_seconds < limit_seconds

    @property
    def data_matches(self) -> bool:
        return not self.problems


def choose_backup(store: Store, key: MasterKey, backup_id: str | None) -> dict[str, Any]:
    if backup_id:
        return load_manifest(store, backup_id, key)
    newest = latest(store, key, "logical")
    if newest is None:
        raise RestoreError(f"there is no complete logical backup in {store.describe()}", "run `dbops backup run` first")
    return load_manifest(store, newest["id"], key)



BTREE_INDEXES = """
SELECT c.oid::regclass::text, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.amname = 'btree' AND i.indisvalid AND c.relkind = 'i' AND n.nspname <> 'pg_toast'
ORDER BY 2 DESC, 1
"""


def amcheck_all(url: str) -> int:
    """bt_index_check on every valid btree index; return how many were checked (raises on corruption)."""
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        indexes = conn.execute(BTREE_INDEXES).fetchall()
        for index, _ in indexes:
            conn.execute("SELECT bt_index_check(%s::regclass)", [index])
        return len(indexes)


def verify_restored(url: str, connections: int = VERIFY_CONNECTIONS, methods: dict[str, str] | None = None,
                    progress: Progress | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Figures of every table and bt_index_check of every btree index, shared out over ``connections``.

    The same checks as :func:`~dbops.backup.figures.table_figures` plus :func:`amcheck_all`, run side by side:
    the biggest relations first, each connection taking the next one when it is free, so they finish together.
    ``methods`` gives the row hash per table (a manifest's). Returns the figures and the number of indexes
    checked; raises the first error (corruption included). ``progress`` gets a line when the checks start.
    """
    methods = methods or {}
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        tasks: list[tuple[int, str, tuple[str, ...]]] = [(size, "table", (schema, table))
                                                         for schema, table, size in leaf_tables(conn)]
        indexes = conn.execute(BTREE_INDEXES).fetchall()
        tasks += [(int(size), "index", (index,)) for index, size in indexes]
    tasks.sort(key=lambda t: -t[0])
    report(progress, f"verify started: rows and checksums of {len(tasks) - len(indexes)} table(s), amcheck of "
                     f"{len(indexes)} btree index(es), over {max(1, connections)} connection(s)")
    figures: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            with connection(url) as conn:
                while True:
                    with lock:
                        if errors or not tasks:
                            return
                        _, kind, names = tasks.pop(0)
                    if kind == "table":
                        figure = table_figure(conn, *names, methods.get(".".join(names), "record"))
                        with lock:
                            figures[".".join(names)] = figure
                    else:
                        conn.execute("SELECT bt_index_check(%s::regclass)", [names[0]])
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work, name=f"dbops-verify-{n}", daemon=True)
               for n in range(max(1, connections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return dict(sorted(figures.items())), len(indexes)


def drill(url: str, store: Store, key: MasterKey, *, backup_id: str | None = None, keep: bool = False,
          scratch_name: str | None = None, bin_dir: Path | None = None, jobs: int | None = None,
          staging_root: Path | None = None, production: bool = False,
          allow_production: bool = False, progress: Progress | None = None) -> DrillResult:
    """Restore a backup into a scratch database on ``url``'s server and prove it matches the manifest.

    A directory-format backup is staged under ``staging_root`` (required for one); staging directories left there by
    killed runs are removed first. On a ``production`` server (the target's ``production`` setting) the scratch copy
    is refused, before anything is read or created, unless ``allow_production``: it costs that server I/O and disk.

    ``progress`` gets one line per phase as it happens: objects verified, restore started, restored in X s,
    verify/compare, the RTO.
    """
    if production and not allow_production:
        raise DbopsError(f"{redact_url(url)} is marked production: a drill restores a scratch copy on its server",
                         "drill the physical backups (a scratch cluster of its own), or pass --allow-production "
                         "(allow_production: true) on purpose")
    if staging_root is not None and staging_root.is_dir():
        remove_leftovers(staging_root)
    t0 = time.monotonic()
    manifest = choose_backup(store, key, backup_id)
    result = DrillResult(manifest["id"])
    report(progress, f"logical drill of {manifest['id']}: verifying {len(manifest['objects'])} object(s) "
                     f"(size and sha256, {manifest['stored_bytes'] / (1 << 20):.1f} MiB)")
    verify_objects(store, manifest)
    result.phases["download_verify"] = round(time.monotonic() - t0, 3)
    scratch = scratch_name or f"dbops_drill_{uuid.uuid4().hex[:10]}"
    report(progress, f"objects verified in {result.phases['download_verify']:.1f} s")
    report(progress, f"restore started into the scratch database {scratch}")
    ensure_database(url, scratch)
    scratch_url = with_database(url, scratch)
    try:
        restored = restore_logical(store, key, manifest, scratch_url, bin_dir=bin_dir, jobs=jobs,
                                   staging_root=staging_root, progress=progress)
        result.phases.update(restored)
        report(progress, f"restored in {sum(restored.values()):.1f} s "
                         f"({', '.join(f'{k} {v:.1f} s' for k, v in restored.items())})")
        t1 = time.monotonic()
        actual, result.indexes_checked = verify_restored(scratch_url, methods=hash_methods(manifest["tables"]),
                                                         progress=progress)
        result.problems = compare_figures(manifest["tables"], actual)
        result.tables = compare_tables(manifest["tables"], actual)
        result.tables_checked = len(actual)
        result.rows_checked = sum(t["rows"] for t in actual.values())
        result.phases["verify"] = round(time.monotonic() - t1, 3)
        verdict = (f"{len(result.problems)} difference(s), first: {result.problems[0]}" if result.problems
                   else "every table matches the manifest")
        report(progress, f"verified and compared in {result.phases['verify']:.1f} s: {result.tables_checked} "
                         f"table(s), {result.rows_checked} row(s), {result.indexes_checked} index(es); {verdict}")
    except BaseException:
        drop_database(url, scratch)
        raise
    if keep:
        result.restored_url = scratch_url
    else:
        drop_database(url, scratch)
    report(progress, _rto_line(result))
    return result


def _rto_line(result: DrillResult) -> str:
    return f"RTO {result.rto_seconds:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in result.phases.items())})"


@contextmanager
def restored_copy(url: str, store: Store, key: MasterKey, backup_id: str | None = None, *,
                  staging_root: Path | None = None) -> Iterator[str]:
    """The latest (or given) backup restored into a scratch database on ``url``'s server, dropped on exit.

    For later steps that need yesterday's data without touching production: index verification, migration
    rehearsal. ``staging_root`` as for :func:`drill`.
    """
    result = drill(url, store, key, backup_id=backup_id, keep=True, staging_root=staging_root)
    if not result.data_matches:
        drop_database(url, result.restored_url.rsplit("/", 1)[-1])  # type: ignore[union-attr]
        raise BackupIntegrityError(f"backup {result.backup_id} restored with differences: {result.problems[0]}",
                                   "take a new backup")
    try:
        yield result.restored_url  # type: ignore[misc]
    finally:
        drop_database(url, result.restored_url.rsplit("/", 1)[-1])  # type: ignore[union-attr]



# ---- physical drill ---------------------------------------------------------------------------------------

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
    """The source's URL (same user, password and database) pointed at the scratch cluster on loopback."""
    return with_address(source_url, "127.0.0.1", port)


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
                   scratch_root: Path | None = None, keep: bool = False,
                   progress: Progress | None = None) -> PhysicalDrillResult:
    """Restore a base backup (chain) into a scratch cluster, replay archived WAL to a target time, and prove it.

    With ``pitr`` the drill first plants canary rows on ``url``'s server around a target time and waits until they
    are archived (pushing ``spool`` into the store when the server archives into a spool). ``progress`` gets one
    line per phase as it happens: canaries archived, objects verified, unpacked, pg_verifybackup, WAL staged,
    recovered, verify, the RTO.
    """
    manifest = choose_physical(store, key, backup_id)
    bin_dir = client_bin_dir(bin_dir, manifest_major(manifest))
    result = PhysicalDrillResult(manifest["id"], chain=[m["id"] for m in chain(store, key, manifest)])
    report(progress, f"physical drill of {' + '.join(result.chain)}")
    canaries = None
    if pitr and _archive_mode(url) == "off":
        result.notes.append("WAL archiving is off on the server: restored to the end of the backup, no PITR")
        report(progress, result.notes[-1])
        pitr = False
    if pitr:
        canaries = plant_canaries(url)
        report(progress, f"PITR canaries planted around {canaries['target_time']}; waiting for WAL "
                         f"{canaries['last_wal']} to be archived")
        wait_archived(url, canaries["last_wal"])
        pushed = wal.push_spool(store, key, spool) if spool is not None else []
        report(progress, f"WAL {canaries['last_wal']} archived" + (f"; {len(pushed)} WAL file(s) moved from the "
                                                                   "spool into the store" if spool else ""))
        result.target_time = canaries["target_time"]
    home = Path(tempfile.mkdtemp(prefix="dbops-drill-", dir=scratch_root))
    server = EmbeddedServer(home, free_port(), bin_dir, dict(SCRATCH_SETTINGS))
    try:
        report(progress, f"restore started into a scratch cluster in {home} (port {server.port})")
        restored = restore_physical(store, key, manifest, server.data_dir, bin_dir=bin_dir, progress=progress)
        result.phases.update(restored)
        report(progress, f"restored in {sum(restored.values()):.1f} s")
        began = time.monotonic()
        settings, _, staged = prepare_recovery(store, key, manifest, server.data_dir,
                                               canaries["target_time"] if canaries else None)
        result.wal_files_replayed = staged
        result.phases["stage_wal"] = round(time.monotonic() - began, 3)
        report(progress, f"{staged} archived WAL file(s) staged in {result.phases['stage_wal']:.1f} s; replay "
                         f"started to {result.target_time or 'the end of the backup'}")
        began = time.monotonic()
        # In postgresql.auto.conf, so they override whatever the source set, ALTER SYSTEM included.
        write_settings(server.data_dir, {**restored_settings(server.port, socket_dir=server.socket_dir), **settings},
                       "written by dbops drill: the scratch cluster keeps to itself")
        server.adopt_data_dir()
        server.start(timeout=3600)
        scratch = _scratch_url(url, server.port)
        _wait_promoted(scratch, server)
        result.phases["replay"] = round(time.monotonic() - began, 3)
        report(progress, f"recovered and promoted in {result.phases['replay']:.1f} s")
        began = time.monotonic()
        if canaries:
            result.problems += _check_canaries(scratch, canaries)
        figures, result.indexes_checked = verify_restored(scratch, progress=progress)
        result.tables = [{"table": name, "rows_restored": figure["rows"]} for name, figure in figures.items()]
        result.tables_checked = len(figures)
        result.rows_checked = sum(t["rows"] for t in figures.values())
        result.phases["verify"] = round(time.monotonic() - began, 3)
        verdict = (f"{len(result.problems)} problem(s), first: {result.problems[0]}" if result.problems
                   else "canaries right" if canaries else "no PITR canaries")
        report(progress, f"verified in {result.phases['verify']:.1f} s: {result.tables_checked} table(s), "
                         f"{result.rows_checked} row(s), {result.indexes_checked} index(es); {verdict}")
        report(progress, _rto_line(result))
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

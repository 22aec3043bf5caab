"""Migration rehearsal: run the pending migrations on a restored copy of production and measure what they do.

Linters read the SQL; a rehearsal watches PostgreSQL run it on last night's data. Every pending file is applied by
the ordinary :class:`~dbops.migrate.Migrator` (same callbacks, transactions, timeouts, history rows) while a second
connection polls ``pg_locks`` for the relation locks the migrating backend holds, and ``pg_class.relfilenode`` of every
table and index is compared before and after each file: a new relfilenode means the relation was rewritten.

A migration is unsafe when it holds ACCESS EXCLUSIVE on a large table longer than allowed, or rewrites a large table
(a rewrite holds ACCESS EXCLUSIVE for as long as it copies the table, and needs its size again in free disk), or
fails on the copy. Lock durations are first-seen to last-seen samples, so they are accurate to one sampling interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dbops.backup.keys import MasterKey
from dbops.backup.manifest import latest
from dbops.backup.store import Store
from dbops.migrate.engine import AppliedMigration, Migrator
from dbops.migrate.files import MigrationError, Resolved, ResolvedMigration
from dbops.pg.connect import connect
from dbops.redact import redact
from dbops.restore.drill import restored_copy
from dbops.settings import RehearsalSettings

LOCK_MODES = (
    "AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
    "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock",
)
_RANK = {mode: rank for rank, mode in enumerate(LOCK_MODES)}
ACCESS_EXCLUSIVE = "AccessExclusiveLock"

# Tables, partitions, materialized views and indexes outside the system schemas (TOAST goes with its table).
_RELATIONS = """
SELECT c.oid, n.nspname || '.' || c.relname, c.relkind, c.relfilenode,
       CASE WHEN c.relkind IN ('r', 'm', 'p') THEN pg_total_relation_size(c.oid) ELSE pg_relation_size(c.oid) END,
       greatest(c.reltuples, 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND n.nspname NOT LIKE 'pg_temp%'
"""
_KINDS = {"r": "table", "p": "table", "m": "table", "i": "index", "I": "index"}

_LOCKS = """
SELECT l.relation, l.mode, coalesce(n.nspname || '.' || c.relname, 'oid ' || l.relation), c.relkind
FROM pg_locks l
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (n.nspname IS NULL OR (n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'))
"""


def lock_label(mode: str) -> str:
    """``AccessExclusiveLock`` -> ``ACCESS EXCLUSIVE``, the name the PostgreSQL docs and ``LOCK`` use."""
    words, current = [], ""
    for ch in mode.removesuffix("Lock"):
        if ch.isupper() and current:
            words.append(current)
            current = ""
        current += ch
    words.append(current)
    return " ".join(w.upper() for w in words)


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


@dataclass(frozen=True)
class Thresholds:
    """What the rehearsal tolerates. A table is *large* from ``large_table_bytes`` (pg_total_relation_size before the
    migration: heap, indexes and TOAST); ACCESS EXCLUSIVE on a large table may be held ``max_exclusive_seconds``."""

    large_table_bytes: int = 10 * 1048576
    max_exclusive_seconds: float = 1.0
    sample_interval: float = 0.01

    @classmethod
    def from_settings(cls, rehearsal: RehearsalSettings) -> Thresholds:
        """The target's ``rehearsal`` settings (DBOPS_REHEARSAL_LARGE_TABLE_MB, _MAX_LOCK_SECONDS, _SAMPLE_MS)."""
        return cls(large_table_bytes=rehearsal.large_table_bytes, max_exclusive_seconds=rehearsal.max_lock_seconds,
                   sample_interval=rehearsal.sample_interval)


@dataclass(frozen=True)
class Relation:
    oid: int
    name: str
    kind: str  # table | index
    relfilenode: int
    bytes: int
    rows: int


@dataclass(frozen=True)
class HeldLock:
    """The strongest lock a migration took on one relation, and how long it was seen held."""

    relation: str
    kind: str  # table | index | unknown (a relation the migration created and dropped)
    mode: str  # pg_locks spelling, e.g. AccessExclusiveLock
    held_seconds: float
    bytes: int  # size before the migration; 0 for a relation it created

    @property
    def label(self) -> str:
        return lock_label(self.mode)


@dataclass(frozen=True)
class Rewrite:
    relation: str
    kind: str
    bytes_before: int
    bytes_after: int
    rows: int


@dataclass
class MigrationRehearsal:
    """What one migration did on the copy."""

    script: str
    version: str | None
    transactional: bool
    seconds: float
    locks: list[HeldLock] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    samples: int = 0
    error: str | None = None
    in_production: bool = False  # applied in production after the backup was taken: reported, never judged
    problems: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not self.problems

    def judge(self, thresholds: Thresholds) -> None:
        self.problems = []
        if self.in_production:
            return
        if self.error:
            self.problems.append(f"{self.script} fails on the restored copy: {self.error}")
        for lock in self.locks:
            if (lock.mode == ACCESS_EXCLUSIVE and lock.kind == "table" and lock.bytes >= thresholds.large_table_bytes
                    and lock.held_seconds > thresholds.max_exclusive_seconds):
                self.problems.append(
                    f"{self.script} holds ACCESS EXCLUSIVE on {lock.relation} ({_mib(lock.bytes)}) for "
                    f"{lock.held_seconds:.2f} s (limit {thresholds.max_exclusive_seconds:g} s): every read and write "
                    "of that table waits meanwhile"
                )
        for rewrite in self.rewrites:
            if rewrite.kind == "table" and rewrite.bytes_before >= thresholds.large_table_bytes:
                self.problems.append(
                    f"{self.script} rewrites {rewrite.relation} ({_mib(rewrite.bytes_before)}, {rewrite.rows} rows) "
                    f"under ACCESS EXCLUSIVE (large from {_mib(thresholds.large_table_bytes)})"
                )

    @property
    def max_exclusive_seconds(self) -> float:
        return max((lk.held_seconds for lk in self.locks if lk.mode == ACCESS_EXCLUSIVE and lk.kind == "table"),
                   default=0.0)

    @property
    def rewritten_bytes(self) -> int:
        return sum(r.bytes_before for r in self.rewrites if r.kind == "table")


@dataclass
class RehearsalReport:
    thresholds: Thresholds
    migrations: list[MigrationRehearsal] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # pending in production
    backup_id: str | None = None
    note: str = ""  # why nothing was rehearsed, when nothing was
    restore_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        return [p for m in self.migrations for p in m.problems]

    @property
    def safe(self) -> bool:
        return not self.problems

    @property
    def rehearsed(self) -> bool:
        return bool(self.migrations)

    def markdown(self) -> str:
        if not self.migrations:
            return self.note or "nothing rehearsed"
        rows = ["| migration | s | strongest lock per table (held s) | rewritten (size before) | verdict |",
                "|---|---|---|---|---|"]
        for m in self.migrations:
            locks = ", ".join(f"{lk.relation}: {lk.label} {lk.held_seconds:.2f}" for lk in m.locks
                              if lk.kind == "table") or "none"
            rewrites = ", ".join(f"{r.relation} ({_mib(r.bytes_before)})" for r in m.rewrites) or "none"
            verdict = ("already applied in production" if m.in_production
                       else "UNSAFE" if m.problems else "safe")
            rows.append(f"| {m.script} | {m.seconds:.2f} | {locks} | {rewrites} | {verdict} |")
        return "\n".join(rows)


class LockSampler:
    """Polls ``pg_locks`` on its own connection for the relation locks one backend holds."""

    def __init__(self, url: str, interval: float) -> None:
        self.interval = interval
        self.conn = connect(url, application_name="dbops-rehearsal-sampler")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.seen: dict[tuple[int, str], list[float]] = {}  # (oid, mode) -> [first, last]
        self.names: dict[int, tuple[str, str | None]] = {}
        self.samples = 0

    def close(self) -> None:
        self.conn.close()

    def _sample(self, pid: int) -> None:
        rows = self.conn.execute(_LOCKS, [pid]).fetchall()
        now = time.monotonic()
        self.samples += 1
        for oid, mode, name, relkind in rows:
            span = self.seen.setdefault((int(oid), str(mode)), [now, now])
            span[1] = now
            if relkind is not None or int(oid) not in self.names:
                self.names[int(oid)] = (str(name), relkind)

    def _run(self, pid: int) -> None:
        try:
            while not self._stop.is_set():
                self._sample(pid)
                self._stop.wait(self.interval)
        except BaseException as exc:  # noqa: BLE001 - handed to stop()
            self._error = exc

    def start(self, pid: int) -> None:
        self.seen, self.names, self.samples = {}, {}, 0
        self._stop.clear()
        self._error = None
        self._sample(pid)  # before the migration's first statement: a lock already held would show here
        self._thread = threading.Thread(target=self._run, args=(pid,), name="dbops-rehearsal-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def strongest(self, before: dict[int, Relation], after: dict[int, Relation]) -> list[HeldLock]:
        """Per relation the strongest mode seen and its first-to-last span, strongest and longest first."""
        best: dict[int, tuple[str, list[float]]] = {}
        for (oid, mode), span in self.seen.items():
            current = best.get(oid)
            if current is None or _RANK.get(mode, -1) > _RANK.get(current[0], -1):
                best[oid] = (mode, span)
        out = []
        for oid, (mode, span) in best.items():
            rel = before.get(oid) or after.get(oid)
            name, relkind = self.names.get(oid, (f"oid {oid}", None))
            kind = rel.kind if rel else _KINDS.get(relkind or "", "unknown")
            out.append(HeldLock(rel.name if rel else name, kind, mode, round(span[1] - span[0], 3),
                                before[oid].bytes if oid in before else 0))
        out.sort(key=lambda lk: (-_RANK.get(lk.mode, -1), -lk.held_seconds, lk.relation))
        return out


def relations(conn: psycopg.Connection[Any]) -> dict[int, Relation]:
    """Every user table and index with its relfilenode, size and estimated rows."""
    return {int(oid): Relation(int(oid), str(name), _KINDS[str(kind)], int(node), int(size or 0), int(rows))
            for oid, name, kind, node, size, rows in conn.execute(_RELATIONS).fetchall()}


def rewrites(before: dict[int, Relation], after: dict[int, Relation]) -> list[Rewrite]:
    """Relations present before and after whose storage was replaced (a new relfilenode); biggest first."""
    out = [Rewrite(rel.name, rel.kind, rel.bytes, after[oid].bytes, rel.rows)
           for oid, rel in before.items()
           if oid in after and rel.relfilenode and after[oid].relfilenode != rel.relfilenode]
    return sorted(out, key=lambda r: (r.kind != "table", -r.bytes_before, r.relation))


class ObservedMigrator(Migrator):
    """The ordinary migrator, with each file's application watched: locks sampled, relfilenodes compared."""

    def __init__(self, url: str, locations: Path | str | list[Path], *, thresholds: Thresholds,
                 **options: Any) -> None:
        super().__init__(url, locations, **options)
        self.thresholds = thresholds
        self.observed: list[MigrationRehearsal] = []
        self._watcher: psycopg.Connection[Any] | None = None
        self._sampler: LockSampler | None = None

    @contextmanager
    def watching(self) -> Iterator[None]:
        self._watcher = connect(self.url, application_name="dbops-rehearsal-watcher")
        self._sampler = LockSampler(self.url, self.thresholds.sample_interval)
        try:
            yield
        finally:
            self._sampler.close()
            self._watcher.close()
            self._sampler = self._watcher = None

    def apply_one(self, conn: psycopg.Connection[Any], resolved: Resolved, migration: ResolvedMigration,
                  installed_by: str) -> AppliedMigration:
        if self._watcher is None or self._sampler is None:
            return super().apply_one(conn, resolved, migration, installed_by)
        before = relations(self._watcher)
        self._sampler.start(conn.info.backend_pid)
        began = time.monotonic()
        error: str | None = None
        try:
            return super().apply_one(conn, resolved, migration, installed_by)
        except MigrationError as exc:
            error = redact(exc.problem)
            raise
        finally:
            seconds = time.monotonic() - began
            self._sampler.stop()
            after = relations(self._watcher)
            history = self.history.name
            self.observed.append(MigrationRehearsal(
                script=migration.script,
                version=str(migration.version) if migration.version is not None else None,
                transactional=migration.transactional,
                seconds=round(seconds, 3),
                locks=[lk for lk in self._sampler.strongest(before, after) if lk.relation != history],
                rewrites=rewrites(before, after),
                samples=self._sampler.samples,
                error=error,
            ))


def rehearse_on(copy_url: str, locations: Path | str | list[Path], thresholds: Thresholds | None = None, *,
                production_pending: set[str] | None = None, **options: Any) -> list[MigrationRehearsal]:
    """Apply every pending migration on ``copy_url`` (a restored copy, never production) and judge each one.

    ``production_pending`` names the files still pending in production; others (applied there after the backup
    was taken) are applied so later files see the right schema, but not judged. A file that fails on the copy is
    reported as unsafe and nothing after it runs.
    """
    thresholds = thresholds or Thresholds()
    migrator = ObservedMigrator(copy_url, locations, thresholds=thresholds, **options)
    with migrator.watching():
        try:
            migrator.apply()
        except MigrationError as exc:
            if not migrator.observed or migrator.observed[-1].error is None:
                # Refused before any file ran (history problems on the copy): that is the finding.
                migrator.observed.append(MigrationRehearsal("(migrate)", None, True, 0.0, error=redact(exc.problem)))
    for item in migrator.observed:
        item.in_production = production_pending is not None and item.script not in production_pending \
            and item.error is None
        item.judge(thresholds)
    return migrator.observed


def rehearse(url: str, store: Store, key: MasterKey | Callable[[], MasterKey], locations: Path | str | list[Path],
             thresholds: Thresholds | None = None, *, server_url: str | None = None,
             staging_root: Path | None = None, **options: Any) -> RehearsalReport:
    """Rehearse the migrations pending on ``url`` on its latest logical backup, restored into a scratch database.

    The copy lives on ``server_url``'s server (default: ``url``'s) and is dropped afterwards, also on failure.
    Nothing pending, or no backup to restore, gives a report that rehearsed nothing and says why; ``key`` may be a
    callable, asked only when there is a backup to decrypt (a deployment without backups needs no key).
    ``staging_root`` is where a directory-format backup is staged to restore it (``Settings.staging_root``).
    """

    thresholds = thresholds or Thresholds()
    began = time.monotonic()
    pending = Migrator(url, locations, **options).pending()
    report = RehearsalReport(thresholds, pending=[m.script for m in pending])
    if not pending:
        report.note = "nothing pending in production: nothing to rehearse"
    elif (newest := latest(store, key, "logical")) is None:
        report.note = (f"{len(pending)} migration(s) pending but no logical backup in {store.describe()}: "
                       "nothing to rehearse on (take one with `dbops backup run`)")
    else:
        report.backup_id = str(newest["id"])
        master_key = key if isinstance(key, MasterKey) else key()
        with restored_copy(server_url or url, store, master_key, backup_id=report.backup_id,
                           staging_root=staging_root) as copy_url:
            report.restore_seconds = round(time.monotonic() - began, 3)
            report.migrations = rehearse_on(copy_url, locations, thresholds,
                                            production_pending=set(report.pending), **options)
    report.total_seconds = round(time.monotonic() - began, 3)
    return report

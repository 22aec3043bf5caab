"""Migration rehearsal: run the pending migrations on a restored copy of production and measure what they do.

Linters read the SQL; a rehearsal watches PostgreSQL run it on last night's data. Every pending file is applied by
the ordinary :class:`~dbops.migrate.Migrator` (same callbacks, transactions, timeouts, history rows) while a second
connection polls ``pg_locks`` for the relation locks the migrating backend holds, and ``pg_class.relfilenode`` of every
table and index is compared before and after each file: a new relfilenode means the relation was rewritten.

A migration is unsafe when it holds ACCESS EXCLUSIVE on a large table longer than allowed, or rewrites a large table
(a rewrite holds ACCESS EXCLUSIVE for as long as it copies the table, and needs its size again in free disk), or
fails on the copy (a ``-- dbops:assert`` that is not true fails it too). Lock durations are first-seen to last-seen
samples, so they are accurate to one sampling interval.

Beyond locks, the rehearsal checks that the application survives the change:

* **Query replay.** Production's own top statements (pg_stat_statements, by calls and by total time) are planned on the
  copy with a generic plan just before the first pending file and again after the last
  (:mod:`dbops.migrate.queries`). One that no longer plans (a dropped or renamed column, a changed type) makes the
  rehearsal unsafe, named with its error; one whose estimated cost grew more than ``plan_regression_factor`` times is a
  warning, with both plans.
* **Undo.** A pending file with a ``U<version>__`` beside it is run up, undone, and run up again on the copy; the
  catalog after the undo must equal the catalog before the file, and after the second up the one after the first.
* **Compatibility.** Each pending file is classified against the catalog it will meet (:mod:`dbops.migrate.compat`):
  safe for the application versions still running, or breaking (with squawk's findings beside it, and for a rename the
  expand/contract sequence). Breaking is a warning: a contract step of an expand/contract change is breaking by design.
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
from dbops.catalog.diff import diff
from dbops.catalog.introspect import IGNORED_TABLES, snapshot
from dbops.migrate.compat import Compatibility, catalog_lookup, classify
from dbops.migrate.engine import AppliedMigration, Migrator
from dbops.migrate.files import MigrationError, Resolved, ResolvedMigration
from dbops.migrate.lint import LintFinding
from dbops.migrate.queries import Plan, Recorded, Replay, compare, plan_statements, recorded_statements
from dbops.pg.connect import connect, connection
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
    replay_statements: int = 200  # production's top statements planned before and after (0: no replay)
    plan_regression_factor: float = 2.0  # estimated cost growing more than this many times is a plan regression

    @classmethod
    def from_settings(cls, rehearsal: RehearsalSettings) -> Thresholds:
        """The target's ``rehearsal`` settings (DBOPS_REHEARSAL_LARGE_TABLE_MB, _MAX_LOCK_SECONDS, _SAMPLE_MS,
        _REPLAY_STATEMENTS, _PLAN_REGRESSION_FACTOR)."""
        return cls(large_table_bytes=rehearsal.large_table_bytes, max_exclusive_seconds=rehearsal.max_lock_seconds,
                   sample_interval=rehearsal.sample_interval, replay_statements=rehearsal.replay_statements,
                   plan_regression_factor=rehearsal.plan_regression_factor)


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
class UndoRehearsal:
    """A pending file run up -> undo -> up on the copy: what its undo left different."""

    script: str  # the U file
    seconds: float = 0.0
    differences: list[str] = field(default_factory=list)  # catalog after the undo vs before the file
    redo_differences: list[str] = field(default_factory=list)  # after the second up vs after the first
    error: str | None = None  # the undo, or the second up, failed

    @property
    def passed(self) -> bool:
        return not self.differences and not self.redo_differences and self.error is None

    def problems(self, migration: str) -> list[str]:
        out = []
        if self.error:
            out.append(f"{migration}: up -> undo -> up failed: {self.error}")
        if self.differences:
            out.append(f"{self.script} does not undo {migration}: after it the catalog differs from before "
                       f"{migration} ({len(self.differences)}: {'; '.join(self.differences[:10])})")
        if self.redo_differences:
            out.append(f"{migration} applied again after {self.script} gives another catalog than the first time "
                       f"({'; '.join(self.redo_differences[:10])})")
        return out


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
    undo: UndoRehearsal | None = None  # None: no U file beside it (or not judged)
    compat: Compatibility | None = None  # classified against the copy's catalog just before it ran

    @property
    def safe(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        return "already applied in production" if self.in_production else "UNSAFE" if self.problems else "safe"

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
        if self.undo is not None:
            self.problems += self.undo.problems(self.script)

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
    replay: Replay | None = None  # production's statements planned before and after (None: not rehearsed)
    compat: dict[str, Compatibility] = field(default_factory=dict)  # pending file -> classification
    lint: dict[str, list[LintFinding]] = field(default_factory=dict)  # pending file -> squawk's findings

    @property
    def problems(self) -> list[str]:
        """What makes the rehearsal unsafe (``rehearsal_safe`` fails, blocking the production migrate)."""
        return [p for m in self.migrations for p in m.problems] + self.replay_problems

    @property
    def replay_problems(self) -> list[str]:
        """The production statements the migrations break (no single migration's problem)."""
        if self.replay is None:
            return []
        return [f"production statement no longer plans after the migration: {b.statement.short} -> {b.error}"
                for b in self.replay.broken]

    @property
    def warnings(self) -> list[str]:
        """What an operator should read before migrating, without blocking it."""
        out = []
        if self.pending and not self.rehearsed:
            out.append(self.note or "nothing rehearsed")
        if self.replay is not None:
            out += [f"plan regression ({r.ratio:.1f}x estimated cost): {r.statement.short}: before "
                    f"{r.before.summary}; after {r.after.summary}" for r in self.replay.regressions]
            if self.replay.nothing_checked:
                out.append("no production statement was replayed: " + (self.replay.note or "none recorded"))
        for script, compat in self.compat.items():
            if compat.breaking:
                kinds = sorted({c.kind for c in compat.changes if c.breaking})
                out.append(f"{script} is breaking for running application versions ({', '.join(kinds)})")
        return out

    @property
    def safe(self) -> bool:
        return not self.problems

    @property
    def rehearsed(self) -> bool:
        return bool(self.migrations)

    @property
    def verdict(self) -> str:
        """``UNSAFE``, ``WARN`` or ``SAFE``."""
        return "UNSAFE" if self.problems else "WARN" if self.warnings else "SAFE"

    def _migration_rows(self) -> list[str]:
        rows = ["| migration | s | strongest lock per table (held s) | rewritten (size before) | undo | verdict |",
                "|---|---|---|---|---|---|"]
        for m in self.migrations:
            locks = ", ".join(f"{lk.relation}: {lk.label} {lk.held_seconds:.2f}" for lk in m.locks
                              if lk.kind == "table") or "none"
            rewrites = ", ".join(f"{r.relation} ({_mib(r.bytes_before)})" for r in m.rewrites) or "none"
            undo = ("-" if m.in_production else "no U file" if m.undo is None
                    else "undoes" if m.undo.passed else "DOES NOT UNDO")
            rows.append(f"| {m.script} | {m.seconds:.2f} | {locks} | {rewrites} | {undo} | {m.verdict} |")
        return rows

    def _compat_lines(self) -> list[str]:
        out = []
        for script, compat in self.compat.items():
            out += compat.lines()
            for finding in self.lint.get(script, []):
                out.append(f"  squawk line {finding.line}: {finding.level}: {finding.rule}: {finding.message}")
        return out

    def markdown(self) -> str:
        """The whole report for Dagster's UI: verdict, problems, warnings, migrations, replay, compatibility."""
        if not self.migrations and not self.compat:
            return self.note or "nothing rehearsed"
        parts = [f"**{self.verdict}**"]
        if self.problems:
            parts += ["", "Problems:", *(f"- {p}" for p in self.problems)]
        if self.warnings:
            parts += ["", "Warnings:", *(f"- {w}" for w in self.warnings)]
        if self.migrations:
            parts += ["", *self._migration_rows()]
        if self.replay is not None:
            parts += ["", "Production statements replayed:", "", self.replay.markdown()]
        if self.compat:
            parts += ["", "Backward compatibility:", "", "```", *self._compat_lines(), "```"]
        return "\n".join(parts)

    def text(self) -> str:
        """The report for a terminal (``dbops migrate plan --rehearse``)."""
        lines = [f"rehearsal: {self.verdict}"
                 + (f" (backup {self.backup_id}, restored in {self.restore_seconds:.1f} s, "
                    f"{self.total_seconds:.1f} s in all)" if self.rehearsed else "")]
        if self.note:
            lines.append(self.note)
        for m in self.migrations:
            strongest = next((lk for lk in m.locks if lk.kind == "table"), None)
            lock = f"{strongest.label} on {strongest.relation} {strongest.held_seconds:.2f} s" if strongest \
                else "no table lock"
            undo = "" if m.in_production else "; no undo file" if m.undo is None else (
                f"; undo {m.undo.script}: " + ("undoes it" if m.undo.passed else "DOES NOT UNDO IT"))
            lines.append(f"  {m.script}: {m.verdict} in {m.seconds:.2f} s; {lock}; "
                         f"{len(m.rewrites)} rewrite(s){undo}")
        if self.replay is not None:
            lines += ["production statements:", *("  " + line for line in self.replay.lines())]
        if self.compat:
            lines += ["backward compatibility:", *("  " + line for line in self._compat_lines())]
        lines += [f"UNSAFE: {p}" for p in self.problems] + [f"WARN: {w}" for w in self.warnings]
        return "\n".join(lines)


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
    """The ordinary migrator, with each file's application watched: locks sampled, relfilenodes compared; each file
    pending in production (``production_pending``; None: every file) classified first, its U file (if any) run
    up -> undo -> up, and ``recorded`` statements planned before the first of them."""

    def __init__(self, url: str, locations: Path | str | list[Path], *, thresholds: Thresholds,
                 production_pending: set[str] | None = None, recorded: Recorded | None = None,
                 **options: Any) -> None:
        super().__init__(url, locations, **options)
        self.thresholds = thresholds
        self.production_pending = production_pending
        self.recorded = recorded
        self.plans_before: dict[str, Plan] | None = None
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

    def _judged(self, migration: ResolvedMigration) -> bool:
        return self.production_pending is None or migration.script in self.production_pending

    def _catalog(self) -> dict[str, Any]:
        """The copy's catalog as the drift check reads it, the history table left out."""
        assert self._watcher is not None
        return snapshot(self._watcher, None, ignore=(*IGNORED_TABLES, self.history.name))

    def _before_judged(self, conn: psycopg.Connection[Any], migration: ResolvedMigration) -> Compatibility:
        """Just before a file pending in production: the statements' plans (first time only, with fresh
        statistics) and the file's classification against the catalog it meets, names resolved as the migration's
        session resolves them."""
        assert self._watcher is not None
        row = conn.execute("SELECT current_setting('search_path')").fetchone()
        self._watcher.execute("SELECT set_config('search_path', %s, false)", [row[0] if row else "public"])
        if self.recorded is not None and self.plans_before is None:
            self._watcher.execute("ANALYZE")
            self.plans_before = plan_statements(self._watcher, self.recorded.statements)
        return classify(migration.script, self._text(migration.script, migration.sql), catalog_lookup(self._watcher))

    def plans_after(self) -> Replay | None:
        """Production's statements planned on the migrated copy, compared with their plans before (None when no
        pending file ran)."""
        if self._watcher is None or self.recorded is None or self.plans_before is None:
            return None
        self._watcher.execute("ANALYZE")
        after = plan_statements(self._watcher, self.recorded.statements)
        return compare(self.recorded, self.plans_before, after,
                       factor=self.thresholds.plan_regression_factor)

    def apply_one(self, conn: psycopg.Connection[Any], resolved: Resolved, migration: ResolvedMigration,
                  installed_by: str) -> AppliedMigration:
        if self._watcher is None or self._sampler is None or migration.undo:
            return super().apply_one(conn, resolved, migration, installed_by)
        judged = self._judged(migration)
        compat = self._before_judged(conn, migration) if judged else None
        undo_file = resolved.undo.get(migration.version) if judged and migration.version is not None else None
        catalog_before = self._catalog() if undo_file is not None else None
        applied = self._observe(conn, resolved, migration, installed_by, compat)
        if undo_file is not None and catalog_before is not None:
            self.observed[-1].undo = UndoRehearsal(undo_file.script)  # filled in as it goes, also when it raises
            self._undo_round(conn, resolved, migration, undo_file, installed_by, catalog_before,
                             self.observed[-1].undo)
        return applied

    def _observe(self, conn: psycopg.Connection[Any], resolved: Resolved, migration: ResolvedMigration,
                 installed_by: str, compat: Compatibility | None) -> AppliedMigration:
        assert self._watcher is not None and self._sampler is not None
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
                compat=compat,
            ))

    def _undo_round(self, conn: psycopg.Connection[Any], resolved: Resolved, migration: ResolvedMigration,
                    undo_file: ResolvedMigration, installed_by: str, before: dict[str, Any],
                    result: UndoRehearsal) -> None:
        """``migration`` is applied: undo it, compare the catalog with ``before``, apply it again and compare with
        the catalog after the first apply, into ``result``. A second apply that fails stops the rehearsal (the copy
        is no longer at the version later files expect)."""
        began = time.monotonic()
        after_up = self._catalog()
        try:
            super().apply_one(conn, resolved, undo_file, installed_by)
        except MigrationError as exc:
            result.error = f"{undo_file.script} fails on the copy: {redact(exc.problem)}"
            result.seconds = round(time.monotonic() - began, 3)
            return  # the copy is still at the migrated version: later files may go on
        result.differences = [str(change) for change in diff(before, self._catalog())]
        try:
            super().apply_one(conn, resolved, migration, installed_by)
        except MigrationError as exc:
            result.error = f"{migration.script} fails when applied again after {undo_file.script}: " \
                           f"{redact(exc.problem)}"
            result.seconds = round(time.monotonic() - began, 3)
            raise
        result.redo_differences = [str(change) for change in diff(after_up, self._catalog())]
        result.seconds = round(time.monotonic() - began, 3)


def _failed_in_rehearsal(observed: list[MigrationRehearsal]) -> bool:
    last = observed[-1] if observed else None
    return last is not None and (last.error is not None or (last.undo is not None and last.undo.error is not None))


def rehearse_on(copy_url: str, locations: Path | str | list[Path], thresholds: Thresholds | None = None, *,
                production_pending: set[str] | None = None, recorded: Recorded | None = None,
                **options: Any) -> tuple[list[MigrationRehearsal], Replay | None]:
    """Apply every pending migration on ``copy_url`` (a restored copy, never production) and judge each one; plan
    ``recorded`` (production's statements) before the first pending file and after the last.

    ``production_pending`` names the files still pending in production; others (applied there after the backup
    was taken) are applied so later files see the right schema, but not judged. A file that fails on the copy is
    reported as unsafe and nothing after it runs.
    """
    thresholds = thresholds or Thresholds()
    migrator = ObservedMigrator(copy_url, locations, thresholds=thresholds, production_pending=production_pending,
                                recorded=recorded, **options)
    with migrator.watching():
        try:
            migrator.apply()
        except MigrationError as exc:
            if not _failed_in_rehearsal(migrator.observed):
                # Refused before any file ran (history problems on the copy): that is the finding.
                migrator.observed.append(MigrationRehearsal("(migrate)", None, True, 0.0, error=redact(exc.problem)))
        replay = migrator.plans_after()
    for item in migrator.observed:
        item.in_production = production_pending is not None and item.script not in production_pending \
            and item.error is None
        item.judge(thresholds)
    return migrator.observed, replay


def _read_recorded(url: str, thresholds: Thresholds, exclude_roles: tuple[str, ...]) -> Recorded:
    """Production's top statements (read only; an unreachable view is a note, not a failure)."""
    if thresholds.replay_statements <= 0:
        return Recorded([], "query replay is off (rehearsal.replay_statements = 0)")
    with connection(url, application_name="dbops-rehearsal") as conn:
        return recorded_statements(conn, limit=thresholds.replay_statements, exclude_roles=exclude_roles)


def _lint(migrator: Migrator, pending: list[ResolvedMigration]) -> dict[str, list[LintFinding]]:
    findings = migrator.lint([m.path for m in pending])
    by_path: dict[str, list[LintFinding]] = {}
    for finding in findings:
        by_path.setdefault(str(Path(finding.file).resolve()), []).append(finding)
    return {m.script: by_path.get(str(m.path.resolve()), []) for m in pending}


def _classify_on(url: str, migrator: Migrator, pending: list[ResolvedMigration]) -> dict[str, Compatibility]:
    """Without a copy: each pending file classified against production's catalog as it is now (read only)."""
    with connection(url, application_name="dbops-rehearsal") as conn:
        lookup = catalog_lookup(conn)
        placeholders = migrator.offline_placeholders()
        return {m.script: classify(m.script, placeholders.replace(m.script, m.sql), lookup) for m in pending}


def rehearse(url: str, store: Store, key: MasterKey | Callable[[], MasterKey], locations: Path | str | list[Path],
             thresholds: Thresholds | None = None, *, server_url: str | None = None,
             staging_root: Path | None = None, exclude_roles: tuple[str, ...] = (), **options: Any
             ) -> RehearsalReport:
    """Rehearse the migrations pending on ``url`` on its latest logical backup, restored into a scratch database.

    The copy lives on ``server_url``'s server (default: ``url``'s) and is dropped afterwards, also on failure.
    Nothing pending, or no backup to restore, gives a report that rehearsed nothing and says why; ``key`` may be a
    callable, asked only when there is a backup to decrypt (a deployment without backups needs no key).
    ``staging_root`` is where a directory-format backup is staged to restore it (``Settings.staging_root``).
    ``exclude_roles``: roles whose statements are not the application's (``profile.exclude_roles``), left out of
    the query replay. Production is only read: its pending files, its top statements and (without a backup) its
    catalog for the compatibility classification.
    """

    thresholds = thresholds or Thresholds()
    began = time.monotonic()
    migrator = Migrator(url, locations, **options)
    pending = migrator.pending()
    report = RehearsalReport(thresholds, pending=[m.script for m in pending])
    if not pending:
        report.note = "nothing pending in production: nothing to rehearse"
        report.total_seconds = round(time.monotonic() - began, 3)
        return report
    report.lint = _lint(migrator, pending)
    if (newest := latest(store, key, "logical")) is None:
        report.note = (f"{len(pending)} migration(s) pending but no logical backup in {store.describe()}: "
                       "nothing to rehearse on (take one with `dbops backup run`)")
        report.compat = _classify_on(url, migrator, pending)
    else:
        report.backup_id = str(newest["id"])
        recorded = _read_recorded(url, thresholds, exclude_roles)
        master_key = key if isinstance(key, MasterKey) else key()
        with restored_copy(server_url or url, store, master_key, backup_id=report.backup_id,
                           staging_root=staging_root) as copy_url:
            report.restore_seconds = round(time.monotonic() - began, 3)
            report.migrations, report.replay = rehearse_on(copy_url, locations, thresholds,
                                                           production_pending=set(report.pending),
                                                           recorded=recorded, **options)
        report.compat = {m.script: m.compat for m in report.migrations if m.compat is not None}
    report.total_seconds = round(time.monotonic() - began, 3)
    return report

"""The migration runner: Flyway's rules on psycopg 3, with per-statement error locations and an advisory lock.

Before anything runs, every pending file (and every callback the run fires) is parsed whole with PostgreSQL's
parser: a file it cannot take, or a transactional file with its own COMMIT/ROLLBACK/BEGIN, is refused with its line.
Each transactional file runs in one transaction, statement by statement, so a failure names the file and the line
of the failing statement and leaves nothing of that file behind (and no history row, as Flyway does on
PostgreSQL). Files marked ``-- dbops:no-transaction`` (CREATE INDEX CONCURRENTLY and friends) run in autocommit; their
history row is written as ``success = false`` before they start and completed after, so one that fails or is
killed half-way stays visible as failed and the next run refuses to go on until the operator repairs.

``-- dbops:assert`` lines run where they stand, in the file's transaction: one that is not true fails the file, which
rolls it back. :meth:`Migrator.undo` runs ``U<version>__`` files, newest version first, and records each as Flyway
does (a history row of type ``UNDO_SQL``), after which the version is pending again.

Concurrent runs (two deploys, a schedule and a manual run) serialise on a session advisory lock and re-read the
history once they hold it, so every version is applied exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from dbops.errors import DbopsError
from dbops.migrate.baseline import BaselineRecord
from dbops.migrate.files import (
    Assertion,
    Callback,
    MigrationError,
    Resolved,
    ResolvedMigration,
    Version,
    assertions,
    checked_statements,
    flyway_checksum,
    resolve,
    split_statements,
)
from dbops.migrate.history import BASELINE_DESCRIPTION, AppliedRow, HistoryTable
from dbops.migrate.lint import DEFAULT_LINT_EXCLUDE, LintFinding, lint_files
from dbops.migrate.placeholders import Placeholders
from dbops.pg.connect import connect, database_name, parse_url
from dbops.redact import redact, redact_url
from dbops.settings.model import TargetSettings

DEFAULT_LOCK_TIMEOUT = "10s"  # a migration waiting longer than this for a lock is blocking live traffic: fail fast
DEFAULT_STATEMENT_TIMEOUT = "30min"  # a runaway statement must not hold locks forever; raise per file via header

# The callbacks `apply` fires, and those of them that run inside a transactional file's own transaction.
APPLY_EVENTS = ("beforeMigrate", "beforeEachMigrate", "afterEachMigrate", "afterEachMigrateError", "afterVersioned",
                "beforeRepeatables", "afterMigrateApplied", "afterMigrate", "afterMigrateError")
IN_FILE_TRANSACTION = ("beforeEachMigrate", "afterEachMigrate")
UNDO_EVENTS = ("beforeUndo", "beforeEachUndo", "afterEachUndo", "afterEachUndoError", "afterUndo", "afterUndoError")
IN_UNDO_TRANSACTION = ("beforeEachUndo", "afterEachUndo")


@dataclass(frozen=True)
class MigrationInfo:
    """One line of ``dbops migrate info``: a file, a history row, or both."""

    version: str | None
    description: str
    type: str
    script: str
    checksum: int | None
    applied_checksum: int | None
    installed_on: datetime | None
    execution_time: int | None
    state: str
    installed_rank: int | None = None


@dataclass(frozen=True)
class AppliedMigration:
    version: str | None
    description: str
    script: str
    type: str
    execution_ms: int
    checksum: int


@dataclass
class ApplyResult:
    applied: list[AppliedMigration] = field(default_factory=list)
    current_version: str | None = None
    total_ms: int = 0
    baselined: str | None = None  # the version baseline_on_migrate baselined the database at before applying


@dataclass
class UndoResult:
    undone: list[AppliedMigration] = field(default_factory=list)  # newest version first, as they ran
    current_version: str | None = None
    total_ms: int = 0


@dataclass
class RepairResult:
    removed_failed: int = 0
    realigned: list[str] = field(default_factory=list)
    marked_deleted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedMigration:
    migration: ResolvedMigration
    findings: list[LintFinding]


def statements(text: str) -> list[tuple[int, str]]:
    """Split SQL into statements with the 1-based line each starts on; :class:`MigrationError` (``line N: ...``)
    for text PostgreSQL's parser cannot take whole (see :func:`~dbops.migrate.files.split_statements`)."""
    return [(s.line, s.text) for s in split_statements(text)]


def _first_line(message: str) -> str:
    return (message or "").strip().splitlines()[0] if (message or "").strip() else "unknown error"


def migrator_options(target: TargetSettings) -> dict[str, Any]:
    """The :class:`Migrator` keyword arguments a target's settings (``migrate.*``, ``schemas``) stand for; the one
    translation of those settings (see :meth:`Migrator.for_target`)."""
    settings = target.migrate
    schemas = tuple(dict.fromkeys((settings.default_schema, *target.schemas))) if target.schemas else ()
    return {
        "schema": settings.default_schema,
        "table": settings.table,
        "schemas": schemas,
        "baseline_on_migrate": settings.baseline_on_migrate,
        "baseline_version": settings.baseline_version,
        "placeholder_replacement": settings.placeholder_replacement,
        "placeholders": dict(settings.placeholders),
    }


# User objects of a schema (relations, routines, types, collations, operators), extension members left out: Flyway's
# "is the schema empty" before a first migrate.
_OBJECTS = """
WITH objects(nsp, oid, classid) AS (
    SELECT relnamespace, oid, 'pg_class'::regclass FROM pg_class WHERE relkind NOT IN ('i', 'I', 't')
    UNION ALL SELECT pronamespace, oid, 'pg_proc'::regclass FROM pg_proc
    UNION ALL SELECT typnamespace, oid, 'pg_type'::regclass FROM pg_type t
        WHERE t.typrelid = 0 AND NOT (t.typelem <> 0 AND t.typcategory = 'A')
    UNION ALL SELECT collnamespace, oid, 'pg_collation'::regclass FROM pg_collation
    UNION ALL SELECT oprnamespace, oid, 'pg_operator'::regclass FROM pg_operator
)
SELECT n.nspname, count(*)
FROM objects o JOIN pg_namespace n ON n.oid = o.nsp
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.oid AND d.deptype = 'e')
GROUP BY 1 ORDER BY 1
"""


class Migrator:
    """Applies and inspects Flyway-style migrations on one database.

    ``schema``/``table``: the history table (Flyway's defaultSchema and table). ``schemas``: what must be empty for a
    first migrate without a history table (None: ``schema`` alone, Flyway's default; empty: every non-system
    schema); a schema holding objects is refused ("baseline first") unless ``baseline_on_migrate``, which baselines
    it at ``baseline_version`` first. ``placeholders``/``placeholder_replacement``: Flyway's ``${...}`` replacement
    (see :mod:`dbops.migrate.placeholders`). ``record``: where a baseline records the schema it adopted (None: not
    recorded). Build one from a target's settings with :meth:`for_target`.
    """

    def __init__(
        self,
        url: str,
        locations: Path | str | list[Path],
        *,
        schema: str = "public",
        table: str = "flyway_schema_history",
        schemas: Sequence[str] | None = None,
        baseline_on_migrate: bool = False,
        baseline_version: str = "1",
        placeholder_replacement: bool = True,
        placeholders: Mapping[str, str] | None = None,
        record: BaselineRecord | None = None,
        out_of_order: bool = False,
        lint_exclude: tuple[str, ...] = DEFAULT_LINT_EXCLUDE,
        installed_by: str | None = None,
        lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
        statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
        lock_wait_seconds: float = 900,
    ) -> None:
        self.url = url
        if isinstance(locations, (str, Path)):
            locations = [Path(locations)]
        self.locations = [Path(p) for p in locations]
        self.history = HistoryTable(schema, table)
        self.schemas = (schema,) if schemas is None else tuple(schemas)
        self.baseline_on_migrate = baseline_on_migrate
        self.baseline_version = str(Version.parse(baseline_version))
        self.placeholder_replacement = placeholder_replacement
        self.placeholders = dict(placeholders or {})
        self.record = record
        self.out_of_order = out_of_order
        self.lint_exclude = tuple(lint_exclude)
        self.installed_by = installed_by
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.lock_wait_seconds = lock_wait_seconds
        self._bound = Placeholders(enabled=placeholder_replacement, user=self.placeholders)

    @classmethod
    def for_target(cls, url: str, target: TargetSettings, *, locations: Path | str | list[Path] | None = None,
                   record: BaselineRecord | None = None, **overrides: Any) -> Migrator:
        """The migrator of ``target``'s database at ``url``: its migrations folder (or ``locations``), history table,
        baseline and placeholder settings (:func:`migrator_options`), ``overrides`` on top."""
        return cls(url, locations if locations is not None else target.migrations, record=record,
                   **{**migrator_options(target), **overrides})

    # ---- placeholders ---------------------------------------------------------------------------------------
    def _bind(self, conn: psycopg.Connection[Any], resolved: Resolved) -> Resolved:
        """Fix this run's placeholder values (user and database from the connection) and return ``resolved`` with
        each repeatable's checksum taken over its replaced text, as Flyway does (versioned ones keep the file's).

        Like Flyway on PostgreSQL, the default schema (when it exists) is put first on the session's search_path,
        ahead of the one the session had, unless that one already starts with it."""
        row = conn.execute("SELECT session_user, current_database()").fetchone()
        user, database = (str(row[0]), str(row[1])) if row else ("", database_name(self.url))
        self._use_default_schema(conn)
        self._bound = Placeholders(enabled=self.placeholder_replacement, user=self.placeholders, context={
            "defaultSchema": self.history.schema, "user": user, "database": database, "table": self.history.table,
            "workingDirectory": os.getcwd(),
        })
        if not self.placeholder_replacement:
            return resolved
        repeatable = [replace(m, checksum=flyway_checksum(self._bound.replace(m.script, m.sql)))
                      for m in resolved.repeatable]
        return replace(resolved, repeatable=repeatable)

    def offline_placeholders(self) -> Placeholders:
        """Placeholder values without a connection (for lint): user and database as the URL names them."""
        try:
            parsed = parse_url(self.url)
            user, database = parsed.user or "", database_name(self.url)
        except DbopsError:
            user = database = ""
        return Placeholders(enabled=self.placeholder_replacement, user=self.placeholders, context={
            "defaultSchema": self.history.schema, "user": user, "database": database, "table": self.history.table,
            "workingDirectory": os.getcwd(),
        })

    def lint(self, files: list[Path] | None = None) -> list[LintFinding]:
        """squawk and dbops's own findings on ``files`` (default: every migration), placeholders replaced."""
        if files is None:
            resolved = self.resolve()
            files = [m.path for m in resolved.versioned + resolved.repeatable]
        return lint_files(files, exclude=self.lint_exclude, placeholders=self.offline_placeholders())

    def _use_default_schema(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute("SELECT current_setting('search_path'), to_regnamespace(%s) IS NOT NULL",
                           [sql.Identifier(self.history.schema).as_string(conn)]).fetchone()
        if row and row[1]:
            first = sql.Identifier(self.history.schema).as_string(conn)
            path = str(row[0]).strip()
            head = path.split(",", 1)[0].strip()
            if head not in (first, self.history.schema):
                conn.execute("SELECT set_config('search_path', %s, false)", [f"{first}, {path}" if path else first])

    def _text(self, script: str, text: str) -> str:
        return self._bound.replace(script, text)

    # ---- reading --------------------------------------------------------------------------------------------
    def resolve(self) -> Resolved:
        return resolve(self.locations)

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        conn = connect(self.url)
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _effective(rows: list[AppliedRow]) -> tuple[dict[Version, AppliedRow], dict[str, AppliedRow], set[Version]]:
        """Latest row per version and per repeatable description; versions marked deleted by repair."""
        versioned: dict[Version, AppliedRow] = {}
        repeatable: dict[str, AppliedRow] = {}
        deleted: set[Version] = set()
        for row in rows:
            if row.type == "DELETE":
                if row.version is not None:
                    deleted.add(row.version)
                    versioned.pop(row.version, None)
                else:
                    repeatable.pop(row.description, None)
                continue
            if row.type == "SCHEMA":
                continue
            if row.type == "UNDO_SQL":  # Flyway's undo: the version is no longer applied (pending again)
                if row.success and row.version is not None:
                    versioned.pop(row.version, None)
                continue
            if row.version is not None:
                versioned[row.version] = row
                deleted.discard(row.version)
            else:
                repeatable[row.description] = row
        return versioned, repeatable, deleted

    @staticmethod
    def _current(versioned: dict[Version, AppliedRow]) -> Version | None:
        done = [v for v, row in versioned.items() if row.success]
        return max(done) if done else None

    def _state(self) -> tuple[Resolved, list[AppliedRow]]:
        """The files (placeholders bound) and the history rows, over one connection."""
        resolved = self.resolve()
        with self._connect() as conn:
            return self._bind(conn, resolved), self.history.rows(conn)

    def info(self) -> list[MigrationInfo]:
        resolved = self.resolve()
        with self._connect() as conn:
            resolved = self._bind(conn, resolved)
            with self._event(conn, resolved, "Info"):
                return self._info(resolved, self.history.rows(conn), self.history.running_elsewhere(conn))

    def _info(self, resolved: Resolved, rows: list[AppliedRow], running: bool = False) -> list[MigrationInfo]:
        """States per file and row. ``running``: another session holds the migration lock, so an unfinished row
        (``success = false``) is the no-transaction file it is applying now, not a failure."""
        applied, applied_rep, _deleted = self._effective(rows)
        unfinished = "running" if running else "failed"
        current = self._current(applied)
        baseline = max((v for v, r in applied.items() if r.type == "BASELINE"), default=None)
        files = resolved.by_version()
        newest_file = max(files, default=None)
        out: list[MigrationInfo] = []
        for version in sorted(set(files) | set(applied)):
            migration, row = files.get(version), applied.get(version)
            if row is not None:
                if row.type == "BASELINE":
                    state = "baseline"
                elif not row.success:
                    state = unfinished
                elif migration is None:
                    state = "future" if newest_file is None or version > newest_file else "missing"
                else:
                    state = "success"
            elif baseline is not None and version <= baseline:
                state = "below baseline"
            elif current is not None and version < current:
                state = "ignored"
            else:
                state = "pending"
            out.append(MigrationInfo(
                version=str(migration.version if migration else version),  # as the file spells it
                description=migration.description if migration else row.description,  # type: ignore[union-attr]
                type=row.type if row else "SQL",
                script=migration.script if migration else row.script,  # type: ignore[union-attr]
                checksum=migration.checksum if migration else None,
                applied_checksum=row.checksum if row else None,
                installed_on=row.installed_on if row else None,
                execution_time=row.execution_time if row else None,
                state=state,
                installed_rank=row.installed_rank if row else None,
            ))
        by_desc = {m.description: m for m in resolved.repeatable}
        for desc in sorted(set(by_desc) | set(applied_rep)):
            migration, row = by_desc.get(desc), applied_rep.get(desc)
            if row is None:
                state = "pending"
            elif not row.success:
                state = unfinished
            elif migration is None:
                state = "missing"
            elif migration.checksum != row.checksum:
                state = "outdated"
            else:
                state = "success"
            out.append(MigrationInfo(
                version=None, description=desc, type=row.type if row else "SQL",
                script=migration.script if migration else row.script,  # type: ignore[union-attr]
                checksum=migration.checksum if migration else None,
                applied_checksum=row.checksum if row else None,
                installed_on=row.installed_on if row else None,
                execution_time=row.execution_time if row else None, state=state,
                installed_rank=row.installed_rank if row else None,
            ))
        return out

    def current_version(self) -> str | None:
        with self._connect() as conn:
            return self._current_on(conn)

    def _current_on(self, conn: psycopg.Connection[Any]) -> str | None:
        """The highest successfully applied version, as the history read over ``conn`` says now."""
        applied, _rep, _del = self._effective(self.history.rows(conn))
        current = self._current(applied)
        return str(current) if current is not None else None

    def _pending(self, resolved: Resolved, rows: list[AppliedRow], target: Version | None) -> list[ResolvedMigration]:
        states = {(i.version, i.description if i.version is None else None): i.state
                  for i in self._info(resolved, rows)}
        todo = []
        for m in resolved.versioned:
            state = states.get((str(m.version), None))
            if state == "pending" or (state == "ignored" and self.out_of_order):
                if target is None or (m.version is not None and m.version <= target):
                    todo.append(m)
        for m in resolved.repeatable:
            if states.get((None, m.description)) in ("pending", "outdated"):
                todo.append(m)
        return todo

    def pending(self, target: str | None = None) -> list[ResolvedMigration]:
        return self._pending(*self._state(), Version.parse(target) if target else None)

    def _problems(self, resolved: Resolved, rows: list[AppliedRow], running: bool = False) -> list[str]:
        problems = []
        files = resolved.by_version()
        for item in self._info(resolved, rows, running):
            name = item.script
            if item.state == "failed":
                problems.append(f"{name} failed in an earlier run or was interrupted (rank {item.installed_rank}): "
                                "check what it changed and undo or finish that by hand, fix the file, then run "
                                "`dbops migrate repair`")
            elif item.state == "missing":
                problems.append(f"{name} (version {item.version or 'R'}) was applied but its file is missing: restore "
                                "it, or run `dbops migrate repair` to mark it deleted")
            elif item.state == "ignored" and not self.out_of_order:
                problems.append(f"{name} is pending but older than the current version: renumber it above the "
                                "current version or run with --out-of-order")
            elif (item.state == "success" and item.version is not None and item.checksum != item.applied_checksum):
                migration = files.get(Version.parse(item.version))
                where = migration.path if migration else name
                problems.append(f"checksum mismatch for {where}: applied {item.applied_checksum}, file "
                                f"{item.checksum}: revert the edit (write a new migration instead) or run "
                                "`dbops migrate repair` if the change is cosmetic")
        return problems

    def validate(self) -> None:
        """Raise :class:`MigrationError` when the history and the files disagree (pending files are fine)."""
        resolved = self.resolve()
        with self._connect() as conn:
            resolved = self._bind(conn, resolved)
            with self._event(conn, resolved, "Validate"):
                rows = self.history.rows(conn)
                self._raise_problems(self._problems(resolved, rows, self.history.running_elsewhere(conn)))

    def _raise_problems(self, problems: list[str]) -> None:
        if problems:
            error = MigrationError(
                f"{len(problems)} problem(s) in {self.history.name}: " + "; ".join(problems)
            )
            error.problems = problems  # type: ignore[attr-defined]
            raise error

    def check(self, resolved: Resolved, todo: list[ResolvedMigration]) -> None:
        """Refuse a run before anything of it runs: every file in ``todo`` and every callback `apply` fires must
        parse whole, and what runs inside a file's transaction must not commit, roll back or begin one itself."""
        for migration in todo:
            self._checked_file(migration)
        undo = any(m.undo for m in todo)
        events, in_file = (UNDO_EVENTS, IN_UNDO_TRANSACTION) if undo else (APPLY_EVENTS, IN_FILE_TRANSACTION)
        any_transactional = any(m.transactional for m in todo)
        for cb in resolved.callbacks:
            if cb.event in events:
                checked_statements(cb.script, self._text(cb.script, cb.sql),
                                   in_transaction=any_transactional and cb.event in in_file)

    def _checked_file(self, migration: ResolvedMigration) -> None:
        """``migration``'s statements parse and its assertions parse; in a file run outside a transaction an
        assertion may only stand before the first statement (nothing could roll the file back after it)."""
        text = self._text(migration.script, migration.sql)
        found = checked_statements(migration.script, text, in_transaction=migration.transactional)
        asserted = assertions(migration.script, text)
        if not migration.transactional and found:
            late = [a for a in asserted if a.line > found[0].line]
            if late:
                raise MigrationError(
                    f"{migration.script} line {late[0].line}: an assertion after the first statement of a file run "
                    "outside a transaction (-- dbops:no-transaction) could not roll the file back",
                    "move the assertion before the first statement, or into a transactional migration of its own",
                )

    def plan(self, target: str | None = None) -> list[PlannedMigration]:
        """Pending files with what squawk says about each (refused like `apply` when one would be refused)."""
        resolved, rows = self._state()
        todo = self._pending(resolved, rows, Version.parse(target) if target else None)
        self.check(resolved, todo)
        findings = lint_files([m.path for m in todo], exclude=self.lint_exclude,
                              placeholders=self._bound) if todo else []
        by_file: dict[str, list[LintFinding]] = {}
        for finding in findings:
            by_file.setdefault(str(Path(finding.file).resolve()), []).append(finding)
        return [PlannedMigration(m, by_file.get(str(m.path.resolve()), [])) for m in todo]

    # ---- writing --------------------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection holding the migration advisory lock (session level) for the whole run."""
        conn = connect(self.url)
        try:
            deadline = time.monotonic() + self.lock_wait_seconds
            key = self.history.lock_key()
            while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [key]).fetchone()[0]:  # type: ignore[index]
                if time.monotonic() > deadline:
                    raise MigrationError(
                        f"another migration run has held the lock on {self.history.name} for over "
                        f"{self.lock_wait_seconds:.0f} s", "wait for it to finish, or find it in pg_locks",
                    )
                time.sleep(0.2)
            try:
                yield conn
            finally:
                if not conn.closed:
                    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [key])
        finally:
            conn.close()

    def _installed_by(self, conn: psycopg.Connection[Any]) -> str:
        if self.installed_by:
            return self.installed_by
        row = conn.execute("SELECT current_user").fetchone()
        return str(row[0]) if row else "dbops"

    def _set_timeouts(self, conn: psycopg.Connection[Any], migration: ResolvedMigration, local: bool) -> None:
        settings = {"lock_timeout": self.lock_timeout, "statement_timeout": self.statement_timeout}
        settings.update(migration.settings())
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, %s)", [name, value, local])

    def _run_sql(self, conn: psycopg.Connection[Any], script: str, text: str, in_transaction: bool = False, *,
                 asserted: bool = False) -> None:
        """Execute statement by statement; a failure names the file and the line of the failing statement. With
        ``asserted`` (a migration, not a callback), its ``-- dbops:assert`` lines run where they stand.

        The whole text is parsed (and, in dbops's transaction, checked for transaction control) before its first
        statement runs."""
        replaced = self._text(script, text)
        checks = assertions(script, replaced) if asserted else []
        for item in checked_statements(script, replaced, in_transaction=in_transaction):
            while checks and checks[0].line < item.line:
                self._assert(conn, script, checks.pop(0))
            line, statement = item.line, item.text
            try:
                conn.execute(statement)  # type: ignore[arg-type]  # no parameters: run as written
            except psycopg.Error as exc:
                diag = exc.diag
                where = line
                if diag.statement_position:
                    where = line + statement[: int(diag.statement_position) - 1].count("\n")
                detail = _first_line(diag.message_primary or str(exc))
                state = f" [{diag.sqlstate}]" if diag.sqlstate else ""
                raise MigrationError(
                    f"{script} line {where}: {redact(detail)}{state}",
                    "fix the statement and run migrate again (nothing of this file was kept)",
                ) from exc
        for check in checks:
            self._assert(conn, script, check)

    def _callbacks(self, resolved: Resolved, event: str) -> list[Callback]:
        return [c for c in resolved.callbacks if c.event == event]

    def _run_callbacks(self, conn: psycopg.Connection[Any], resolved: Resolved, event: str,
                       in_transaction: bool = False) -> None:
        for cb in self._callbacks(resolved, event):
            self._run_sql(conn, cb.script, cb.sql, in_transaction)

    @contextmanager
    def _event(self, conn: psycopg.Connection[Any], resolved: Resolved, name: str) -> Iterator[None]:
        """Flyway's ``before<Name>`` / ``after<Name>`` / ``after<Name>Error`` callbacks around one command."""
        self._run_callbacks(conn, resolved, f"before{name}")
        try:
            yield
        except MigrationError:
            if not conn.closed and not conn.broken:
                try:
                    self._run_callbacks(conn, resolved, f"after{name}Error")
                except MigrationError:
                    pass  # the original failure is what the operator needs to see
            raise
        self._run_callbacks(conn, resolved, f"after{name}")

    def _run_migration(self, conn: psycopg.Connection[Any], resolved: Resolved, migration: ResolvedMigration) -> None:
        """The file itself (its assertions where they stand) between the beforeEach and afterEach callbacks of its
        command (Migrate, or Undo for a U file)."""
        in_transaction = migration.transactional
        command = "Undo" if migration.undo else "Migrate"
        self._run_callbacks(conn, resolved, f"beforeEach{command}", in_transaction)
        self._run_sql(conn, migration.script, migration.sql, in_transaction, asserted=True)
        self._run_callbacks(conn, resolved, f"afterEach{command}", in_transaction)

    def _assert(self, conn: psycopg.Connection[Any], script: str, item: Assertion) -> None:
        """Evaluate one assertion in the file's session; anything but true fails the file."""
        shown = redact(" ".join(item.sql.split()))
        fix = ("the data is not what the migration expects: nothing of this file was kept when it runs in a "
               "transaction; correct the data or the assertion, then migrate again")
        try:
            rows = conn.execute(item.query).fetchall()  # type: ignore[arg-type]  # the file's own SQL
        except psycopg.Error as exc:
            detail = _first_line(exc.diag.message_primary or str(exc))
            raise MigrationError(f"{script} line {item.line}: assertion `{shown}` could not run: {redact(detail)}",
                                 "fix the assertion's SQL (it must return one boolean)") from exc
        if len(rows) != 1 or len(rows[0]) != 1 or not isinstance(rows[0][0], bool | None):
            raise MigrationError(f"{script} line {item.line}: assertion `{shown}` returned {len(rows)} row(s), not "
                                 "one boolean", "make it return exactly one boolean")
        if rows[0][0] is not True:
            value = "NULL" if rows[0][0] is None else "false"
            raise MigrationError(f"{script} line {item.line}: assertion failed: `{shown}` is {value}", fix)

    def _record(self, conn: psycopg.Connection[Any], migration: ResolvedMigration, installed_by: str,
                started: float, success: bool) -> int:
        """Write the history row for ``migration``; return its execution time in ms."""
        elapsed = int((time.monotonic() - started) * 1000)
        self.history.insert(conn, version=migration.version, description=migration.description,
                            type_=migration.type, script=migration.script, checksum=migration.checksum,
                            installed_by=installed_by, execution_ms=elapsed, success=success)
        return elapsed

    def apply_one(self, conn: psycopg.Connection[Any], resolved: Resolved, migration: ResolvedMigration,
                  installed_by: str) -> AppliedMigration:
        """Apply one pending migration and write its history row. A subclass may wrap it to measure each migration
        (the rehearsal samples locks and rewrites around it); it must call this method to do the work."""
        started = time.monotonic()
        if migration.transactional:
            try:
                with conn.transaction():
                    self._set_timeouts(conn, migration, local=True)
                    self._run_migration(conn, resolved, migration)
                    # A migration may SET LOCAL ROLE to create objects owned by an owner role; the history row is
                    # written as the connecting user, who owns the history table.
                    conn.execute("RESET ROLE")
                    elapsed = self._record(conn, migration, installed_by, started, success=True)
            except MigrationError:
                self._error_callbacks(conn, resolved, migration)
                raise
        else:
            elapsed = self._apply_outside_transaction(conn, resolved, migration, installed_by, started)
        return AppliedMigration(str(migration.version) if migration.version is not None else None,
                                migration.description, migration.script, migration.type, elapsed, migration.checksum)

    def _apply_outside_transaction(self, conn: psycopg.Connection[Any], resolved: Resolved,
                                   migration: ResolvedMigration, installed_by: str, started: float) -> int:
        """Run a no-transaction file between a ``success = false`` history row and its completion.

        The row is committed before the first statement, so a run killed half-way (kill -9, a lost server) leaves
        it saying failed, like a failure does, and the next run stops until the operator checks and repairs."""
        rank = self.history.insert(conn, version=migration.version, description=migration.description,
                                   type_=migration.type, script=migration.script, checksum=migration.checksum,
                                   installed_by=installed_by, execution_ms=0, success=False)
        error: MigrationError | None = None
        try:
            self._set_timeouts(conn, migration, local=False)
            self._run_migration(conn, resolved, migration)
        except MigrationError as exc:
            error = exc
        fix = ("it ran outside a transaction, so part of it may have been applied: check and undo that, fix the "
               "file, then run `dbops migrate repair` and migrate again")
        if conn.closed or conn.broken:
            problem = error.problem if error else f"lost the connection while running {migration.script}"
            raise MigrationError(problem, fix + " (its history row says failed)") from error
        left_open = conn.info.transaction_status != TransactionStatus.IDLE
        if left_open:
            conn.execute("ROLLBACK")  # a BEGIN without COMMIT, or a transaction the failing statement aborted
        conn.execute("RESET ROLE")
        conn.execute("RESET lock_timeout")
        conn.execute("RESET statement_timeout")
        if error is None and left_open:
            error = MigrationError(f"{migration.script} left a transaction open (BEGIN without COMMIT); dbops rolled "
                                   "that transaction back")
        elapsed = int((time.monotonic() - started) * 1000)
        self.history.finish(conn, rank, execution_ms=elapsed, success=error is None)
        if error is not None:
            self._error_callbacks(conn, resolved, migration)
            raise MigrationError(error.problem, fix) from error
        return elapsed

    def _error_callbacks(self, conn: psycopg.Connection[Any], resolved: Resolved,
                         migration: ResolvedMigration) -> None:
        command = "Undo" if migration.undo else "Migrate"
        for cb in (self._callbacks(resolved, f"afterEach{command}Error")
                   + self._callbacks(resolved, f"after{command}Error")):
            try:
                self._run_sql(conn, cb.script, cb.sql)
            except MigrationError:
                pass  # the original failure is what the operator needs to see

    def apply(self, target: str | None = None) -> ApplyResult:
        """Apply every pending migration (up to ``target``) in order; return what was applied."""
        resolved = self.resolve()
        target_version = Version.parse(target) if target else None
        started = time.monotonic()
        result = ApplyResult()
        with self._locked() as conn:
            resolved = self._bind(conn, resolved)
            rows = self.history.rows(conn)
            adopt = self._first_migrate(conn) if not self.history.exists(conn) else False
            if adopt:  # baseline_on_migrate: plan and check the run as it will be after the baseline
                rows = [AppliedRow(1, Version.parse(self.baseline_version), BASELINE_DESCRIPTION, "BASELINE",
                                   BASELINE_DESCRIPTION, None, "", datetime.now(), 0, True)]
            problems = self._problems(resolved, rows)
            if problems:
                raise MigrationError(
                    f"migrate refused: {len(problems)} problem(s) in {self.history.name}: " + "; ".join(problems)
                )
            todo = self._pending(resolved, rows, target_version)
            self.check(resolved, todo)  # every pending file and callback, before anything (even the table) is made
            if adopt:
                self._baseline(conn, resolved, self.baseline_version, BASELINE_DESCRIPTION)
                result.baselined = self.baseline_version
            with conn.transaction():
                self.history.create(conn)
            self._use_default_schema(conn)  # now that the default schema exists
            installed_by = self._installed_by(conn)
            # As in Flyway: beforeMigrate/afterMigrate on every run, afterMigrateApplied only when something ran,
            # afterVersioned between the versioned and the repeatable ones, beforeRepeatables before those.
            self._run_callbacks(conn, resolved, "beforeMigrate")
            versioned = [m for m in todo if not m.repeatable]
            repeatable = [m for m in todo if m.repeatable]
            for migration in versioned:
                result.applied.append(self.apply_one(conn, resolved, migration, installed_by))
            self._run_callbacks(conn, resolved, "afterVersioned")
            if repeatable:
                self._run_callbacks(conn, resolved, "beforeRepeatables")
            for migration in repeatable:
                result.applied.append(self.apply_one(conn, resolved, migration, installed_by))
            if result.applied:
                self._run_callbacks(conn, resolved, "afterMigrateApplied")
            self._run_callbacks(conn, resolved, "afterMigrate")
            result.current_version = self._current_on(conn)
        result.total_ms = int((time.monotonic() - started) * 1000)
        return result

    def undo_plan(self, resolved: Resolved, rows: list[AppliedRow], to: str | None = None
                  ) -> list[ResolvedMigration]:
        """The U files to run, newest version first: the latest applied version (``to`` None), or every applied
        version above ``to``. Refused (nothing runs) when one has no U file, or when it would undo the baseline."""
        applied, _rep, _del = self._effective(rows)
        done = sorted((v for v, row in applied.items() if row.success), reverse=True)
        target = Version.parse(to) if to is not None else None
        chosen = [v for v in done if v > target] if target is not None else done[:1]
        baseline = [v for v in chosen if applied[v].type == "BASELINE"]
        if baseline:
            raise MigrationError(
                f"undo to {to} would undo the baseline at version {baseline[0]} of {self.history.name}",
                "undo only versions above the baseline (--to at or above it)")
        missing = [applied[v].script for v in chosen if v not in resolved.undo]
        if missing:
            raise MigrationError(
                f"no undo migration for {', '.join(missing)}: nothing was undone",
                "write U<version>__<description>.sql beside each (it must reverse its V file), or undo fewer "
                "versions with --to")
        return [resolved.undo[v] for v in chosen]

    def undo(self, to: str | None = None) -> UndoResult:
        """Run the undo migrations of the latest applied version (or of every version above ``to``), newest first,
        each in its own transaction (unless ``-- dbops:no-transaction``) with its ``UNDO_SQL`` history row."""
        resolved = self.resolve()
        started = time.monotonic()
        result = UndoResult()
        with self._locked() as conn:
            resolved = self._bind(conn, resolved)
            rows = self.history.rows(conn)
            problems = self._problems(resolved, rows)
            if problems:
                raise MigrationError(
                    f"undo refused: {len(problems)} problem(s) in {self.history.name}: " + "; ".join(problems))
            todo = self.undo_plan(resolved, rows, to)
            self.check(resolved, todo)
            if todo:
                installed_by = self._installed_by(conn)
                # As for migrate: afterUndoError comes with the failing file's afterEachUndoError (apply_one).
                self._run_callbacks(conn, resolved, "beforeUndo")
                for migration in todo:
                    result.undone.append(self.apply_one(conn, resolved, migration, installed_by))
                self._run_callbacks(conn, resolved, "afterUndo")
            result.current_version = self._current_on(conn)
        result.total_ms = int((time.monotonic() - started) * 1000)
        return result

    def _first_migrate(self, conn: psycopg.Connection[Any]) -> bool:
        """No history table yet: True when the schemas hold objects and ``baseline_on_migrate`` says to baseline them
        first; False when they are empty; refused (nothing created) when they hold objects and it does not."""
        found = self.nonempty_schemas(conn)
        if not found:
            return False
        if self.baseline_on_migrate:
            return True
        listed = ", ".join(f"{name} ({count} object{'s' if count != 1 else ''})" for name, count in found.items())
        raise MigrationError(
            f"{redact_url(self.url)}: schema(s) {listed} not empty and no history table {self.history.name}: "
            f"baseline first (dbops migrate baseline --version V) or set migrate.baseline_on_migrate"
        )

    def nonempty_schemas(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        """The schemas :attr:`schemas` names (every non-system one when empty) that hold user objects, with their
        number of objects (extension members not counted)."""
        rows = conn.execute(_OBJECTS, {"schemas": list(self.schemas) or None}).fetchall()
        return {str(name): int(count) for name, count in rows}

    def baseline(self, version: str | None = None, description: str = BASELINE_DESCRIPTION) -> str:
        """Mark an existing database as being at ``version`` (default: ``baseline_version``): older files are never
        run on it. With a :attr:`record`, the schema it adopts is recorded (for the drift check). Returns the
        version as recorded."""
        text = str(Version.parse(version if version is not None else self.baseline_version))
        resolved = self.resolve()
        with self._locked() as conn:
            resolved = self._bind(conn, resolved)
            with self._event(conn, resolved, "Baseline"):
                self._baseline(conn, resolved, text, description)
        return text

    def _baseline(self, conn: psycopg.Connection[Any], resolved: Resolved, version: str, description: str) -> None:
        """Record the adopted schema (before the history table exists), then the BASELINE row; the record is kept
        only once the row is committed."""
        rows = [r for r in self.history.rows(conn) if r.type != "SCHEMA"]
        if rows:
            raise MigrationError(
                f"{self.history.name} already has {len(rows)} row(s) on {redact_url(self.url)}",
                "baseline only a database that has never been migrated",
            )
        captured = self.record.capture(self.url) if self.record is not None else None
        try:
            with conn.transaction():
                self.history.create(conn)
                self.history.insert(conn, version=Version.parse(version), description=description,
                                    type_="BASELINE", script=description, checksum=None,
                                    installed_by=self._installed_by(conn), execution_ms=0, success=True)
        except BaseException:
            if captured is not None:
                BaselineRecord.discard(captured)
            raise
        if self.record is not None and captured is not None:
            self.record.keep(captured, version=version, history=self.history.name, url=self.url)

    def repair(self) -> RepairResult:
        """Remove failed rows, realign checksums with the files, mark applied migrations whose file is gone."""
        resolved = self.resolve()
        result = RepairResult()
        with self._locked() as conn:
            resolved = self._bind(conn, resolved)
            with self._event(conn, resolved, "Repair"), conn.transaction():
                if not self.history.exists(conn):
                    return result
                result.removed_failed = self.history.delete_failed(conn)
                rows = self.history.rows(conn)
                applied, applied_rep, _deleted = self._effective(rows)
                files = resolved.by_version()
                newest = max(files, default=None)
                installed_by = self._installed_by(conn)
                for version, row in applied.items():
                    if row.type == "BASELINE":
                        continue
                    migration = files.get(version)
                    if migration is None:
                        if newest is not None and version > newest:
                            continue  # future: applied by a newer release, leave it alone
                        self.history.insert(conn, version=version, description=row.description, type_="DELETE",
                                            script=row.script, checksum=row.checksum, installed_by=installed_by,
                                            execution_ms=0, success=True)
                        result.marked_deleted.append(row.script)
                    elif migration.checksum != row.checksum or migration.description != row.description:
                        self.history.realign(conn, row.installed_rank, migration.checksum, migration.description)
                        result.realigned.append(migration.script)
                by_desc = {m.description for m in resolved.repeatable}
                for desc, row in applied_rep.items():
                    if desc not in by_desc:
                        self.history.insert(conn, version=None, description=desc, type_="DELETE", script=row.script,
                                            checksum=row.checksum, installed_by=installed_by, execution_ms=0,
                                            success=True)
                        result.marked_deleted.append(row.script)
        return result


"""Materialized views refreshed, and how old each one is (plain Python, no Dagster).

Which views: ``matviews.views`` of the target (``schema.view``), or, when empty, every materialized view of the
target's schemas (``schemas``; empty: every user schema). A configured name that is not a materialized view of the
database stops the run before anything is refreshed.

How each is refreshed, in a transaction of its own:

- ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` when the view is populated and has a unique index PostgreSQL accepts
  for it. PostgreSQL's rule (``is_usable_unique_index`` in src/backend/commands/matview.c): a valid, immediate
  (not deferrable) unique B-tree index with no WHERE clause whose every column, INCLUDE ones too, is a plain column
  (no expression). CONCURRENTLY takes an EXCLUSIVE lock: readers keep reading the old rows while it runs.
- plain ``REFRESH MATERIALIZED VIEW`` otherwise (no such index, or never populated: CONCURRENTLY refuses an
  unpopulated view). It takes an ACCESS EXCLUSIVE lock, so readers of the view wait until it commits.

Every refresh runs under ``lock_timeout`` (default :data:`LOCK_TIMEOUT_S`): a view another session holds (an open
transaction that read it blocks a plain refresh; another refresh in progress blocks both kinds) is *skipped*
with the reason and the sessions holding it, and retried on the next run, instead of queueing readers behind a
refresh that waits.

Who refreshes: PostgreSQL lets the view's owner (PostgreSQL 17+: any role with MAINTAIN on it) refresh it, and runs
the view's query as the owner whoever asks. dbops' connection is a superuser (the embedded server) or the team's
admin role: a superuser, a role holding the owner's privileges (member with INHERIT) or MAINTAIN refreshes directly;
a member of the owner without INHERIT refreshes after ``SET LOCAL ROLE <owner>``; any other role gets a one-line
failure naming the GRANT that fixes it. Nothing of the team's objects is changed (no COMMENT, no new object).

When it was refreshed: PostgreSQL records no refresh time for a materialized view. dbops records its own refreshes in
``$DBOPS_HOME/maintain/<target>/matviews.json`` (:class:`MatviewState`): per view its OID, the time of the last
successful refresh, the method, seconds, rows and size, and the outcome of the last attempt. The freshness check
(:func:`assess`) reads that file, so it works outside a Dagster run too and does not depend on the run history
being kept. Consequences, on purpose: a refresh made outside dbops (``app.refresh_daily_sales()`` by hand) is not
seen, and a view whose OID changed (dropped and created again) has no known age; both count as stale until dbops
refreshes them, which is the safe side.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql

from dbops.errors import ConfigError, DbopsError
from dbops.pg.connect import server_version_num
from dbops.private import write_private
from dbops.redact import redact

LOCK_TIMEOUT_S = 2.0
STATE_FILE = "matviews.json"

CONCURRENTLY = "concurrently"
PLAIN = "plain"
REFRESHED = "refreshed"
SKIPPED = "skipped"
FAILED = "failed"

_VIEWS_SQL = """
SELECT n.nspname, c.relname, c.oid::bigint, pg_get_userbyid(c.relowner), c.relispopulated,
       (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_am am ON am.oid = ic.relam
         WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indisvalid AND am.amname = 'btree'
           AND i.indpred IS NULL AND i.indnatts > 0 AND 0 < ALL (i.indkey::int2[])
         ORDER BY ic.relname LIMIT 1),
       ARRAY(SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid AND i.indisunique ORDER BY ic.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'
  AND (cardinality(%(schemas)s::text[]) = 0 OR n.nspname = ANY (%(schemas)s::text[]))
ORDER BY n.nspname, c.relname
"""


class MatviewError(DbopsError):
    """A materialized view cannot be refreshed or checked as configured."""


@dataclass(frozen=True)
class MatView:
    schema: str
    name: str
    oid: int
    owner: str
    populated: bool
    unique_index: str | None  # a unique index CONCURRENTLY can use, if any
    unique_indexes: tuple[str, ...] = ()  # every unique index, usable or not

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def method(self) -> str:
        return CONCURRENTLY if self.populated and self.unique_index else PLAIN

    @property
    def why(self) -> str:
        """Why this method (one short phrase)."""
        if not self.populated:
            return "not populated yet (CONCURRENTLY needs a populated view)"
        if self.unique_index:
            return f"unique index {self.unique_index}"
        if self.unique_indexes:
            return (f"its unique index {', '.join(self.unique_indexes)} has a WHERE clause, an expression or is not "
                    "a valid immediate B-tree: CONCURRENTLY needs one on plain columns without WHERE")
        return "no unique index (CONCURRENTLY needs one on plain columns without WHERE)"


def find_views(conn: psycopg.Connection[Any], *, schemas: Sequence[str] = (),
               views: Sequence[str] = ()) -> list[MatView]:
    """The materialized views to refresh: ``views`` (``schema.view``, in that order), else every materialized view of
    ``schemas`` (empty: every user schema). A name in ``views`` that is not a materialized view raises
    :class:`ConfigError`."""
    rows = conn.execute(_VIEWS_SQL, {"schemas": [] if views else list(schemas)}).fetchall()
    found = {f"{r[0]}.{r[1]}": MatView(r[0], r[1], int(r[2]), r[3], bool(r[4]), r[5], tuple(r[6])) for r in rows}
    if not views:
        return list(found.values())
    missing = [v for v in views if v not in found]
    if missing:
        raise ConfigError(f"matviews.views names {', '.join(missing)}, not a materialized view of this database",
                          "fix the name (schema.view) in matviews.views (DBOPS_MATVIEWS), or leave it empty to refresh "
                          "every materialized view of the target's schemas")
    return [found[v] for v in dict.fromkeys(views)]


@dataclass
class RefreshResult:
    view: str
    oid: int
    method: str  # concurrently | plain
    status: str  # refreshed | skipped | failed
    why: str  # why this method
    seconds: float = 0.0
    rows: int | None = None
    bytes: int | None = None
    reason: str = ""  # why skipped or failed
    as_role: str = ""  # the role the refresh ran as
    refreshed_at: str | None = None  # ISO UTC time of the commit, when refreshed

    @property
    def ok(self) -> bool:
        return self.status == REFRESHED


def _rights(conn: psycopg.Connection[Any], view: MatView) -> tuple[str, bool, bool, bool]:
    """(current_user, may refresh directly, may SET ROLE to the owner, server >= 17)."""
    version = server_version_num(conn)
    row = conn.execute(
        "SELECT current_user, r.rolsuper, pg_has_role(current_user, c.relowner, 'USAGE'), "
        "pg_has_role(current_user, c.relowner, %s) "
        "FROM pg_roles AS r, pg_class AS c WHERE r.rolname = current_user AND c.oid = %s",
        ("SET" if version >= 160000 else "MEMBER", view.oid)).fetchone()
    if row is None:
        raise MatviewError(f"{view.qualified} disappeared while being refreshed", "run the refresh again")
    user, superuser, inherits, can_set = row
    maintain_ok = version >= 170000 and bool(
        conn.execute("SELECT has_table_privilege(%s::oid, 'MAINTAIN')", (view.oid,)).fetchone()[0])  # type: ignore[index]
    return user, bool(superuser or inherits or maintain_ok), bool(can_set), version >= 170000


def _holders(conn: psycopg.Connection[Any], oid: int) -> str:
    """The other sessions holding a lock on the view (pid, mode, how long their transaction has been open)."""
    rows = conn.execute(
        "SELECT l.pid, l.mode, coalesce(a.usename, '?'), extract(epoch FROM now() - a.xact_start)::int "
        "FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid "
        "WHERE l.locktype = 'relation' AND l.relation = %s AND l.granted AND l.pid <> pg_backend_pid() "
        "ORDER BY l.pid", (oid,)).fetchall()
    return ", ".join(f"pid {pid} ({user}, {mode}, transaction open {age if age is not None else '?'} s)"
                     for pid, mode, user, age in rows)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def refresh_view(conn: psycopg.Connection[Any], view: MatView, *,
                 lock_timeout_s: float = LOCK_TIMEOUT_S) -> RefreshResult:
    """Refresh one view (``conn`` in autocommit mode), never raising for the view's own problems: a busy view is
    ``skipped``, any other failure ``failed``, each with its one-line reason."""
    result = RefreshResult(view.qualified, view.oid, view.method, "", view.why)
    try:
        user, direct, can_set, v17 = _rights(conn, view)
    except (MatviewError, psycopg.Error) as exc:
        result.status, result.reason = FAILED, _first_line(exc)
        return result
    if not direct and not can_set:
        maintain = f", or GRANT MAINTAIN ON {view.qualified} TO {user}" if v17 else ""
        result.status, result.as_role = FAILED, user
        result.reason = (f"{user} may not refresh {view.qualified}: only its owner {view.owner} can — fix: "
                         f"GRANT {view.owner} TO {user}{maintain}, or connect as {view.owner}")
        return result
    result.as_role = user if direct else view.owner
    statement = sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(
        sql.SQL("CONCURRENTLY ") if view.method == CONCURRENTLY else sql.SQL(""),
        sql.Identifier(view.schema, view.name))
    timeout = f"{max(1, int(lock_timeout_s * 1000))}ms"
    started = time.monotonic()
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
            if not direct:
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(view.owner)))
            conn.execute(statement)
        result.seconds = time.monotonic() - started
    except errors.LockNotAvailable:
        result.seconds = time.monotonic() - started
        lock = "EXCLUSIVE" if view.method == CONCURRENTLY else "ACCESS EXCLUSIVE"
        holders = _holders(conn, view.oid)
        result.status = SKIPPED
        result.reason = (f"busy: no {lock} lock on {view.qualified} (or a table it reads) within {lock_timeout_s:g} s"
                         + (f"; held by {holders}" if holders else "") + "; retried on the next run")
        return result
    except errors.InsufficientPrivilege as exc:
        result.seconds = time.monotonic() - started
        result.status = FAILED
        result.reason = (f"{_first_line(exc)} — fix: the owner {view.owner} needs the privileges its query uses "
                         "(and TEMPORARY on the database for CONCURRENTLY)")
        return result
    except errors.CardinalityViolation as exc:
        result.seconds = time.monotonic() - started
        result.status = FAILED
        result.reason = f"{_first_line(exc)} — fix: CONCURRENTLY needs the query to return distinct rows"
        return result
    except psycopg.Error as exc:
        result.seconds = time.monotonic() - started
        result.status = FAILED
        result.reason = _first_line(exc)
        return result
    result.status = REFRESHED
    result.refreshed_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result.rows, result.bytes = _measure(conn, view, lock_timeout_s, None if direct else view.owner)
    return result


def _measure(conn: psycopg.Connection[Any], view: MatView, lock_timeout_s: float,
             role: str | None) -> tuple[int | None, int | None]:
    """Rows and total size (table, indexes, TOAST) after the refresh committed, read without holding its lock (as
    ``role`` when the refresh needed it); a lock not granted within the timeout leaves them unknown rather than
    waiting."""
    timeout = f"{max(1, int(lock_timeout_s * 1000))}ms"
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
            if role:
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            row = conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), pg_total_relation_size(%s)").format(
                sql.Identifier(view.schema, view.name)), (view.oid,)).fetchone()
    except psycopg.Error:
        return None, None
    return (int(row[0]), int(row[1])) if row else (None, None)


def refresh_views(conn: psycopg.Connection[Any], views: Sequence[MatView], *,
                  lock_timeout_s: float = LOCK_TIMEOUT_S, state: MatviewState | None = None) -> list[RefreshResult]:
    """Refresh each view in turn; the outcomes are recorded in ``state`` (when given) as they come, so a run that
    stops half-way keeps what it did."""
    results = []
    for view in views:
        result = refresh_view(conn, view, lock_timeout_s=lock_timeout_s)
        results.append(result)
        if state is not None:
            state.record(result)
    return results


@dataclass
class MatviewState:
    """The file where dbops keeps its refresh times (PostgreSQL has none): one JSON document per target."""

    path: Path
    database: str = ""

    @classmethod
    def of(cls, home: Path, target: str, database: str = "") -> MatviewState:
        return cls(Path(home) / "maintain" / target / STATE_FILE, database)

    def load(self) -> dict[str, dict[str, Any]]:
        """Per view (``schema.view``) what was recorded; an absent file is nothing recorded yet."""
        if not self.path.is_file():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise MatviewError(f"{self.path}: not a dbops refresh record ({exc})",
                               "delete it: the next refresh records every view again") from exc
        views = doc.get("views") if isinstance(doc, dict) else None
        if not isinstance(views, dict):
            raise MatviewError(f"{self.path}: not a dbops refresh record (no views)",
                               "delete it: the next refresh records every view again")
        return {str(k): v for k, v in views.items() if isinstance(v, dict)}

    def record(self, result: RefreshResult) -> None:
        views = self.load()
        entry = dict(views.get(result.view) or {})
        if entry.get("oid") != result.oid:  # another view of that name: what was recorded is not about it
            entry = {"oid": result.oid}
        entry["last_attempt_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        entry["last_status"], entry["last_reason"] = result.status, result.reason
        if result.ok:
            entry.update(refreshed_at=result.refreshed_at, method=result.method, seconds=round(result.seconds, 3),
                         rows=result.rows, bytes=result.bytes, as_role=result.as_role)
        views[result.view] = entry
        self.save(views)

    def save(self, views: Mapping[str, Mapping[str, Any]]) -> None:
        doc = {"database": self.database, "views": {k: dict(v) for k, v in sorted(views.items())}}
        write_private(self.path, json.dumps(doc, indent=2) + "\n")


@dataclass(frozen=True)
class Freshness:
    view: str
    refreshed_at: str | None
    age_hours: float | None  # None: no refresh by dbops known for this view
    last_status: str | None
    stale: bool
    failed: bool
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not (self.stale or self.failed)


@dataclass
class FreshnessReport:
    max_age_hours: float
    views: list[Freshness] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return len(self.views)

    @property
    def bad(self) -> list[Freshness]:
        return [f for f in self.views if not f.ok]

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.views]


def assess(views: Sequence[MatView], recorded: Mapping[str, Mapping[str, Any]], max_age_hours: float,
           now: dt.datetime | None = None) -> FreshnessReport:
    """How old each view is by dbops' record: stale when refreshed longer ago than ``max_age_hours`` or never (by
    dbops, for this OID); failed when the last attempt failed. A skip (busy) is not a failure by itself: the view
    fails only once it is also too old."""
    now = now or dt.datetime.now(dt.UTC)
    report = FreshnessReport(max_age_hours)
    for view in views:
        entry = recorded.get(view.qualified) or {}
        if entry.get("oid") != view.oid:
            entry = {}
        at = entry.get("refreshed_at")
        age = None
        if at:
            try:
                age = (now - dt.datetime.fromisoformat(at)).total_seconds() / 3600
            except (TypeError, ValueError):
                age = None
        status = entry.get("last_status")
        failed = status == FAILED
        stale = age is None or age > max_age_hours
        if failed:
            reason = f"last refresh failed: {entry.get('last_reason', '')}"
        elif age is None:
            reason = "never refreshed by dbops (PostgreSQL keeps no refresh time): age unknown"
        elif stale:
            reason = f"refreshed {age:.1f} h ago, more than {max_age_hours:g} h"
            if status == SKIPPED:
                reason += f"; last attempt skipped: {entry.get('last_reason', '')}"
        else:
            reason = ""
        report.views.append(Freshness(view.qualified, at, round(age, 3) if age is not None else None, status,
                                      stale, failed, reason))
    return report

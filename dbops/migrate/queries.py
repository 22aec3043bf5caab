"""Production's own statements, planned on the rehearsal copy before and after the pending migrations.

A migration that drops or renames a column, changes a type or drops an index passes every lint and applies cleanly,
and breaks (or slows down) the application's queries. pg_stat_statements on production knows those queries: each is
planned on the restored copy, never run, before and after the migrations. A statement that planned before and fails
after is broken (the rehearsal fails); one whose estimated cost grew by more than a factor is a regression (a
warning); one that did not plan before either (a temporary table, a relation of another database) is not judged.

Plans are generic (``EXPLAIN (GENERIC_PLAN)``; before PostgreSQL 16 a prepared statement with
``plan_cache_mode = force_generic_plan``): pg_stat_statements shows constants as ``$n``, so no value is guessed.
Each is planned in a read-only transaction that is always rolled back, with the search_path its role had in
production, so unqualified names resolve as they did there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream
from psycopg import sql

from dbops.pg.statements import Candidate, rank, top_statements
from dbops.redact import redact

PLAN_TIMEOUT = "10s"
FLYWAY_HISTORY = "flyway_schema_history"
SHORT = 160
SUMMARY_CHARS = 200
SUMMARY_NODES = 3
_CATALOGS = {"pg_catalog", "information_schema", "pg_toast"}
_PLANNABLE = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_GENERIC_PLAN_FROM = 160000  # EXPLAIN (GENERIC_PLAN) is PostgreSQL 16+
# Marked twice: PostgreSQL 18's pg_stat_statements drops a statement's leading comments from the text it records.
_EXPLAIN_GENERIC = sql.SQL("/* dbops:rehearsal */ EXPLAIN /* dbops:rehearsal */"
                           " (GENERIC_PLAN, VERBOSE, FORMAT JSON) {}")
_EXPLAIN_EXECUTE = sql.SQL("/* dbops:rehearsal */ EXPLAIN /* dbops:rehearsal */ (VERBOSE, FORMAT JSON) EXECUTE {}{}")

# The role's settings in this database win over its settings everywhere, which win over the database's.
_ROLE_PATHS = """
/* dbops:rehearsal */ SELECT r.rolname::text, cfg.value
FROM pg_roles AS r
JOIN pg_database AS d ON d.datname = current_database()
CROSS JOIN LATERAL (
    SELECT substr(c, length('search_path=') + 1) AS value
    FROM pg_db_role_setting AS s CROSS JOIN LATERAL unnest(s.setconfig) AS c
    WHERE c LIKE 'search\\_path=%%'
      AND ((s.setrole = r.oid AND s.setdatabase IN (0, d.oid))
           OR (s.setrole = 0 AND s.setdatabase = d.oid))
    ORDER BY (s.setrole = 0), (s.setdatabase = 0)
    LIMIT 1
) AS cfg
WHERE r.rolname = ANY(%s)
"""


@dataclass(frozen=True)
class RecordedStatement:
    """One application statement of production, as one role ran it."""

    queryid: str
    query: str  # redacted, with pg_stat_statements' $n for constants
    calls: int
    total_ms: float
    role: str
    search_path: str  # the role's effective search_path in production ("$user" replaced by the role)

    @property
    def key(self) -> str:
        """Unique per reading (a query id may be run by several roles): the key of :func:`plan_statements`."""
        return f"{self.queryid}/{self.role}"

    @property
    def short(self) -> str:
        return shorten(self.query)


@dataclass
class Recorded:
    statements: list[RecordedStatement] = field(default_factory=list)
    note: str = ""  # why there is nothing, when pg_stat_statements could not be read


@dataclass(frozen=True)
class Plan:
    cost: float | None  # the top node's Total Cost; None when it did not plan
    summary: str
    error: str | None = None  # first line of PostgreSQL's message with its SQLSTATE, redacted


@dataclass(frozen=True)
class Broken:
    statement: RecordedStatement
    error: str


@dataclass(frozen=True)
class Regression:
    statement: RecordedStatement
    before: Plan
    after: Plan
    ratio: float


@dataclass(frozen=True)
class NotJudged:
    statement: RecordedStatement
    reason: str


@dataclass
class Replay:
    """What the migrations did to production's statements on the copy."""

    planned: int  # statements planned before and after
    broken: list[Broken] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)
    not_judged: list[NotJudged] = field(default_factory=list)
    note: str = ""  # why nothing was checked, when nothing was
    factor: float = 2.0

    @property
    def nothing_checked(self) -> bool:
        return self.planned == 0

    def headline(self) -> str:
        if self.nothing_checked:
            return f"production statements: nothing replayed ({self.note or 'no statement planned'})"
        return (f"production statements: {self.planned} planned before and after, {len(self.broken)} broken, "
                f"{len(self.regressions)} costlier than x{self.factor:g}, {len(self.not_judged)} not judged")

    def lines(self) -> list[str]:
        """One line per finding, after a headline."""
        out = [self.headline()]
        out += [f"BROKEN ({b.statement.role}): {b.statement.short}: {b.error}" for b in self.broken]
        out += [f"COSTLIER x{r.ratio:.1f} ({r.statement.role}): {r.statement.short}: before {r.before.summary}; "
                f"after {r.after.summary}" for r in self.regressions]
        out += [f"NOT JUDGED ({n.statement.role}): {n.statement.short}: {n.reason}" for n in self.not_judged]
        return out

    def markdown(self) -> str:
        out = [self.headline()]
        if self.broken:
            out += ["", "| broken statement | role | calls | error after the migrations |", "|---|---|---:|---|"]
            out += [f"| {_cell(b.statement.short)} | {_cell(b.statement.role)} | {b.statement.calls:,} | "
                    f"{_cell(b.error)} |" for b in self.broken]
        if self.regressions:
            out += ["", "| costlier statement | role | calls | ratio | plan before | plan after |",
                    "|---|---|---:|---:|---|---|"]
            out += [f"| {_cell(r.statement.short)} | {_cell(r.statement.role)} | {r.statement.calls:,} | "
                    f"{r.ratio:.1f} | {_cell(r.before.summary)} | {_cell(r.after.summary)} |" for r in self.regressions]
        if self.not_judged:
            out += ["", "| not judged | role | why |", "|---|---|---|"]
            out += [f"| {_cell(n.statement.short)} | {_cell(n.statement.role)} | {_cell(n.reason)} |"
                    for n in self.not_judged]
        return "\n".join(out)


def shorten(text: str, width: int = SHORT) -> str:
    """One line, redacted, at most ``width`` characters."""
    one = " ".join(redact(text).split())
    return one if len(one) <= width else one[: width - 1] + "…"


def _cell(text: str) -> str:
    return redact(text).replace("|", "\\|")


# --- reading production ----------------------------------------------------------------------------------------------

def _walk(node: Any) -> Iterator[ast.Node]:
    if isinstance(node, ast.Node):
        yield node
        for name in node.__slots__:
            if name != "location":
                yield from _walk(getattr(node, name))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item)


def _relations(stmt: ast.Node) -> list[tuple[str | None, str]]:
    """(schema, name) of every relation the statement names, CTE names left out."""
    nodes = list(_walk(stmt))
    ctes = {n.ctename for n in nodes if isinstance(n, ast.CommonTableExpr)}
    return [(n.schemaname, n.relname) for n in nodes if isinstance(n, ast.RangeVar)
            and not (n.schemaname is None and n.relname in ctes)]


def _application(query: str, catalog_names: set[str]) -> bool:
    """Whether ``query`` is one plannable statement of the application's (not the catalog's, Flyway's or
    pg_stat_statements')."""
    try:
        parsed = parse_sql(query)
    except ParseError:
        return False
    if len(parsed) != 1 or not isinstance(parsed[0].stmt, _PLANNABLE):
        return False
    stmt = parsed[0].stmt
    if isinstance(stmt, ast.SelectStmt) and stmt.intoClause is not None:
        return False  # SELECT ... INTO creates a table: a utility statement
    relations = _relations(stmt)
    if any(name == FLYWAY_HISTORY or name.startswith("pg_stat_statements") for _, name in relations):
        return False
    return any(schema not in _CATALOGS if schema else name not in catalog_names for schema, name in relations)


def _split_path(value: str) -> list[str]:
    """The elements of a search_path value, quotes kept (``"$user", public`` -> ``['"$user"', 'public']``)."""
    items, current, quoted = [], "", False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current.strip())
    return items


def effective_path(conn: psycopg.Connection[Any], value: str, role: str) -> str:
    """``value`` with ``$user`` replaced by ``role`` (quoted), as PostgreSQL resolves it for that role."""
    user = sql.Identifier(role).as_string(conn)
    return ", ".join(user if item in ('"$user"', "$user") else item for item in _split_path(value))


def _server_path(conn: psycopg.Connection[Any]) -> str:
    """The server's own search_path: its configuration files', else the built-in default (not this session's role
    or database setting)."""
    row = conn.execute("/* dbops:rehearsal */ SELECT reset_val, source, boot_val FROM pg_settings"
                       " WHERE name = 'search_path'").fetchone()
    if row is None:
        return '"$user", public'
    if row[1] not in ("database", "user", "database user", "client", "session"):
        return str(row[0])
    try:
        with conn.transaction():
            found = conn.execute("/* dbops:rehearsal */ SELECT setting FROM pg_file_settings"
                                 " WHERE name = 'search_path' AND applied ORDER BY seqno DESC LIMIT 1").fetchone()
    except psycopg.Error:  # pg_file_settings is for superusers (and pg_read_all_settings)
        found = None
    return str(found[0]) if found else str(row[2])


def _unavailable(conn: psycopg.Connection[Any]) -> str:
    """Why pg_stat_statements cannot be read in this database, or ''."""
    loaded, created = conn.execute(
        "/* dbops:rehearsal */ SELECT 'pg_stat_statements' = ANY(string_to_array(replace("
        "current_setting('shared_preload_libraries'), ' ', ''), ',')),"
        " EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_stat_statements')").fetchone()  # type: ignore[misc]
    if not loaded:
        return ("pg_stat_statements is not loaded on production (add it to shared_preload_libraries and restart): "
                "no recorded statement to replay")
    if not created:
        return ("pg_stat_statements is not created in production's database (CREATE EXTENSION pg_stat_statements): "
                "no recorded statement to replay")
    return ""


def recorded_statements(conn: psycopg.Connection[Any], *, limit: int = 200,
                        exclude_roles: Sequence[str] = ()) -> Recorded:
    """Production's top application statements (this database, top level, by calls and by total time), at most
    ``limit``, each with the role that ran it and that role's search_path. Never raises on a missing
    pg_stat_statements: the result is empty and its ``note`` says why."""
    try:
        with conn.transaction():
            note = _unavailable(conn)
            if note:
                return Recorded([], note)
            candidates = top_statements(conn, exclude_roles, per_role=True)
            catalog_names = {str(r[0]) for r in conn.execute(
                "/* dbops:rehearsal */ SELECT relname::text FROM pg_class"
                " WHERE relnamespace = 'pg_catalog'::regnamespace").fetchall()}
            kept: list[Candidate] = [c for c in candidates if _application(c.query, catalog_names)]
            chosen = rank(kept, limit)
            roles = sorted({c.role for c in chosen})
            paths = {str(r): str(v) for r, v in conn.execute(_ROLE_PATHS, [roles]).fetchall()}
            default = _server_path(conn) if len(paths) < len(roles) else ""
            return Recorded([RecordedStatement(c.queryid, c.query, c.calls, round(c.total_ms, 3), c.role,
                                               effective_path(conn, paths.get(c.role, default), c.role))
                             for c in chosen])
    except psycopg.Error as exc:
        return Recorded([], f"cannot read pg_stat_statements on production ({error_line(exc)}): "
                            "no recorded statement to replay")


# --- planning on the copy --------------------------------------------------------------------------------------------

def error_line(exc: BaseException) -> str:
    """The first line of PostgreSQL's message with its SQLSTATE, redacted."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    state = getattr(exc, "sqlstate", None)
    return redact(f"{first} (SQLSTATE {state})" if state else first)


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans") or ():
        yield from _nodes(child)


def _describe(node: dict[str, Any]) -> str:
    kind = str(node.get("Node Type", "?"))
    if kind == "ModifyTable" and node.get("Operation"):
        kind = str(node["Operation"])
    if node.get("Index Name"):
        kind += f" using {node['Index Name']}"
    if node.get("Relation Name"):
        name = node["Relation Name"]
        kind += f" on {node['Schema']}.{name}" if node.get("Schema") else f" on {name}"
    if node.get("Subplans Removed"):  # before PostgreSQL 16 the NULL parameters prune partitions at executor start
        kind += f" ({node['Subplans Removed']} partitions pruned at start)"
    return kind


def plan_of(explained: Any) -> Plan:
    """A Plan from EXPLAIN (FORMAT JSON)'s output: the top node's total cost and the first few nodes."""
    doc = json.loads(explained) if isinstance(explained, str) else explained
    top = doc[0]["Plan"]
    cost = float(top["Total Cost"])
    nodes = [_describe(n) for n in _nodes(top)]
    text = " -> ".join(nodes[:SUMMARY_NODES]) + (" -> …" if len(nodes) > SUMMARY_NODES else "")
    tail = f"; cost {cost:.2f}"
    if len(text) + len(tail) > SUMMARY_CHARS:
        text = text[: SUMMARY_CHARS - len(tail) - 1] + "…"
    return Plan(cost, redact(text + tail), None)


def _deallocate(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop the fallback's prepared statement: it outlives the transaction that made it, rolled back or not."""
    if conn.closed or conn.info.server_version >= _GENERIC_PLAN_FROM:
        return
    if conn.execute("/* dbops:rehearsal */ SELECT EXISTS (SELECT FROM pg_prepared_statements WHERE name = %s)",
                    [name]).fetchone()[0]:  # type: ignore[index]
        conn.execute(sql.SQL("/* dbops:rehearsal */ DEALLOCATE {}").format(sql.Identifier(name)))


def _typed(query: str) -> str | None:
    """``query`` with pg_stat_statements' normalized typed literals (``interval $2``, from ``interval '1 day'``) made
    valid SQL (``CAST($2 AS interval)``) by pglast, which parses normalized texts; None when that changes nothing."""
    try:
        text = RawStream()(query)
    except Exception:  # noqa: BLE001 - pglast cannot deparse it: keep the error PostgreSQL gave
        return None
    return text if text != query else None


def _explain(conn: psycopg.Connection[Any], query: str, search_path: str, name: str) -> Any:
    """EXPLAIN's JSON of one statement's generic plan (PREPARE + EXECUTE before PostgreSQL 16); raises psycopg.Error.
    The statement text is the database's own SQL, from pg_stat_statements: planned only, in a read-only transaction
    that is rolled back."""
    text = sql.SQL(query.strip().rstrip(";").rstrip())  # type: ignore[arg-type]
    with conn.transaction(force_rollback=True):
        conn.execute("/* dbops:rehearsal */ SET TRANSACTION READ ONLY")
        conn.execute(sql.SQL("/* dbops:rehearsal */ SET LOCAL statement_timeout = {}").format(
            sql.Literal(PLAN_TIMEOUT)))
        conn.execute("/* dbops:rehearsal */ SELECT set_config('search_path', %s, true)", [search_path])
        if conn.info.server_version >= _GENERIC_PLAN_FROM:
            return conn.execute(_EXPLAIN_GENERIC.format(text)).fetchone()[0]  # type: ignore[index]
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("/* dbops:rehearsal */ PREPARE {} AS {}").format(ident, text))
        conn.execute("/* dbops:rehearsal */ SET LOCAL plan_cache_mode = force_generic_plan")
        count = conn.execute("/* dbops:rehearsal */ SELECT coalesce(cardinality(parameter_types), 0)"
                             " FROM pg_prepared_statements WHERE name = %s", [name]).fetchone()[0]  # type: ignore[index]
        args = sql.SQL("({})").format(sql.SQL(", ").join([sql.NULL] * int(count))) if count else sql.SQL("")
        return conn.execute(_EXPLAIN_EXECUTE.format(ident, args)).fetchone()[0]  # type: ignore[index]


def plan_statements(conn: psycopg.Connection[Any], statements: Sequence[RecordedStatement]) -> dict[str, Plan]:
    """Each statement's generic plan on the database of ``conn`` (the copy), by :attr:`RecordedStatement.key`.

    ``conn`` must not be inside a transaction (each plan is its own read-only transaction, rolled back). A statement
    that does not plan gets a Plan with its ``error``; nothing is executed, nothing is left behind."""
    plans: dict[str, Plan] = {}
    for i, stmt in enumerate(statements):
        name = f"dbops_rehearsal_{i}"
        try:
            try:
                plans[stmt.key] = plan_of(_explain(conn, stmt.query, stmt.search_path, name))
            except psycopg.errors.SyntaxError:
                typed = _typed(stmt.query)
                if typed is None:
                    raise
                _deallocate(conn, name)
                plans[stmt.key] = plan_of(_explain(conn, typed, stmt.search_path, name))
        except psycopg.Error as exc:
            if conn.closed:
                raise
            plans[stmt.key] = Plan(None, "", error_line(exc))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            plans[stmt.key] = Plan(None, "", f"unreadable EXPLAIN output ({type(exc).__name__})")
        finally:
            _deallocate(conn, name)
    return plans


# --- judging ---------------------------------------------------------------------------------------------------------

def compare(recorded: Recorded, before: dict[str, Plan], after: dict[str, Plan], *, factor: float = 2.0) -> Replay:
    """Broken (planned before, fails after), regressions (cost after > ``factor`` x cost before) and statements not
    judged (did not plan before the migrations either)."""
    replay = Replay(planned=0, factor=factor)
    for stmt in recorded.statements:
        old, new = before.get(stmt.key), after.get(stmt.key)
        if old is None or new is None:
            replay.not_judged.append(NotJudged(stmt, "not planned " + ("before" if old is None else "after")
                                               + " the migrations"))
            continue
        if old.error is not None or old.cost is None:
            replay.not_judged.append(NotJudged(stmt, f"does not plan before the migrations either: {old.error}"))
            continue
        replay.planned += 1
        if new.error is not None or new.cost is None:
            replay.broken.append(Broken(stmt, new.error or "no plan after the migrations"))
        elif old.cost > 0 and new.cost > factor * old.cost:
            replay.regressions.append(Regression(stmt, old, new, round(new.cost / old.cost, 2)))
    if replay.nothing_checked:
        replay.note = recorded.note or (
            f"none of the {len(recorded.statements)} recorded statements plans on the copy before the migrations"
            if recorded.statements else "pg_stat_statements holds no application statement of production")
    replay.regressions.sort(key=lambda r: -r.ratio)
    return replay

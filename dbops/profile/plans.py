"""Plans of the top statements and the anti-patterns they show.

``EXPLAIN ANALYZE`` *executes* the statement: on the managed database a text calling ``pg_terminate_backend`` would
kill sessions with the profiler's superuser rights. So on the managed database nothing is ever executed: plain
``EXPLAIN (FORMAT JSON)``, and ``GENERIC_PLAN`` for a parameterised text (``$1``, as pg_stat_statements normalizes
constants; PostgreSQL 16+, on 15 such a text is skipped with a note). ``ANALYZE`` (``analyze=True``) is for a scratch
copy only. Every plan is taken inside :func:`sandbox`: BEGIN ... ROLLBACK, read-only, a statement timeout, as the
statement's own role (``pg_stat_statements.userid``); what is executed must also call no volatile or user-defined
function (:func:`unsafe_functions`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor
from psycopg import sql

from dbops.pg.connect import server_version_num
from dbops.profile.candidates import ColumnResolver, analyze_statement
from dbops.redact import redact

LARGE_TABLE_ROWS = 10_000
SELECTIVE_FRACTION = 0.1
MISESTIMATE_FACTOR = 10
EXPLAIN_TIMEOUT_MS = 5_000
_PARAM = re.compile(r"\$\d+")
GENERIC_PLAN_VERSION = 160000
_EXPLAINABLE = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


@dataclass
class PlanReport:
    query: str
    mode: str  # plain | generic | analyze | none
    flags: list[str] = field(default_factory=list)
    total_cost: float = 0.0
    error: str | None = None


@contextmanager
def sandbox(conn: psycopg.Connection[Any], role: str | None, timeout_ms: int) -> Iterator[None]:
    """A transaction that is rolled back, read-only, bounded by ``timeout_ms``, running as ``role`` (the role that
    ran the statement: on the same server it can do no more than that role could already). The connection must be
    in autocommit mode."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        limit = sql.Literal(f"{timeout_ms}ms")
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(limit))
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(limit))
        if role:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        yield


class _Functions(Visitor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.names: list[tuple[str, ...]] = []

    def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:  # noqa: N802 - pglast's naming
        self.names.append(tuple(part.sval for part in node.funcname))


def single_statement(query: str) -> ast.Node | None:
    """The statement when ``query`` is exactly one SELECT/INSERT/UPDATE/DELETE/MERGE (what EXPLAIN may wrap)."""
    try:
        parsed = parse_sql(query)
    except ParseError:
        return None
    if len(parsed) != 1 or not isinstance(parsed[0].stmt, _EXPLAINABLE):
        return None
    return parsed[0].stmt


def unsafe_functions(conn: psycopg.Connection[Any], query: str) -> list[str]:
    """Functions the statement calls that dbops will not execute: volatile ones (pg_terminate_backend, set_config,
    nextval...), any defined outside pg_catalog (user code can do anything), and names the catalog does not know."""
    stmt = single_statement(query)
    if stmt is None:
        return ["(not a single statement)"]
    finder = _Functions()
    finder(stmt)
    unsafe = []
    for name in dict.fromkeys(finder.names):
        schema, func = (name[-2] if len(name) > 1 else None), name[-1]
        rows = conn.execute(
            "SELECT n.nspname, p.provolatile FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
            " WHERE p.proname = %s AND (%s::text IS NULL OR n.nspname = %s)", (func, schema, schema),
        ).fetchall()
        if not rows or any(nsp != "pg_catalog" or vol == "v" for nsp, vol in rows):
            unsafe.append(".".join(name))
    return unsafe


def _table_rows(conn: psycopg.Connection[Any], schema: str | None, relation: str) -> float:
    row = conn.execute(
        "SELECT greatest(c.reltuples, 0) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND (%s::text IS NULL OR n.nspname = %s)",
        (relation, schema, schema),
    ).fetchone()
    return float(row[0]) if row else 0.0


def anti_patterns(conn: psycopg.Connection[Any], plan: dict[str, Any], analyzed: bool) -> list[str]:
    """Seq scans of large tables under a selective filter, sorts/hashes spilling to disk, misestimates >= 10x."""
    flags: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node.get("Node Type", "")
        if kind == "Seq Scan" and node.get("Filter"):
            rows = _table_rows(conn, node.get("Schema"), node.get("Relation Name", ""))
            out = node.get("Actual Rows", node.get("Plan Rows", 0)) if analyzed else node.get("Plan Rows", 0)
            if rows >= LARGE_TABLE_ROWS and out <= rows * SELECTIVE_FRACTION:
                flags.append(f"seq scan of {node.get('Relation Name')} ({rows:,.0f} rows) under a selective filter"
                             f" {node['Filter']}")
        if node.get("Sort Space Type") == "Disk":
            flags.append(f"sort spilled to disk ({node.get('Sort Space Used', '?')} kB)")
        if kind == "Hash" and int(node.get("Hash Batches", 1)) > 1:
            flags.append(f"hash spilled to disk ({node['Hash Batches']} batches)")
        if analyzed and node.get("Actual Loops", 0):
            est, act = max(node.get("Plan Rows", 0), 1), max(node.get("Actual Rows", 0), 1)
            if max(est / act, act / est) >= MISESTIMATE_FACTOR:
                flags.append(f"{kind}: estimated {node.get('Plan Rows')} rows, got {node.get('Actual Rows')}")
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan)
    return flags


def explain(conn: psycopg.Connection[Any], query: str, *, role: str | None = None, analyze: bool = False,
            timeout_ms: int = EXPLAIN_TIMEOUT_MS) -> PlanReport:
    """The plan of one statement, taken in :func:`sandbox` as ``role``; the connection must be in autocommit mode.

    ``analyze=True`` executes the statement and is meant for a scratch copy only: it also needs ``role``, a read-only
    statement without parameters, and no volatile or user-defined function call.
    """
    stmt = single_statement(query)
    if stmt is None:
        return PlanReport(query, "none", error="not a single SELECT, INSERT, UPDATE, DELETE or MERGE")
    parameterized = bool(_PARAM.search(query))
    if analyze:
        shape = analyze_statement(ColumnResolver(conn), query)
        refused = ("no role to run it as" if not role else
                   "parameterised (ANALYZE needs values)" if parameterized else
                   "it writes" if shape is None or not shape.read_only else None)
        unsafe = [] if refused else unsafe_functions(conn, query)
        if refused or unsafe:
            return PlanReport(query, "none", error="not executed: " + (refused or "calls " + ", ".join(unsafe)))
        mode, options = "analyze", "FORMAT JSON, ANALYZE, BUFFERS"
    elif parameterized:
        if server_version_num(conn) < GENERIC_PLAN_VERSION:
            return PlanReport(query, "none", error="$n parameters need EXPLAIN (GENERIC_PLAN), PostgreSQL 16+")
        mode, options = "generic", "FORMAT JSON, GENERIC_PLAN"
    else:
        mode, options = "plain", "FORMAT JSON"
    report = PlanReport(query, mode)
    try:
        with sandbox(conn, role, timeout_ms):
            text = sql.SQL("EXPLAIN ({}) {}").format(sql.SQL(options), sql.SQL(query))  # type: ignore[arg-type]
            plan = conn.execute(text).fetchone()[0][0]  # type: ignore[index]
    except psycopg.Error as exc:
        report.mode, report.error = "none", redact(str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        return report
    report.total_cost = float(plan["Plan"].get("Total Cost", 0))
    report.flags = anti_patterns(conn, plan["Plan"], mode == "analyze")
    return report


def explain_top(conn: psycopg.Connection[Any], statements: list[Any],
                progress: Callable[[str], None] | None = None) -> dict[str, PlanReport]:
    """Plans (never executions: this is the managed database) of the given statements (``StatementStats``), keyed
    by statement key, each taken as the role that ran it (``progress``: told when it starts and what it found)."""
    say = progress or (lambda message: None)
    started = time.monotonic()
    say(f"explaining {len(statements)} statements (EXPLAIN without ANALYZE: nothing is executed)")
    resolver = ColumnResolver(conn)
    out = {}
    for stmt in statements:
        if analyze_statement(resolver, stmt.query) is None:
            continue  # utility statements (BEGIN, SET...) have no plan worth reading
        out[stmt.key] = explain(conn, stmt.query, role=getattr(stmt, "role", "") or None)
    flags = sum(len(p.flags) for p in out.values())
    say(f"explained {len(out)} of {len(statements)} statements: {flags} plan flags "
        f"({time.monotonic() - started:.1f} s)")
    return out

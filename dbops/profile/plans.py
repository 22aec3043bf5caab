"""Plans of the top statements and the anti-patterns they show.

Parameterized statements (``$1``, as pg_stat_statements normalizes them) get ``EXPLAIN (GENERIC_PLAN)``: nothing
runs. Only read-only statements are ever executed by ``EXPLAIN (ANALYZE, BUFFERS)``, and then inside a READ ONLY
transaction with a statement timeout, rolled back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

LARGE_TABLE_ROWS = 10_000
SELECTIVE_FRACTION = 0.1
MISESTIMATE_FACTOR = 10
EXPLAIN_TIMEOUT_MS = 5_000
_PARAM = re.compile(r"\$\d+")


@dataclass
class PlanReport:
    query: str
    mode: str  # generic | analyze | none
    flags: list[str] = field(default_factory=list)
    total_cost: float = 0.0
    error: str | None = None


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


def explain(conn: psycopg.Connection[Any], query: str, read_only: bool,
            timeout_ms: int = EXPLAIN_TIMEOUT_MS) -> PlanReport:
    """EXPLAIN a statement safely; the connection must be in autocommit mode."""
    parameterized = bool(_PARAM.search(query))
    if parameterized:
        mode, options = "generic", "FORMAT JSON, GENERIC_PLAN"
    elif read_only:
        mode, options = "analyze", "FORMAT JSON, ANALYZE, BUFFERS"
    else:
        mode, options = "generic", "FORMAT JSON"
    report = PlanReport(query, mode)
    try:
        with conn.transaction(force_rollback=True):
            if mode == "analyze":
                conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{timeout_ms}ms")))
            stmt = sql.SQL("EXPLAIN ({}) {}").format(sql.SQL(options), sql.SQL(query))  # type: ignore[arg-type]
            plan = conn.execute(stmt).fetchone()[0][0]  # type: ignore[index]
    except psycopg.Error as exc:
        report.mode, report.error = "none", str(exc).strip().splitlines()[0]
        return report
    report.total_cost = float(plan["Plan"].get("Total Cost", 0))
    report.flags = anti_patterns(conn, plan["Plan"], mode == "analyze")
    return report


def explain_top(conn: psycopg.Connection[Any], statements: list[Any]) -> dict[str, PlanReport]:
    """Plans of the given statements (``StatementStats``), keyed by statement key; read-only decided by pglast."""
    from dbops.profile.candidates import ColumnResolver, analyze_statement

    resolver = ColumnResolver(conn)
    out = {}
    for stmt in statements:
        shape = analyze_statement(resolver, stmt.query)
        if shape is None:
            continue  # utility statements (BEGIN, SET...) have no plan worth reading
        out[stmt.key] = explain(conn, stmt.query, shape.read_only)
    return out

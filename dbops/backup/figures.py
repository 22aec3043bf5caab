"""Row counts and content checksums per table, taken in a given snapshot and compared after a restore."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

LEAF_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
ORDER BY 1, 2
"""


def table_figures(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """For every ordinary table (partitions included, parents excluded): rows and an order-independent checksum."""
    out = {}
    for schema, table in conn.execute(LEAF_TABLES).fetchall():
        row = conn.execute(
            sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text FROM {} AS t")
            .format(sql.Identifier(schema, table))
        ).fetchone()
        out[f"{schema}.{table}"] = {"rows": int(row[0]), "checksum": row[1]}  # type: ignore[index]
    return out


def compare_figures(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list[str]:
    """Every table whose rows or checksum differ, or that is missing or extra, one line each."""
    problems = []
    for table in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(table), actual.get(table)
        if got is None:
            problems.append(f"{table} missing after restore")
        elif want is None:
            problems.append(f"{table} present after restore but not in the backup")
        elif want["rows"] != got["rows"]:
            problems.append(f"{table}: {got['rows']} rows restored, {want['rows']} backed up")
        elif want["checksum"] != got["checksum"]:
            problems.append(f"{table}: content checksum differs ({want['rows']} rows)")
    return problems

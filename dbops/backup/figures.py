"""Row counts and content checksums per table, taken in a given snapshot and compared after a restore.

The checksum is the sum of a 64-bit hash of each row's text form: order-independent, so a restore that loads rows in
another order still matches. The hashes are summed as bigint (PostgreSQL accumulates ``sum(bigint)`` in 128-bit
integers and returns an exact numeric), which gives the same value as summing them as numeric at a fraction of the
cost.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

LEAF_TABLES = """
SELECT n.nspname, c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
ORDER BY 3 DESC, 1, 2
"""

TABLE_FIGURE = "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} AS t"


def leaf_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    """Every ordinary table (partitions included, parents excluded) with its size, largest first."""
    return [(schema, table, int(size)) for schema, table, size in conn.execute(LEAF_TABLES).fetchall()]


def table_figure(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, Any]:
    """Rows and the order-independent content checksum of one table, in one scan."""
    row = conn.execute(sql.SQL(TABLE_FIGURE).format(sql.Identifier(schema, table))).fetchone()
    return {"rows": int(row[0]), "checksum": row[1]}  # type: ignore[index]


def table_figures(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """For every ordinary table (partitions included, parents excluded): rows and an order-independent checksum."""
    figures = {f"{schema}.{table}": table_figure(conn, schema, table) for schema, table, _ in leaf_tables(conn)}
    return dict(sorted(figures.items()))


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

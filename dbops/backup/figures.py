"""Row counts and content checksums per table, taken in a given snapshot and compared after a restore.

The checksum is the sum of a 64-bit hash of every row: order-independent, so a restore that loads rows in another
order still matches. The row hash is ``hash_record_extended(row)``, which hashes every column with its type's own
hash function (two to three times cheaper than rendering the row as text, and independent of session settings such as
TimeZone or DateStyle). A table with a column type that has no hash function (``point``, say), or whose hash is of an
OID a restore renumbers (an enum, ``regclass`` and the other ``reg*`` types, also inside a domain, array, range or
composite), is hashed through its text form instead, ``hashtextextended(row::text)``, the method backups made before
used for every table; each table's figures name the method (``"hash"``, absent meaning text), and a drill recomputes
with the same one. The hashes are summed as bigint: PostgreSQL accumulates ``sum(bigint)`` exactly in 128-bit
integers.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

LEAF_TABLES = """
SELECT n.nspname, c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
ORDER BY 3 DESC, 1, 2
"""

ROW_HASHES = {
    "record": "SELECT count(*), coalesce(sum(hash_record_extended(t, 0)), 0)::text FROM {} AS t",
    "text": "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} AS t",
}

# Whether a table has a column whose hash_record_extended is a hash of OIDs (hashenum hashes the label's pg_enum OID,
# reg* types are OIDs): the same rows restored elsewhere get other OIDs, so the text form is hashed instead. Follows
# domains, arrays, ranges, multiranges and composite types down to their elements.
OID_VALUED = """
WITH RECURSIVE t(oid) AS (
    SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
    UNION
    SELECT c.child FROM t JOIN pg_type ty ON ty.oid = t.oid CROSS JOIN LATERAL (
        SELECT nullif(ty.typbasetype, 0) UNION ALL SELECT nullif(ty.typelem, 0)
        UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = ty.oid
        UNION ALL SELECT r.rngtypid FROM pg_range r WHERE r.rngmultitypid = ty.oid
        UNION ALL SELECT a.atttypid FROM pg_attribute a
         WHERE ty.typrelid <> 0 AND a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped
    ) AS c(child) WHERE c.child IS NOT NULL
)
SELECT EXISTS (SELECT FROM t JOIN pg_type ty ON ty.oid = t.oid JOIN pg_namespace n ON n.oid = ty.typnamespace
               WHERE ty.typtype = 'e' OR (n.nspname = 'pg_catalog' AND ty.typname LIKE 'reg%%'))
"""


def leaf_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    """Every ordinary table (partitions included, parents excluded) with its size, largest first."""
    return [(schema, table, int(size)) for schema, table, size in conn.execute(LEAF_TABLES).fetchall()]


def table_figure(conn: psycopg.Connection[Any], schema: str, table: str, row_hash: str = "record") -> dict[str, Any]:
    """Rows and the order-independent content checksum of one table, in one scan.

    ``row_hash="record"`` falls back to ``"text"`` when a column type cannot be hashed; the result names the one used.
    """
    if row_hash not in ROW_HASHES:
        raise ValueError(f"unknown row hash {row_hash!r}")
    query = sql.SQL(ROW_HASHES[row_hash]).format(sql.Identifier(schema, table))
    if row_hash == "record" and conn.execute(OID_VALUED, [sql.Identifier(schema, table).as_string(conn)]
                                             ).fetchone()[0]:  # type: ignore[index]
        return table_figure(conn, schema, table, "text")
    if row_hash == "record":
        try:
            with conn.transaction():  # a savepoint inside the backup's snapshot transaction
                row = conn.execute(query).fetchone()
        except psycopg.errors.UndefinedFunction:  # "could not identify a hash function for type ..."
            return table_figure(conn, schema, table, "text")
    else:
        row = conn.execute(query).fetchone()
    return {"rows": int(row[0]), "checksum": row[1], "hash": row_hash}  # type: ignore[index]


def table_figures(conn: psycopg.Connection[Any],
                  methods: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """For every ordinary table (partitions included, parents excluded): rows and an order-independent checksum.

    ``methods`` maps "schema.table" to the row hash to use (a manifest's, to compare with it); default ``record``.
    """
    methods = methods or {}
    figures = {f"{schema}.{table}": table_figure(conn, schema, table, methods.get(f"{schema}.{table}", "record"))
               for schema, table, _ in leaf_tables(conn)}
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


def compare_tables(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The comparison of :func:`compare_figures`, one row per table: ``table``, ``rows_backed_up``,
    ``rows_restored`` (None when the table is absent on that side), ``result`` (``match``, ``rows differ``,
    ``content differs``, ``missing`` after the restore, ``extra``: not in the backup) and ``matches``; the tables
    that do not match first."""
    rows = []
    for table in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(table), actual.get(table)
        if got is None:
            verdict = "missing"
        elif want is None:
            verdict = "extra"
        elif want["rows"] != got["rows"]:
            verdict = "rows differ"
        elif want["checksum"] != got["checksum"]:
            verdict = "content differs"
        else:
            verdict = "match"
        rows.append({"table": table, "rows_backed_up": want["rows"] if want else None,
                     "rows_restored": got["rows"] if got else None, "result": verdict,
                     "matches": verdict == "match"})
    return sorted(rows, key=lambda r: r["matches"])  # stable: the differing ones first, each part by name


def hash_methods(figures: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The row hash each table's checksum was made with (manifests from before ``hash`` existed used text)."""
    return {table: str(figure.get("hash", "text")) for table, figure in figures.items()}

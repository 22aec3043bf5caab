"""Findings about existing indexes: unused, duplicate or redundant, and foreign keys no index serves.

Partitioned tables are judged on the parent: its index (relkind ``I``) stands for the partitions' indexes, and a
foreign key inherited by a partition (``conparentid <> 0``) is the parent's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

UNUSED_MAX_SCANS = 50
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


@dataclass(frozen=True)
class IndexInfo:
    schema: str
    table: str
    name: str
    columns: tuple[str, ...]  # expressions appear as their text
    method: str
    predicate: str | None
    unique: bool
    backs_constraint: bool
    scans: int
    size_bytes: int
    definition: str
    oid: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Finding:
    kind: str  # unused | duplicate | redundant | unindexed_fk
    table: str
    detail: str
    size_bytes: int = 0
    index: str | None = None


def list_indexes(conn: psycopg.Connection[Any]) -> list[IndexInfo]:
    """Every index of user tables (partition-level indexes are summed into their parent's scans and size)."""
    rows = conn.execute(
        """
        WITH idx AS (
            SELECT i.indexrelid, i.indrelid, i.indisunique, i.indnkeyatts, i.indkey, i.indpred IS NOT NULL AS partial
            FROM pg_index AS i
            JOIN pg_class AS t ON t.oid = i.indrelid
            WHERE NOT t.relispartition
        ), usage AS (
            SELECT idx.indexrelid,
                   coalesce(sum(s.idx_scan), 0) AS scans,
                   coalesce(sum(pg_relation_size(d.oid)), 0) AS size
            FROM idx
            LEFT JOIN LATERAL (
                SELECT idx.indexrelid AS oid
                UNION ALL
                SELECT inhrelid FROM pg_inherits WHERE inhparent = idx.indexrelid
            ) AS d ON true
            LEFT JOIN pg_stat_all_indexes AS s ON s.indexrelid = d.oid
            GROUP BY idx.indexrelid
        )
        SELECT n.nspname, t.relname, c.relname,
               ARRAY(SELECT pg_get_indexdef(idx.indexrelid, k, true)
                     FROM generate_series(1, idx.indnkeyatts) AS k ORDER BY k),
               am.amname, pg_get_expr(i.indpred, i.indrelid, true), idx.indisunique,
               EXISTS (SELECT 1 FROM pg_constraint AS con WHERE con.conindid = idx.indexrelid
                       AND con.contype IN ('p', 'u', 'x')),
               u.scans, u.size, pg_get_indexdef(idx.indexrelid), idx.indexrelid::int8
        FROM idx
        JOIN pg_index AS i ON i.indexrelid = idx.indexrelid
        JOIN pg_class AS c ON c.oid = idx.indexrelid
        JOIN pg_class AS t ON t.oid = idx.indrelid
        JOIN pg_namespace AS n ON n.oid = t.relnamespace
        JOIN pg_am AS am ON am.oid = c.relam
        JOIN usage AS u ON u.indexrelid = idx.indexrelid
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
        ORDER BY 1, 2, 3
        """
    ).fetchall()
    return [
        IndexInfo(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], r[6], r[7], int(r[8]), int(r[9]), r[10], int(r[11]))
        for r in rows
    ]


def unused_indexes(indexes: list[IndexInfo], max_scans: int = UNUSED_MAX_SCANS) -> list[Finding]:
    """Non-unique indexes that back no constraint and were (almost) never scanned since the stats reset."""
    found = [
        Finding("unused", f"{i.schema}.{i.table}", f"{i.scans} scans since the stats reset", i.size_bytes, i.qualified)
        for i in indexes
        if not i.unique and not i.backs_constraint and i.scans <= max_scans
    ]
    return sorted(found, key=lambda f: f.size_bytes, reverse=True)


def duplicate_indexes(indexes: list[IndexInfo]) -> list[Finding]:
    """An index whose columns equal (duplicate) or lead (redundant) another's, same method and predicate.

    Of two identical indexes the newer one (higher OID) is reported, unless the other backs a constraint.
    """
    found = []
    for a in indexes:
        if a.backs_constraint:
            continue  # dropping it would drop a constraint: report the other one instead
        for b in indexes:
            if a is b or (a.schema, a.table, a.method, a.predicate) != (b.schema, b.table, b.method, b.predicate):
                continue
            if a.method not in ("btree", "hash") and a.columns != b.columns:
                continue
            if a.unique and not (b.unique and b.columns == a.columns):
                continue  # a unique index enforces something a longer one does not
            if a.columns == b.columns and (b.backs_constraint or b.unique or a.oid > b.oid):
                found.append(Finding("duplicate", f"{a.schema}.{a.table}",
                                     f"same columns as {b.qualified} ({', '.join(a.columns)})", a.size_bytes,
                                     a.qualified))
                break
            if len(a.columns) < len(b.columns) and b.columns[: len(a.columns)] == a.columns and a.method == "btree":
                found.append(Finding("redundant", f"{a.schema}.{a.table}",
                                     f"({', '.join(a.columns)}) is a leading prefix of {b.qualified}"
                                     f" ({', '.join(b.columns)})", a.size_bytes, a.qualified))
                break
    return found


def unindexed_foreign_keys(conn: psycopg.Connection[Any]) -> list[Finding]:
    """Foreign keys whose columns are not the leading columns (in any order) of an index on the referencing table."""
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || t.relname, con.conname,
               ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord)
        FROM pg_constraint AS con
        JOIN pg_class AS t ON t.oid = con.conrelid
        JOIN pg_namespace AS n ON n.oid = t.relnamespace
        WHERE con.contype = 'f' AND con.conparentid = 0 AND NOT t.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT EXISTS (
              SELECT 1 FROM pg_index AS i
              WHERE i.indrelid = con.conrelid AND i.indpred IS NULL
                AND (SELECT array_agg(x ORDER BY x) FROM unnest(con.conkey) AS x)
                    = (SELECT array_agg(x ORDER BY x)
                       FROM unnest((i.indkey::int2[])[0:cardinality(con.conkey) - 1]) AS x)
          )
        ORDER BY 1, 2
        """
    ).fetchall()
    return [Finding("unindexed_fk", r[0], f"foreign key {r[1]} ({', '.join(r[2])}) has no index", 0, None)
            for r in rows]


def index_findings(conn: psycopg.Connection[Any]) -> list[Finding]:
    indexes = list_indexes(conn)
    return [*duplicate_indexes(indexes), *unused_indexes(indexes), *unindexed_foreign_keys(conn)]

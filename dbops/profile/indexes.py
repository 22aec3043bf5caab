"""Findings about existing indexes: unused, duplicate or redundant, and foreign keys no index serves.

Partitioned tables are judged on the parent: its index (relkind ``I``) stands for the partitions' indexes, and a
foreign key inherited by a partition (``conparentid <> 0``) is the parent's. A partition's own index (one not attached
to an index of its parent) is judged on the partition, against every index the partition has, attached ones included:
one that repeats an inherited index is a duplicate.

An index is never proposed for dropping when it backs something: a primary key, unique or exclusion constraint, a
foreign key that references it, an index of the parent it is attached to, or a foreign key of its own table whose
columns it alone covers (its leading columns, in any order; dropping it would leave the foreign key unindexed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    backs_constraint: bool  # a primary key, unique or exclusion constraint, or a foreign key referencing it
    scans: int
    size_bytes: int
    definition: str
    oid: int = 0
    table_oid: int = 0
    attnums: tuple[int, ...] = ()  # key columns' attribute numbers (0 for an expression)
    attached_to: str | None = None  # the parent's index this partition index is attached to
    on_partition: bool = False
    backs: tuple[str, ...] = field(default=())  # what dropping it would break, in words

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def protected(self) -> bool:
        """Dropping it would drop or weaken a constraint (see :attr:`backs`)."""
        return bool(self.backs)

    def covers(self, attnums: tuple[int, ...]) -> bool:
        """Whether this index's leading columns are exactly ``attnums`` in any order (a full, plain index)."""
        n = len(attnums)
        return self.predicate is None and len(self.attnums) >= n and set(self.attnums[:n]) == set(attnums)


@dataclass(frozen=True)
class Finding:
    kind: str  # unused | duplicate | redundant | unindexed_fk
    table: str
    detail: str
    size_bytes: int = 0
    index: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    table_oid: int
    table: str
    name: str
    attnums: tuple[int, ...]
    columns: tuple[str, ...]


INDEXES_SQL = """
WITH idx AS (
    SELECT i.indexrelid, i.indrelid, i.indisunique, i.indnkeyatts, t.relispartition,
           (SELECT inh.inhparent FROM pg_inherits AS inh WHERE inh.inhrelid = i.indexrelid LIMIT 1) AS parent_index
    FROM pg_index AS i
    JOIN pg_class AS t ON t.oid = i.indrelid
    JOIN pg_namespace AS n ON n.oid = t.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'
), usage AS (
    -- a partitioned index's scans and size are those of the partitions' indexes under it
    SELECT idx.indexrelid, coalesce(sum(s.idx_scan), 0) AS scans, coalesce(sum(pg_relation_size(d.relid)), 0) AS size
    FROM idx
    JOIN pg_class AS ic ON ic.oid = idx.indexrelid
    LEFT JOIN LATERAL (
        SELECT idx.indexrelid AS relid WHERE ic.relkind <> 'I'
        UNION ALL
        SELECT tree.relid FROM pg_partition_tree(idx.indexrelid) AS tree WHERE ic.relkind = 'I'
    ) AS d ON true
    LEFT JOIN pg_stat_all_indexes AS s ON s.indexrelid = d.relid
    GROUP BY idx.indexrelid
)
SELECT n.nspname, t.relname, c.relname,
       ARRAY(SELECT pg_get_indexdef(idx.indexrelid, k, true)
             FROM generate_series(1, idx.indnkeyatts) AS k ORDER BY k),
       am.amname, pg_get_expr(i.indpred, i.indrelid, true), idx.indisunique,
       ARRAY(SELECT CASE con.contype WHEN 'p' THEN 'primary key ' WHEN 'u' THEN 'unique constraint '
                    WHEN 'x' THEN 'exclusion constraint ' END || con.conname
             FROM pg_constraint AS con
             WHERE con.conindid = idx.indexrelid AND con.conrelid = idx.indrelid AND con.contype IN ('p', 'u', 'x')
             UNION ALL
             SELECT 'foreign key ' || con.conname || ' of ' || fn.nspname || '.' || f.relname || ' references it'
             FROM pg_constraint AS con JOIN pg_class AS f ON f.oid = con.conrelid
             JOIN pg_namespace AS fn ON fn.oid = f.relnamespace
             WHERE con.contype = 'f' AND con.conindid = idx.indexrelid AND con.conparentid = 0),
       u.scans, u.size, pg_get_indexdef(idx.indexrelid), idx.indexrelid::int8, idx.indrelid::int8,
       (i.indkey::int2[])[0:idx.indnkeyatts - 1],
       (SELECT pn.nspname || '.' || p.relname FROM pg_class AS p JOIN pg_namespace AS pn ON pn.oid = p.relnamespace
        WHERE p.oid = idx.parent_index),
       idx.relispartition
FROM idx
JOIN pg_index AS i ON i.indexrelid = idx.indexrelid
JOIN pg_class AS c ON c.oid = idx.indexrelid
JOIN pg_class AS t ON t.oid = idx.indrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
JOIN pg_am AS am ON am.oid = c.relam
JOIN usage AS u ON u.indexrelid = idx.indexrelid
ORDER BY 1, 2, 3
"""

FOREIGN_KEYS_SQL = """
SELECT con.conrelid::int8, n.nspname || '.' || t.relname, con.conname, con.conkey,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_constraint AS con
JOIN pg_class AS t ON t.oid = con.conrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE con.contype = 'f' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  -- one row per foreign key and referencing table: PostgreSQL adds rows for each partition of a referenced table
  AND (con.conparentid = 0 OR NOT EXISTS (SELECT 1 FROM pg_constraint AS up WHERE up.oid = con.conparentid
                                           AND up.conrelid = con.conrelid))
ORDER BY 2, 3
"""


def foreign_keys(conn: psycopg.Connection[Any]) -> list[ForeignKey]:
    """Every foreign key of every user table, partitions' inherited ones included (as rows of the partition)."""
    return [ForeignKey(int(r[0]), r[1], r[2], tuple(r[3]), tuple(r[4])) for r in conn.execute(FOREIGN_KEYS_SQL)]


def list_indexes(conn: psycopg.Connection[Any], fks: list[ForeignKey] | None = None) -> list[IndexInfo]:
    """Every index of user tables, partitions' own and attached ones included, each with what it backs."""
    rows = conn.execute(INDEXES_SQL).fetchall()
    indexes = [
        IndexInfo(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], r[6], bool(r[7]), int(r[8]), int(r[9]), r[10],
                  int(r[11]), int(r[12]), tuple(r[13] or ()), r[14], bool(r[15]),
                  tuple(r[7]) + ((f"attached to {r[14]}",) if r[14] else ()))
        for r in rows
    ]
    fks = foreign_keys(conn) if fks is None else fks
    by_table: dict[int, list[IndexInfo]] = {}
    for i in indexes:
        by_table.setdefault(i.table_oid, []).append(i)
    sole: dict[int, list[str]] = {}
    for fk in fks:
        covering = [i for i in by_table.get(fk.table_oid, []) if i.covers(fk.attnums)]
        if len(covering) == 1:
            sole.setdefault(covering[0].oid, []).append(
                f"only index of foreign key {fk.name} ({', '.join(fk.columns)})")
    if sole:
        indexes = [replace(i, backs=i.backs + tuple(sole[i.oid])) if i.oid in sole else i for i in indexes]
    return indexes


def _judged(i: IndexInfo) -> bool:
    """Indexes findings are about: not attached to a parent's index (those go with the parent's)."""
    return i.attached_to is None


def unused_indexes(indexes: list[IndexInfo], max_scans: int = UNUSED_MAX_SCANS,
                   fks: list[ForeignKey] | None = None, dropped: set[int] | None = None) -> list[Finding]:
    """Non-unique indexes that back nothing and were (almost) never scanned since the stats reset.

    ``dropped``: OIDs already proposed for dropping (duplicates); an index that covers a foreign key no other
    remaining index covers is kept, so two unused copies are never both dropped."""
    dropped = set(dropped or ())
    found = []
    candidates = [i for i in indexes if _judged(i) and not i.unique and not i.protected and i.scans <= max_scans
                  and i.oid not in dropped]
    for i in sorted(candidates, key=lambda x: x.size_bytes, reverse=True):
        if fks and not _still_covered(i, indexes, fks, dropped):
            continue
        dropped.add(i.oid)
        found.append(Finding("unused", i.qualified_table, f"{i.scans} scans since the stats reset", i.size_bytes,
                             i.qualified))
    return found


def _still_covered(index: IndexInfo, indexes: list[IndexInfo], fks: list[ForeignKey], dropped: set[int]) -> bool:
    """Every foreign key ``index`` covers keeps another covering index when it and ``dropped`` are gone."""
    for fk in fks:
        if fk.table_oid != index.table_oid or not index.covers(fk.attnums):
            continue
        if not any(o.oid != index.oid and o.oid not in dropped and o.table_oid == index.table_oid
                   and o.covers(fk.attnums) for o in indexes):
            return False
    return True


def _keep_rank(i: IndexInfo) -> tuple[int, int, int]:
    """Of identical indexes the one to keep sorts first: one that backs something, a unique one, the oldest."""
    return (0 if i.protected else 1, 0 if i.unique else 1, i.oid)


def duplicate_indexes(indexes: list[IndexInfo], fks: list[ForeignKey] | None = None) -> list[Finding]:
    """An index whose columns equal (duplicate) or lead (redundant) another's, same table, method and predicate.

    Of identical indexes the one that backs something, else a unique one, else the oldest (lowest OID) is kept; an
    index that backs something is never reported. A partition's own index is compared with every index of the
    partition, the ones attached to its parent's indexes included."""
    found: list[Finding] = []
    dropped: set[int] = set()
    for a in indexes:
        if a.protected or not _judged(a):
            continue
        for b in indexes:
            if a is b or (a.table_oid, a.method, a.predicate) != (b.table_oid, b.method, b.predicate):
                continue
            if a.columns != b.columns or (a.unique and not b.unique) or _keep_rank(b) > _keep_rank(a):
                continue
            kept = b.qualified + (f" (attached to {b.attached_to})" if b.attached_to else "")
            found.append(Finding("duplicate", a.qualified_table, f"same columns as {kept} ({', '.join(a.columns)})",
                                 a.size_bytes, a.qualified))
            dropped.add(a.oid)
            break
    for a in indexes:
        if a.protected or not _judged(a) or a.oid in dropped or a.method != "btree" or a.unique:
            continue
        for b in indexes:
            if b.oid in dropped or (a.table_oid, a.method, a.predicate) != (b.table_oid, b.method, b.predicate):
                continue
            if len(a.columns) < len(b.columns) and b.columns[: len(a.columns)] == a.columns:
                found.append(Finding("redundant", a.qualified_table,
                                     f"({', '.join(a.columns)}) is a leading prefix of {b.qualified}"
                                     f" ({', '.join(b.columns)})", a.size_bytes, a.qualified))
                dropped.add(a.oid)
                break
    if fks:  # a drop must never leave a foreign key without an index
        kept_found = []
        for f in found:
            index = next(i for i in indexes if i.qualified == f.index and i.qualified_table == f.table)
            if _still_covered(index, indexes, fks, dropped - {index.oid}):
                kept_found.append(f)
            else:
                dropped.discard(index.oid)
        found = kept_found
    return found


def unindexed_foreign_keys(conn: psycopg.Connection[Any]) -> list[Finding]:
    """Foreign keys whose columns are not the leading columns (in any order) of a full index on the referencing table.

    A partitioned table's foreign key is judged on the parent (an index there is built on every partition); a
    partition's own foreign key on the partition."""
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || t.relname, con.conname,
               ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord)
        FROM pg_constraint AS con
        JOIN pg_class AS t ON t.oid = con.conrelid
        JOIN pg_namespace AS n ON n.oid = t.relnamespace
        WHERE con.contype = 'f' AND con.conparentid = 0
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


def foreign_key_count(conn: psycopg.Connection[Any]) -> int:
    """How many foreign keys :func:`unindexed_foreign_keys` judges (a partition's inherited ones are its parent's)."""
    return int(conn.execute(
        "SELECT count(*) FROM pg_constraint AS con JOIN pg_class AS t ON t.oid = con.conrelid"
        " JOIN pg_namespace AS n ON n.oid = t.relnamespace WHERE con.contype = 'f' AND con.conparentid = 0"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema')").fetchone()[0])  # type: ignore[index]


def index_findings(conn: psycopg.Connection[Any]) -> list[Finding]:
    fks = foreign_keys(conn)
    indexes = list_indexes(conn, fks)
    duplicates = duplicate_indexes(indexes, fks)
    proposed = {i.oid for i in indexes for f in duplicates if f.index == i.qualified and f.table == i.qualified_table}
    return [*duplicates, *unused_indexes(indexes, fks=fks, dropped=proposed), *unindexed_foreign_keys(conn)]

"""The integrity rules a schema already declares, read from pg_catalog.

Validation starts from what the database promises (NOT NULL, primary keys, UNIQUE, foreign keys, CHECK) because a
promise can be broken without PostgreSQL noticing: constraints added NOT VALID, triggers disabled through
``session_replication_role``, a restored dump, a corrupt index. Partitions are folded into their parent: a rule is
stated once for ``app.orders``, not once per month.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind = 'p',
       (SELECT a.attname FROM pg_partitioned_table pt
          JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
         WHERE pt.partrelid = c.oid AND pt.partstrat = 'r' AND pt.partnatts = 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY(%s)
ORDER BY n.nspname, c.relname
"""

COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# contype: p primary key, u unique, f foreign key, c check, n not-null (PostgreSQL 18 records NOT NULL here too).
# Constraints inherited by partitions from their parent are skipped (conparentid <> 0): the parent states them.
CONSTRAINTS_SQL = """
SELECT con.conrelid, con.conname, con.contype::text, con.convalidated,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.i)::text[],
       rn.nspname, rc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.i)::text[],
       CASE WHEN con.contype = 'c' THEN pg_get_expr(con.conbin, con.conrelid) END,
       con.confmatchtype::text
FROM pg_constraint con
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.conrelid = ANY(%s) AND con.contype IN ('p', 'u', 'f', 'c', 'n') AND con.conparentid = 0
ORDER BY con.conrelid, con.contype, con.conname
"""


@dataclass(frozen=True)
class Constraint:
    """One declared rule; ``kind`` is primary_key, unique, foreign_key, check or not_null."""

    name: str
    kind: str
    columns: tuple[str, ...]
    validated: bool = True
    ref_schema: str | None = None
    ref_table: str | None = None
    ref_columns: tuple[str, ...] = ()
    expression: str | None = None
    match_full: bool = False


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, str] = field(default_factory=dict)
    partitioned: bool = False
    partition_column: str | None = None
    constraints: list[Constraint] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def of_kind(self, *kinds: str) -> list[Constraint]:
        return [c for c in self.constraints if c.kind in kinds]


_KINDS = {"p": "primary_key", "u": "unique", "f": "foreign_key", "c": "check", "n": "not_null"}


def read_tables(conn: psycopg.Connection[Any], schemas: list[str] | tuple[str, ...] = ("app",)) -> list[Table]:
    """Every ordinary and partitioned (parent) table of ``schemas`` with its columns and constraints."""
    by_oid: dict[int, Table] = {}
    for oid, schema, name, partitioned, part_col in conn.execute(TABLES_SQL, (list(schemas),)).fetchall():
        by_oid[oid] = Table(schema, name, partitioned=partitioned, partition_column=part_col)
    if not by_oid:
        return []
    oids = list(by_oid)
    not_null_cols: dict[int, list[str]] = {}
    for oid, col, typ, notnull in conn.execute(COLUMNS_SQL, (oids,)).fetchall():
        by_oid[oid].columns[col] = typ
        if notnull:
            not_null_cols.setdefault(oid, []).append(col)
    seen_not_null: dict[int, set[str]] = {}
    for row in conn.execute(CONSTRAINTS_SQL, (oids,)).fetchall():
        oid, name, contype, validated, cols, ref_schema, ref_table, ref_cols, expr, match = row
        kind = _KINDS[contype]
        if kind == "not_null":
            seen_not_null.setdefault(oid, set()).update(cols)
        by_oid[oid].constraints.append(
            Constraint(
                name=name,
                kind=kind,
                columns=tuple(cols or ()),
                validated=validated,
                ref_schema=ref_schema,
                ref_table=ref_table,
                ref_columns=tuple(ref_cols or ()),
                expression=expr,
                match_full=match == "f",
            )
        )
    # Before PostgreSQL 18 NOT NULL lives only in pg_attribute: state it as a constraint all the same.
    for oid, cols in not_null_cols.items():
        for col in cols:
            if col not in seen_not_null.get(oid, set()):
                by_oid[oid].constraints.append(Constraint(name=f"{col}_not_null", kind="not_null", columns=(col,)))
    return list(by_oid.values())


@dataclass(frozen=True)
class NotValidConstraint:
    table: str
    name: str
    definition: str


def not_valid_constraints(conn: psycopg.Connection[Any], schemas: list[str] | tuple[str, ...] = ("app",)) -> list[
    NotValidConstraint
]:
    """Constraints added NOT VALID and never validated: PostgreSQL does not check their existing rows."""
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || c.relname, con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT con.convalidated AND n.nspname = ANY(%s) AND con.conparentid = 0
        ORDER BY 1, 2
        """,
        (list(schemas),),
    ).fetchall()
    return [NotValidConstraint(*r) for r in rows]

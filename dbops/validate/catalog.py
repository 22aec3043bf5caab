"""The integrity rules a schema already declares, read from pg_catalog.

Validation starts from what the database promises (NOT NULL, primary keys, UNIQUE, foreign keys, CHECK) because a
promise can be broken without PostgreSQL noticing: constraints added NOT VALID, triggers disabled through
``session_replication_role``, a restored dump, a corrupt index. Partitions are folded into their parent: a rule is
stated once for ``app.orders``, not once per month. With no schemas configured, every user schema is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

# Schemas PostgreSQL keeps for itself: every other schema is a user schema.
USER_SCHEMAS_SQL = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname !~ '^pg_temp_' AND n.nspname !~ '^pg_toast_temp_'
ORDER BY 1
"""

# Ordinary and partitioned tables, partitions folded into their parent. The partition key is kept when the table is
# RANGE partitioned and the first key column (not an expression) is a date or timestamp: its daily slices prune.
TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind = 'p',
       (SELECT a.attname FROM pg_partitioned_table pt
          JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
         WHERE pt.partrelid = c.oid AND pt.partstrat = 'r'
           AND a.atttypid IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence <> 't' AND n.nspname = ANY(%s)
ORDER BY n.nspname, c.relname
"""

COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       CASE WHEN a.atttypid = 'date'::regtype THEN 'date'
            WHEN a.atttypid = 'timestamp'::regtype THEN 'timestamp'
            WHEN a.atttypid = 'timestamptz'::regtype THEN 'timestamptz' END
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
       con.confmatchtype::text,
       coalesce((SELECT i.indnullsnotdistinct FROM pg_index i WHERE i.indexrelid = con.conindid), false)
FROM pg_constraint con
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.conrelid = ANY(%s) AND con.contype IN ('p', 'u', 'f', 'c', 'n') AND con.conparentid = 0
ORDER BY con.conrelid, con.contype, con.conname
"""


# Columns whose type is a domain with CHECK constraints (its own or a base domain's): the constraints' names, whether
# all are validated (ALTER DOMAIN ... ADD CONSTRAINT ... NOT VALID leaves the existing values unchecked).
DOMAIN_CHECKS_SQL = """
WITH RECURSIVE chain AS (
    SELECT a.attrelid, a.attname, a.atttypid AS top, a.atttypid AS typid
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype = 'd'
  UNION ALL
    SELECT c.attrelid, c.attname, c.top, t.typbasetype
    FROM chain c JOIN pg_type t ON t.oid = c.typid JOIN pg_type b ON b.oid = t.typbasetype
    WHERE b.typtype = 'd'
)
SELECT c.attrelid, c.attname, c.top::regtype::text, array_agg(con.conname::text ORDER BY con.conname),
       bool_and(con.convalidated)
FROM chain c JOIN pg_constraint con ON con.contypid = c.typid AND con.contype = 'c'
GROUP BY 1, 2, 3
ORDER BY 1, 2
"""


# Exclusion constraints on plain columns without a WHERE predicate: columns and their operators, in order.
EXCLUSIONS_SQL = """
SELECT con.conrelid, con.conname, con.convalidated,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.i)::text[],
       ARRAY(SELECT format('OPERATOR(%%I.%%s)', n.nspname, o.oprname)
             FROM unnest(con.conexclop) WITH ORDINALITY e(op, i)
             JOIN pg_operator o ON o.oid = e.op JOIN pg_namespace n ON n.oid = o.oprnamespace ORDER BY e.i)::text[]
FROM pg_constraint con JOIN pg_index i ON i.indexrelid = con.conindid
WHERE con.conrelid = ANY(%s) AND con.contype = 'x' AND con.conparentid = 0
  AND i.indpred IS NULL AND NOT (0 = ANY(i.indkey::int2[]))
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Constraint:
    """One declared rule; ``kind`` is primary_key, unique, foreign_key, check, not_null, exclusion, or domain_check (a
    column whose domain type has CHECK constraints: ``name`` lists them, ``expression`` is the domain)."""

    name: str
    kind: str
    columns: tuple[str, ...]
    validated: bool = True
    ref_schema: str | None = None
    ref_table: str | None = None
    ref_columns: tuple[str, ...] = ()
    expression: str | None = None
    match_full: bool = False
    nulls_not_distinct: bool = False
    operators: tuple[str, ...] = ()  # an exclusion constraint's, one a column


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, str] = field(default_factory=dict)
    partitioned: bool = False
    partition_column: str | None = None
    constraints: list[Constraint] = field(default_factory=list)
    # column -> 'date', 'timestamp' or 'timestamptz' for the columns a table can be sliced by day on
    time_types: dict[str, str] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def of_kind(self, *kinds: str) -> list[Constraint]:
        return [c for c in self.constraints if c.kind in kinds]


_KINDS = {"p": "primary_key", "u": "unique", "f": "foreign_key", "c": "check", "n": "not_null"}


def user_schemas(conn: psycopg.Connection[Any]) -> list[str]:
    """Every schema but PostgreSQL's own (pg_catalog, information_schema, pg_toast, temporary schemas)."""
    return [r[0] for r in conn.execute(USER_SCHEMAS_SQL).fetchall()]


def resolve_schemas(conn: psycopg.Connection[Any], schemas: list[str] | tuple[str, ...]) -> list[str]:
    """``schemas`` as configured; none configured means every user schema."""
    return list(schemas) if schemas else user_schemas(conn)


def read_tables(
    conn: psycopg.Connection[Any], schemas: list[str] | tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> list[Table]:
    """Every ordinary and partitioned (parent) table of ``schemas`` (none: every user schema) with its columns and
    constraints, but the tables named in ``exclude`` (``schema.table``)."""
    with conn.transaction():
        # CHECK expressions are printed with every name outside pg_catalog schema-qualified, whatever the database's
        # search_path: they run in sessions whose search_path is another.
        conn.execute("SET LOCAL search_path = pg_catalog")
        return _read_tables(conn, schemas, exclude)


def _read_tables(conn: psycopg.Connection[Any], schemas: list[str] | tuple[str, ...], exclude: tuple[str, ...]) -> list[
    Table
]:
    by_oid: dict[int, Table] = {}
    for oid, schema, name, partitioned, part_col in conn.execute(
        TABLES_SQL, (resolve_schemas(conn, schemas),)
    ).fetchall():
        if f"{schema}.{name}" not in exclude:
            by_oid[oid] = Table(schema, name, partitioned=partitioned, partition_column=part_col)
    if not by_oid:
        return []
    oids = list(by_oid)
    not_null_cols: dict[int, list[str]] = {}
    for oid, col, typ, notnull, time_type in conn.execute(COLUMNS_SQL, (oids,)).fetchall():
        by_oid[oid].columns[col] = typ
        if time_type:
            by_oid[oid].time_types[col] = time_type
        if notnull:
            not_null_cols.setdefault(oid, []).append(col)
    seen: dict[int, set[tuple[Any, ...]]] = {}
    for row in conn.execute(CONSTRAINTS_SQL, (oids,)).fetchall():
        oid, name, contype, validated, cols, ref_schema, ref_table, ref_cols, expr, match, nulls_nd = row
        con = Constraint(
            name=name,
            kind=_KINDS[contype],
            columns=tuple(cols or ()),
            validated=validated,
            ref_schema=ref_schema,
            ref_table=ref_table,
            ref_columns=tuple(ref_cols or ()),
            expression=expr,
            match_full=match == "f",
            nulls_not_distinct=bool(nulls_nd),
        )
        # The same promise declared twice (two UNIQUE constraints on the same columns, a primary key and a UNIQUE,
        # two identical foreign keys or CHECKs) is one rule.
        identity = _identity(con)
        if identity in seen.setdefault(oid, set()):
            continue
        seen[oid].add(identity)
        by_oid[oid].constraints.append(con)
    for oid, name, validated, cols, ops in conn.execute(EXCLUSIONS_SQL, (oids,)).fetchall():
        by_oid[oid].constraints.append(Constraint(name=name, kind="exclusion", columns=tuple(cols),
                                                  validated=validated, operators=tuple(ops)))
    # pg_input_is_valid (PostgreSQL 16) evaluates a domain's constraints without raising: before it, no domain rules.
    if conn.info.server_version >= 160000:
        for oid, col, domain, names, validated in conn.execute(DOMAIN_CHECKS_SQL, (oids,)).fetchall():
            by_oid[oid].constraints.append(Constraint(name=",".join(names), kind="domain_check", columns=(col,),
                                                      validated=bool(validated), expression=domain))
    # Before PostgreSQL 18 NOT NULL lives only in pg_attribute: state it as a constraint all the same.
    for oid, cols in not_null_cols.items():
        for col in cols:
            if ("not_null", (col,)) not in seen.get(oid, set()):
                by_oid[oid].constraints.append(Constraint(name=f"{col}_not_null", kind="not_null", columns=(col,)))
    return list(by_oid.values())


def _identity(con: Constraint) -> tuple[Any, ...]:
    if con.kind == "not_null":
        return ("not_null", con.columns)
    if con.kind in ("primary_key", "unique"):
        return ("unique", con.columns, con.nulls_not_distinct)
    if con.kind == "foreign_key":
        return ("foreign_key", con.columns, con.ref_schema, con.ref_table, con.ref_columns, con.match_full)
    return ("check", con.expression)


@dataclass(frozen=True)
class NotValidConstraint:
    table: str
    name: str
    definition: str


def not_valid_constraints(
    conn: psycopg.Connection[Any], schemas: list[str] | tuple[str, ...] = ()
) -> list[NotValidConstraint]:
    """Constraints added NOT VALID and never validated, of tables and of domains (``table`` is then the domain):
    PostgreSQL does not check their existing rows."""
    resolved = resolve_schemas(conn, schemas)
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || c.relname, con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT con.convalidated AND n.nspname = ANY(%s) AND con.conparentid = 0
        UNION ALL
        SELECT n.nspname || '.' || t.typname, con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_type t ON t.oid = con.contypid JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE NOT con.convalidated AND n.nspname = ANY(%s)
        ORDER BY 1, 2
        """,
        (resolved, resolved),
    ).fetchall()
    return [NotValidConstraint(*r) for r in rows]

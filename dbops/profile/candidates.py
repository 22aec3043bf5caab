"""Candidate indexes derived from a statement's predicates, joins and ORDER BY, parsed with pglast.

Per table: the columns compared by equality (to a constant, a parameter or a joined column) lead, then either one
range-compared column or the ORDER BY columns (when they all belong to that table). Each parameter is mapped to the
column it is compared with, so verification can sample real values for it from that column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType
from pglast.parser import ParseError

_RANGE_OPS = {"<", "<=", ">", ">="}


@dataclass(frozen=True)
class Candidate:
    """A proposed btree index: table (schema-qualified) and its key columns."""

    table: str
    columns: tuple[str, ...]

    @property
    def schema(self) -> str:
        return self.table.split(".", 1)[0]

    @property
    def relname(self) -> str:
        return self.table.split(".", 1)[1]

    @property
    def name(self) -> str:
        """A deterministic name within PostgreSQL's 63-byte limit."""
        base = f"{self.relname}_{'_'.join(self.columns)}_idx"
        if len(base.encode()) <= 63:
            return base
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        return base.encode()[:50].decode(errors="ignore") + f"_{digest}_idx"

    def describe(self) -> str:
        return f"{self.table} ({', '.join(self.columns)})"


@dataclass
class StatementShape:
    """What a statement filters on, per table, and where its parameters go."""

    read_only: bool
    equality: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, list[str]] = field(default_factory=dict)
    order_by: list[tuple[str, str]] = field(default_factory=list)
    params: dict[int, tuple[str, str]] = field(default_factory=dict)  # $n -> (table, column)
    limit_params: set[int] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)


class ColumnResolver:
    """Resolves relation names through the search path and unqualified columns through the catalog."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._tables: dict[str, str | None] = {}
        self._columns: dict[str, set[str]] = {}

    def table(self, schema: str | None, name: str) -> str | None:
        """The table a name means; a partition stands for its partitioned root (indexes are proposed there)."""
        ref = f"{schema}.{name}" if schema else name
        if ref not in self._tables:
            row = self.conn.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class AS c JOIN pg_namespace AS n"
                " ON n.oid = c.relnamespace WHERE c.oid = coalesce(pg_partition_root(to_regclass(%s)),"
                " to_regclass(%s)) AND c.relkind IN ('r', 'p', 'm')",
                (psycopg.sql.Identifier(*([schema, name] if schema else [name])).as_string(self.conn),) * 2,
            ).fetchone()
            self._tables[ref] = row[0] if row else None
        return self._tables[ref]

    def columns(self, table: str) -> set[str]:
        if table not in self._columns:
            rows = self.conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
                " AND NOT attisdropped",
                (psycopg.sql.Identifier(*table.split(".", 1)).as_string(self.conn),),
            ).fetchall()
            self._columns[table] = {r[0] for r in rows}
        return self._columns[table]


def _names(fields: tuple[Any, ...]) -> list[str] | None:
    out = []
    for f in fields:
        if not isinstance(f, ast.String):
            return None
        out.append(f.sval)
    return out


class _Analyzer:
    def __init__(self, resolver: ColumnResolver) -> None:
        self.resolver = resolver
        self.aliases: dict[str, str] = {}
        self.shape = StatementShape(read_only=True)

    def from_item(self, node: Any) -> None:
        if isinstance(node, ast.RangeVar):
            table = self.resolver.table(node.schemaname, node.relname)
            if table:
                self.shape.tables.add(table)
                self.aliases[node.alias.aliasname if node.alias else node.relname] = table
                self.aliases.setdefault(table, table)
        elif isinstance(node, ast.JoinExpr):
            self.from_item(node.larg)
            self.from_item(node.rarg)
            if node.quals is not None:
                self.predicate(node.quals)

    def column(self, node: Any) -> tuple[str, str] | None:
        if not isinstance(node, ast.ColumnRef):
            return None
        parts = _names(node.fields)
        if not parts:
            return None
        if len(parts) >= 2:
            table = self.aliases.get(parts[-2]) or self.aliases.get(".".join(parts[-3:-1]))
            return (table, parts[-1]) if table else None
        owners = [t for t in set(self.aliases.values()) if parts[0] in self.resolver.columns(t)]
        return (owners[0], parts[0]) if len(owners) == 1 else None

    def _add(self, bucket: dict[str, list[str]], col: tuple[str, str]) -> None:
        cols = bucket.setdefault(col[0], [])
        if col[1] not in cols:
            cols.append(col[1])

    def predicate(self, node: Any) -> None:
        if isinstance(node, ast.BoolExpr):
            if node.boolop == BoolExprType.AND_EXPR:
                for arg in node.args:
                    self.predicate(arg)
            return  # OR / NOT: no single index serves it reliably
        if isinstance(node, ast.A_Expr):
            op = node.name[-1].sval if node.name and isinstance(node.name[-1], ast.String) else None
            left, right = self.column(node.lexpr), self.column(node.rexpr)
            if node.kind == A_Expr_Kind.AEXPR_OP and op == "=":
                for col, other in ((left, node.rexpr), (right, node.lexpr)):
                    if col:
                        self._add(self.shape.equality, col)
                        if isinstance(other, ast.ParamRef):
                            self.shape.params[other.number] = col
            elif node.kind == A_Expr_Kind.AEXPR_OP and op in _RANGE_OPS:
                for col, other in ((left, node.rexpr), (right, node.lexpr)):
                    if col and not self.column(other):
                        self._add(self.shape.ranges, col)
                        if isinstance(other, ast.ParamRef):
                            self.shape.params[other.number] = col
            elif node.kind == A_Expr_Kind.AEXPR_BETWEEN and left:
                self._add(self.shape.ranges, left)
                for bound in node.rexpr or ():
                    if isinstance(bound, ast.ParamRef):
                        self.shape.params[bound.number] = left
            elif node.kind == A_Expr_Kind.AEXPR_IN and left:
                self._add(self.shape.equality, left)
                for item in node.rexpr if isinstance(node.rexpr, tuple) else ():
                    if isinstance(item, ast.ParamRef):
                        self.shape.params[item.number] = left

    def select(self, stmt: ast.SelectStmt) -> None:
        if stmt.op and stmt.larg is not None:  # UNION / INTERSECT / EXCEPT
            self.select(stmt.larg)
            if stmt.rarg is not None:
                self.select(stmt.rarg)
            return
        if stmt.lockingClause:
            self.shape.read_only = False
        for item in stmt.fromClause or ():
            self.from_item(item)
        if stmt.whereClause is not None:
            self.predicate(stmt.whereClause)
        for sort in stmt.sortClause or ():
            col = self.column(sort.node)
            if col:
                self.shape.order_by.append(col)
        for limit in (stmt.limitCount, stmt.limitOffset):
            if isinstance(limit, ast.ParamRef):
                self.shape.limit_params.add(limit.number)


def analyze_statement(resolver: ColumnResolver, query: str) -> StatementShape | None:
    """The shape of one statement, or None when it is not a single SELECT/UPDATE/DELETE we can read."""
    try:
        parsed = parse_sql(query)
    except ParseError:
        return None
    if len(parsed) != 1:
        return None
    stmt = parsed[0].stmt
    analyzer = _Analyzer(resolver)
    if isinstance(stmt, ast.SelectStmt):
        if stmt.intoClause is not None or stmt.withClause is not None:
            analyzer.shape.read_only = stmt.withClause is None and stmt.intoClause is None
            if stmt.intoClause is not None:
                return None
        analyzer.select(stmt)
    elif isinstance(stmt, (ast.UpdateStmt, ast.DeleteStmt)):
        analyzer.shape.read_only = False
        analyzer.from_item(stmt.relation)
        for item in getattr(stmt, "fromClause", None) or getattr(stmt, "usingClause", None) or ():
            analyzer.from_item(item)
        if stmt.whereClause is not None:
            analyzer.predicate(stmt.whereClause)
    else:
        return None
    return analyzer.shape


def candidates_for(shape: StatementShape) -> list[Candidate]:
    """One candidate per filtered table: equality columns, then a range column or the ORDER BY columns."""
    out = []
    for table in sorted(shape.tables):
        eq = shape.equality.get(table, [])
        rest: list[str] = []
        order_cols = [c for t, c in shape.order_by]
        if shape.order_by and all(t == table for t, _ in shape.order_by):
            rest = [c for c in order_cols if c not in eq]
        elif shape.ranges.get(table):
            rest = [c for c in shape.ranges[table][:1] if c not in eq]
        cols = tuple(eq + rest)
        if cols and (eq or shape.ranges.get(table)):
            out.append(Candidate(table, cols[:4]))
    return out


def is_covered(candidate: Candidate, existing: list[tuple[str, tuple[str, ...]]]) -> bool:
    """True when an existing btree on the table already starts with the candidate's columns (as a set for equality)."""
    n = len(candidate.columns)
    for table, cols in existing:
        if table == candidate.table and len(cols) >= n and set(cols[:n]) == set(candidate.columns):
            return True
    return False

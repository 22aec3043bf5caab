"""Integrity checks derived from the catalog and the operator's rule files, independent of how they are run.

Each :class:`Check` knows its row-level meaning as SQL (a predicate on one row, or a query returning the offending
rows) so that the same rule can be run by Great Expectations, sampled for the report, and written by hand for the
benchmark. Fact tables are checked one day at a time on their time column; everything else as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from dbops.validate.catalog import Constraint, Table
from dbops.validate.rules import Rule, RuleFileError, TableRules, check_columns


@dataclass(frozen=True)
class Check:
    """One rule on one table.

    ``predicate`` (SQL true for an offending row) is set for row-level rules; ``rows_query`` (a query over
    ``{batch}`` returning offending rows) for rules that look at several rows or other tables.
    """

    table: str
    rule: str
    kind: str
    predicate: str | None = None
    rows_query: str | None = None
    column: str | None = None
    value_set: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    pattern: str | None = None


@dataclass
class TablePlan:
    """Everything validated for one table, and on which time column (None for a dimension table)."""

    table: Table
    time_column: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.table.qualified


def _lit(value: Any) -> str:
    return sql.Literal(value).as_string(None)


def _ident(*names: str) -> str:
    return sql.Identifier(*names).as_string(None)


def _cols(cols: tuple[str, ...] | list[str], alias: str | None = None) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(alias, c) if alias else sql.Identifier(c) for c in cols)


# GX fills {batch} with str.format; psycopg's sql.SQL.format would read it as its own placeholder, so it is
# passed through as a literal piece of SQL text.
BATCH = sql.SQL("{batch}")


def duplicates_query(cols: tuple[str, ...]) -> str:
    """Groups of rows sharing ``cols`` (NULLs are distinct, as in a UNIQUE constraint)."""
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in cols)
    query = sql.SQL(
        "SELECT {cols}, count(*) AS duplicates FROM {batch} WHERE {not_null} GROUP BY {cols} HAVING count(*) > 1"
    ).format(cols=_cols(cols), batch=BATCH, not_null=not_null)
    return query.as_string(None)


def orphans_query(con: Constraint) -> str:
    """Rows whose foreign key points nowhere (MATCH SIMPLE: a key with a NULL part is not checked)."""
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("b", c)) for c in con.columns)
    join = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("r", rc), sql.Identifier("b", c))
        for c, rc in zip(con.columns, con.ref_columns, strict=True)
    )
    query = sql.SQL(
        "SELECT b.* FROM (SELECT * FROM {batch}) AS b WHERE {not_null} "
        "AND NOT EXISTS (SELECT 1 FROM {ref} AS r WHERE {join})"
    ).format(
        batch=BATCH,
        not_null=not_null,
        ref=sql.Identifier(con.ref_schema or "public", con.ref_table or ""),
        join=join,
    )
    return query.as_string(None)


def catalog_checks(table: Table) -> list[Check]:
    """The rules the schema declares for ``table``."""
    name = table.qualified
    out: list[Check] = []
    for con in table.of_kind("not_null"):
        col = con.columns[0]
        out.append(Check(name, f"not_null {col}", "not_null", predicate=f"{_ident(col)} IS NULL", column=col))
    for con in table.of_kind("primary_key", "unique"):
        out.append(Check(name, f"{con.kind} {con.name}", "unique", rows_query=duplicates_query(con.columns)))
    for con in table.of_kind("foreign_key"):
        out.append(Check(name, f"foreign_key {con.name}", "foreign_key", rows_query=orphans_query(con)))
    for con in table.of_kind("check"):
        # NOT (expr) is NULL, hence not reported, when expr is NULL: exactly what a CHECK constraint accepts.
        out.append(Check(name, f"check {con.name}", "check", predicate=f"NOT ({con.expression})"))
    return out


def rule_check(table: str, rule: Rule) -> Check:
    """An operator rule as a check; the GX expectation class is chosen by ``kind`` when it runs."""
    label = f"rule {rule.label}"
    col = rule.column
    if rule.kind == "unique":
        return Check(table, label, "unique", rows_query=duplicates_query(rule.columns))
    if rule.kind == "not_null":
        return Check(table, label, "not_null", predicate=f"{_ident(col)} IS NULL", column=col)  # type: ignore[arg-type]
    if rule.kind == "in_set":
        values = ", ".join(_lit(v) for v in rule.values)
        pred = f"{_ident(col)} IS NOT NULL AND {_ident(col)} NOT IN ({values})"  # type: ignore[arg-type]
        return Check(table, label, "in_set", predicate=pred, column=col, value_set=rule.values)
    if rule.kind == "between":
        parts = []
        if rule.min is not None:
            parts.append(f"{_ident(col)} < {_lit(rule.min)}")  # type: ignore[arg-type]
        if rule.max is not None:
            parts.append(f"{_ident(col)} > {_lit(rule.max)}")  # type: ignore[arg-type]
        return Check(table, label, "between", predicate=" OR ".join(parts), column=col, min=rule.min, max=rule.max)
    if rule.kind == "regex":
        pred = f"{_ident(col)} IS NOT NULL AND NOT ({_ident(col)}::text ~ {_lit(rule.pattern)})"  # type: ignore[arg-type]
        return Check(table, label, "regex", predicate=pred, column=col, pattern=rule.pattern)
    return Check(table, label, "row_count", min=rule.min, max=rule.max)


def time_column_of(table: Table, tables: dict[str, Table], rules: TableRules | None) -> str | None:
    """The column a table is validated day by day on: the rule file's, the range partition key, or the column a
    foreign key copies from a partitioned parent's key (order_items.order_created_at)."""
    if rules and rules.time_column:
        return rules.time_column
    if table.partition_column:
        return table.partition_column
    for con in table.of_kind("foreign_key"):
        parent = tables.get(f"{con.ref_schema}.{con.ref_table}")
        if parent and parent.partition_column and parent.partition_column in con.ref_columns:
            return con.columns[con.ref_columns.index(parent.partition_column)]
    return None


def plan_tables(tables: list[Table], rules: dict[str, TableRules], rules_dir: Path) -> list[TablePlan]:
    """Checks for every table, with operator rules validated against the real columns first."""
    by_name = {t.qualified: t for t in tables}
    unknown = sorted(set(rules) - set(by_name))
    if unknown:
        raise RuleFileError(
            f"{rules_dir / rules[unknown[0]].file}: table {unknown[0]} does not exist in the database",
            "rename the file after an existing table or set `table:`",
        )
    plans = []
    for table in tables:
        table_rules = rules.get(table.qualified)
        if table_rules:
            check_columns(table_rules, table.columns, rules_dir)
        checks = catalog_checks(table)
        if table_rules:
            checks += [rule_check(table.qualified, r) for r in table_rules.rules]
        plans.append(TablePlan(table, time_column_of(table, by_name, table_rules), checks))
    return plans


def batch_query(plan: TablePlan, start: str | None = None, end: str | None = None) -> str:
    """The rows of one batch: a range predicate on the time column, which an index or partition pruning serves."""
    base = sql.SQL("SELECT * FROM {}").format(sql.Identifier(plan.table.schema, plan.table.name))
    if plan.time_column and start and end:
        base = sql.SQL("{base} WHERE {col} >= {start} AND {col} < {end}").format(
            base=base, col=sql.Identifier(plan.time_column), start=sql.Literal(start), end=sql.Literal(end)
        )
    return base.as_string(None)

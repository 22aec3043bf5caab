"""Integrity checks derived from the catalog and the operator's rule files, independent of how they are run.

Each :class:`Check` knows its row-level meaning as SQL (a predicate on one row, or a query returning the offending
rows) so that the same rule can be run by Great Expectations, sampled for the report, and written by hand for the
benchmark. Tables with a time column are checked one day at a time on it; everything else as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from dbops.errors import ConfigError
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
    columns: tuple[str, ...] = ()


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


def duplicates_query(cols: tuple[str, ...], nulls_not_distinct: bool = False) -> str:
    """Groups of rows sharing ``cols``: NULLs are distinct, as in a UNIQUE constraint, unless it says NULLS NOT
    DISTINCT (then GROUP BY's own NULL-equals-NULL is the constraint's rule)."""
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in cols)
    if nulls_not_distinct:
        not_null = sql.SQL("true")
    query = sql.SQL(
        "SELECT {cols}, count(*) AS duplicates FROM {batch} WHERE {not_null} GROUP BY {cols} HAVING count(*) > 1"
    ).format(cols=_cols(cols), batch=BATCH, not_null=not_null)
    return query.as_string(None)


def orphans_query(con: Constraint) -> str:
    """Rows whose foreign key points nowhere. MATCH SIMPLE (the default): a key with a NULL part is not checked;
    MATCH FULL: a key partly NULL is itself a violation. The referenced table is read whole (a partitioned parent
    included: its partitions are searched through it)."""
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("b", c)) for c in con.columns)
    join = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("r", rc), sql.Identifier("b", c))
        for c, rc in zip(con.columns, con.ref_columns, strict=True)
    )
    orphan = sql.SQL("{not_null} AND NOT EXISTS (SELECT 1 FROM {ref} AS r WHERE {join})").format(
        not_null=not_null, ref=sql.Identifier(con.ref_schema or "public", con.ref_table or ""), join=join
    )
    if con.match_full and len(con.columns) > 1:
        some_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier("b", c)) for c in con.columns)
        orphan = sql.SQL("({orphan}) OR (({some_null}) AND NOT ({not_null}))").format(
            orphan=orphan, some_null=some_null, not_null=not_null
        )
    query = sql.SQL("SELECT b.* FROM (SELECT * FROM {batch}) AS b WHERE {orphan}").format(batch=BATCH, orphan=orphan)
    return query.as_string(None)


def conflicts_query(table: Table, con: Constraint, identity: tuple[str, ...]) -> str:
    """Rows an exclusion constraint forbids: another row (told apart by the primary key) for which every operator
    holds (``during && during``). Both rows of a conflicting pair are reported."""
    other = sql.SQL(" AND ").join(
        sql.SQL("{} {} {}").format(sql.Identifier("o", c), sql.SQL(op), sql.Identifier("b", c))
        for c, op in zip(con.columns, con.operators, strict=True)
    )
    query = sql.SQL(
        "SELECT b.* FROM (SELECT * FROM {batch}) AS b WHERE EXISTS (SELECT 1 FROM {table} AS o "
        "WHERE ({o_id}) IS DISTINCT FROM ({b_id}) AND {other})"
    ).format(
        batch=BATCH, table=sql.Identifier(table.schema, table.name), other=other,
        o_id=_cols(identity, "o"), b_id=_cols(identity, "b"),
    )
    return query.as_string(None)


def catalog_checks(table: Table) -> list[Check]:
    """The rules the schema declares for ``table`` (NOT VALID ones included: those are the ones whose old rows
    PostgreSQL never looked at)."""
    name = table.qualified
    out: list[Check] = []
    for con in table.of_kind("not_null"):
        col = con.columns[0]
        out.append(Check(name, f"not_null {col}", "not_null", predicate=f"{_ident(col)} IS NULL", column=col))
    for con in table.of_kind("primary_key", "unique"):
        query = duplicates_query(con.columns, con.nulls_not_distinct)
        out.append(Check(name, f"{con.kind} {con.name}", "unique", rows_query=query, columns=con.columns))
    for con in table.of_kind("foreign_key"):
        out.append(Check(name, f"foreign_key {con.name}", "foreign_key", rows_query=orphans_query(con)))
    for con in table.of_kind("check"):
        # NOT (expr) is NULL, hence not reported, when expr is NULL: exactly what a CHECK constraint accepts.
        out.append(Check(name, f"check {con.name}", "check", predicate=f"NOT ({con.expression})"))
    primary = table.of_kind("primary_key")
    for con in table.of_kind("exclusion"):
        # Rows are told apart by the primary key: without one, two identical rows could not be; no rule then.
        if primary and len(con.columns) == len(con.operators):
            query = conflicts_query(table, con, primary[0].columns)
            out.append(Check(name, f"exclusion {con.name}", "exclusion", rows_query=query))
    for con in table.of_kind("domain_check"):
        # The value, as text, read back as the domain: every CHECK of the domain (and of its base domains) evaluated,
        # a failure reported as false rather than raised. A NULL is the domain's NOT NULL business, not a CHECK's.
        col = _ident(con.columns[0])
        predicate = f"{col} IS NOT NULL AND NOT pg_input_is_valid({col}::text, {_lit(con.expression)})"
        rule = f"domain_check {con.expression} {con.columns[0]} ({con.name})"
        out.append(Check(name, rule, "check", predicate=predicate, column=con.columns[0]))
    return out


def _same_rule(a: Check, b: Check) -> bool:
    """A rule file's rule that restates a constraint (``not_null`` of a NOT NULL column, ``unique`` on a key's
    columns) is checked once, under the constraint's name."""
    if a.kind != b.kind:
        return False
    if a.kind == "not_null":
        return a.column == b.column
    if a.kind == "unique":
        return a.columns == b.columns
    return False


def rule_check(table: str, rule: Rule) -> Check:
    """An operator rule as a check; the GX expectation class is chosen by ``kind`` when it runs."""
    label = f"rule {rule.label}"
    col = rule.column
    if rule.kind == "unique":
        return Check(table, label, "unique", rows_query=duplicates_query(rule.columns), columns=rule.columns)
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


def time_column_of(
    table: Table, tables: dict[str, Table], rules: TableRules | None, configured: dict[str, str] | None = None
) -> str | None:
    """The column a table is validated day by day on: the target's ``validation.time_columns``, the rule file's
    ``time_column``, the range partition key (first key column, a date or timestamp), or the column a foreign key
    copies from a time-partitioned parent's key (order_items.order_created_at, loan_events.loaned_on): a child of a
    fact table is a fact table. None: the table is validated as a whole."""
    if configured and table.qualified in configured:
        return configured[table.qualified]
    if rules and rules.time_column:
        return rules.time_column
    if table.partition_column:
        return table.partition_column
    for con in table.of_kind("foreign_key"):
        parent = tables.get(f"{con.ref_schema}.{con.ref_table}")
        if parent and parent.partition_column and parent.partition_column in con.ref_columns:
            column = con.columns[con.ref_columns.index(parent.partition_column)]
            if column in table.time_types:
                return column
    return None


def check_time_columns(tables: dict[str, Table], configured: dict[str, str]) -> None:
    """Every configured time column names a validated table and one of its date or timestamp columns."""
    for name, column in sorted(configured.items()):
        table = tables.get(name)
        if table is None:
            raise ConfigError(
                f"validation.time_columns: table {name} is not among the validated tables",
                f"name an existing table of the target's schemas ({', '.join(sorted(tables)) or 'none'}), or remove it",
            )
        if column not in table.columns:
            raise ConfigError(f"validation.time_columns: {name} has no column {column!r}",
                              f"use one of {', '.join(table.columns)}")
        if column not in table.time_types:
            raise ConfigError(
                f"validation.time_columns: {name}.{column} is {table.columns[column]}, not a date or timestamp",
                "name a date, timestamp or timestamptz column (or remove the table to validate it as a whole)",
            )


def resolve_rule_tables(
    rules: dict[str, TableRules], tables: dict[str, Table], rules_dir: Path
) -> dict[str, TableRules]:
    """Rule files keyed by the table they apply to. A file naming no schema (``orders.yml``, ``table: orders``) means
    ``app.<name>`` when that table exists (the reference schema), else the one table of that name in the validated
    schemas."""
    out: dict[str, TableRules] = {}
    for key, table_rules in rules.items():
        name = key
        if key not in tables and not table_rules.schema_given:
            bare = key.split(".", 1)[1]
            matches = sorted(t for t in tables if t.split(".", 1)[1] == bare)
            if len(matches) > 1:
                raise RuleFileError(
                    f"{rules_dir / table_rules.file}: table {bare} exists in several schemas ({', '.join(matches)})",
                    "set `table: <schema>.<table>` in the file",
                )
            if matches:
                name = matches[0]
        if name not in tables:
            raise RuleFileError(
                f"{rules_dir / table_rules.file}: table {name} does not exist in the database",
                "rename the file after an existing table or set `table:`",
            )
        if name in out:
            raise RuleFileError(
                f"{rules_dir / table_rules.file}: table {name} already has rules in {out[name].file}",
                "merge the two files",
            )
        table_rules.table = name
        out[name] = table_rules
    return out


def plan_tables(
    tables: list[Table], rules: dict[str, TableRules], rules_dir: Path | None,
    time_columns: dict[str, str] | None = None,
) -> list[TablePlan]:
    """Checks for every table, with operator rules validated against the real columns first."""
    by_name = {t.qualified: t for t in tables}
    configured = dict(time_columns or {})
    check_time_columns(by_name, configured)
    rules = resolve_rule_tables(rules, by_name, rules_dir or Path(".")) if rules else {}
    plans = []
    for table in tables:
        table_rules = rules.get(table.qualified)
        if table_rules:
            check_columns(table_rules, table.columns, rules_dir or Path("."))
        checks = catalog_checks(table)
        if table_rules:
            for rule in table_rules.rules:
                extra = rule_check(table.qualified, rule)
                if not any(_same_rule(extra, c) for c in checks):
                    checks.append(extra)
        plans.append(TablePlan(table, time_column_of(table, by_name, table_rules, configured), checks))
    return plans


def slice_bounds(plan: TablePlan, start: str, end: str) -> tuple[str, str]:
    """The bounds as the time column's type reads them: a day for a date column, a UTC instant otherwise."""
    kind = plan.table.time_types.get(plan.time_column or "")
    if kind == "date":
        return start[:10], end[:10]
    if kind == "timestamp":  # without time zone: the wall-clock day, as written
        return start[:10] + " 00:00:00", end[:10] + " 00:00:00"
    return start, end


def slice_predicate(plan: TablePlan, start: str, end: str, alias: str | None = None) -> str:
    """``col >= start AND col < end``: a range an index or partition pruning serves."""
    lo, hi = slice_bounds(plan, start, end)
    col = sql.Identifier(alias, plan.time_column) if alias else sql.Identifier(plan.time_column or "")
    return sql.SQL("{col} >= {lo} AND {col} < {hi}").format(
        col=col, lo=sql.Literal(lo), hi=sql.Literal(hi)
    ).as_string(None)


def batch_query(plan: TablePlan, start: str | None = None, end: str | None = None) -> str:
    """The rows of one batch: a range predicate on the time column, which an index or partition pruning serves."""
    base = sql.SQL("SELECT * FROM {}").format(sql.Identifier(plan.table.schema, plan.table.name))
    if plan.time_column and start and end:
        base = sql.SQL("{base} WHERE {pred}").format(base=base, pred=sql.SQL(slice_predicate(plan, start, end)))
    return base.as_string(None)

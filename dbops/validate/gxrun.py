"""Run integrity checks with Great Expectations 1.x through its public API: an ephemeral context, a PostgreSQL data
source, one table asset per table, SQL pushdown only.

A table asset's columns come from the catalog (SQLAlchemy's inspector), never from running a query, and its whole-table
batch is the table itself; a daily slice is a range on the time column (``>= day AND < next day``) that PostgreSQL
serves with partition pruning or an index:

* column rules (NOT NULL, value set, range, pattern, row count) are GX's own expectations
  (``ExpectColumnValuesToNotBeNull``, ...) with the range as their ``row_condition``: GX bundles every column rule of a
  batch into one aggregate query;
* rules about a row as a whole or about several rows or tables (CHECK, primary/unique keys, foreign keys) are
  ``UnexpectedRowsExpectation`` queries with the range written into their SQL; they select a constant per violating
  row, so what GX fetches (at most 200 rows) stays tiny. dbops samples the few rows it reports itself.

Nothing is loaded into pandas and no private GX module is touched.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

# GX's own switch, read when it is imported (a write of GX's interface, not a read of dbops' configuration).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from great_expectations.core.expectation_validation_result import ExpectationValidationResult  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.row_conditions import Column, Condition  # noqa: E402
from psycopg import sql as psql  # noqa: E402

from dbops.validate.suite import Check, TablePlan, slice_bounds, slice_predicate  # noqa: E402

# GX logs every metric at INFO: keep Dagster's and the CLI's output readable.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

# Rules GX states as column (or table row count) expectations; every other rule is SQL returning violating rows.
COLUMN_KINDS = ("not_null", "in_set", "between", "regex", "row_count")
COUNTS = {"result_format": "BASIC", "partial_unexpected_count": 0}


def schema_url(url: str, schema: str) -> str:
    """``url`` with its session's search_path set to ``schema`` alone (libpq's ``options``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    setting = "-csearch_path=" + psql.Identifier(schema).as_string(None).replace(" ", "\\ ")
    options = " ".join([v for k, v in query if k == "options"] + [setting])
    query = [(k, v) for k, v in query if k != "options"] + [("options", options)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _braces(text: str) -> str:
    """GX fills ``{batch}`` with str.format: every other brace (a regex quantifier in a CHECK) is doubled."""
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class Slice:
    """What one batch reads: the whole table, or ``[start, end)`` on its time column."""

    plan: TablePlan
    start: str | None = None
    end: str | None = None

    @property
    def ranged(self) -> bool:
        return bool(self.plan.time_column and self.start and self.end)

    def row_condition(self) -> Condition | None:
        if not self.ranged:
            return None
        lo, hi = slice_bounds(self.plan, self.start or "", self.end or "")
        column = Column(self.plan.time_column or "")
        return (column >= lo) & (column < hi)

    def batch_sql(self) -> str:
        """What ``{batch}`` stands for in a rule's SQL: GX's batch, cut to the slice."""
        if not self.ranged:
            return "{batch}"
        predicate = _braces(slice_predicate(self.plan, self.start or "", self.end or ""))
        return "(SELECT * FROM {batch} WHERE " + predicate + ") AS sliced"  # noqa: S608 - literals by psycopg


def row_count_sql(check: Check, where: Slice) -> str:
    """A row-count rule as unexpected rows: one row when the batch's count is out of bounds."""
    bounds = [f"n < {float(check.min)!r}"] if check.min is not None else []
    bounds += [f"n > {float(check.max)!r}"] if check.max is not None else []
    return (f"SELECT 1 FROM (SELECT count(*) AS n FROM {where.batch_sql()}) AS counted "  # noqa: S608 - numbers
            f"WHERE {' OR '.join(bounds) or 'false'}")


def expectation_for(check: Check, where: Slice, index: int = 0, columns_typed: bool = True) -> gxe.Expectation:
    """The GX expectation that states ``check`` on ``where``; ``index`` comes back in the result's meta.

    ``columns_typed`` False: SQLAlchemy cannot type a column of the table (a composite type, an extension's type),
    and GX's column expectations fail on every column of such a table (they compile every column's type), so its
    column rules are stated as the SQL of their predicate instead."""
    meta = {"table": check.table, "rule": check.rule, "dbops_index": index}
    condition = where.row_condition()
    if not columns_typed and check.kind in COLUMN_KINDS:
        if check.kind == "row_count":
            return gxe.UnexpectedRowsExpectation(unexpected_rows_query=row_count_sql(check, where), meta=meta)
        query = f"SELECT 1 FROM {where.batch_sql()} WHERE {_braces(check.predicate or 'false')}"  # noqa: S608
        return gxe.UnexpectedRowsExpectation(unexpected_rows_query=query, meta=meta)
    if check.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=check.column, row_condition=condition, meta=meta)
    if check.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(
            column=check.column, value_set=list(check.value_set), row_condition=condition, meta=meta
        )
    if check.kind == "between":
        return gxe.ExpectColumnValuesToBeBetween(
            column=check.column, min_value=check.min, max_value=check.max, row_condition=condition, meta=meta
        )
    if check.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(
            column=check.column, regex=check.pattern, row_condition=condition, meta=meta
        )
    if check.kind == "row_count":
        return gxe.ExpectTableRowCountToBeBetween(
            min_value=check.min, max_value=check.max, row_condition=condition, meta=meta
        )
    if check.rows_query:
        # The rule's own SQL (duplicate groups, orphans) reads {batch}: it is cut to the slice and only counted.
        rows = check.rows_query.replace("{batch}", where.batch_sql())
        query = f"SELECT 1 FROM ({rows}) AS unexpected"  # noqa: S608 - built from catalog identifiers
    else:
        predicate = _braces(check.predicate or "false")
        query = f"SELECT 1 FROM {where.batch_sql()} WHERE {predicate}"  # noqa: S608 - catalog/identifiers
    return gxe.UnexpectedRowsExpectation(unexpected_rows_query=query, meta=meta)


@dataclass
class Outcome:
    check: Check
    success: bool
    unexpected: int
    error: str | None = None


@dataclass
class BatchOutcome:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]


def _unexpected(result: ExpectationValidationResult, check: Check) -> int:
    res = result.result or {}
    if check.kind == "row_count":
        return 0 if result.success else 1
    if "unexpected_count" in res:
        return int(res["unexpected_count"] or 0)
    value = res.get("observed_value")
    return int(value) if isinstance(value, int) else (0 if result.success else 1)


def _index(result: ExpectationValidationResult) -> int:
    return int(result.expectation_config.meta["dbops_index"])  # type: ignore[union-attr]


class GxValidator:
    """One ephemeral GX context and PostgreSQL data source for the life of a validation run."""

    def __init__(self, url: str, schemas: list[str] | tuple[str, ...]) -> None:
        # A schema reaches GX in the data source's connection (its search_path), as GX 1.x asks (a table asset's own
        # schema_name is deprecated): one PostgreSQL data source per schema. The URLs reach GX by ${VAR} substitution
        # from this context's own runtime environment (not os.environ): the password never lands in a GX config
        # object or log line.
        url = url.replace("postgres://", "postgresql://", 1)
        names = {schema: f"DBOPS_GX_URL_{uuid.uuid4().hex[:8].upper()}" for schema in schemas}
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        self.context = gx.get_context(
            mode="ephemeral", project_config=config,
            runtime_environment={var: schema_url(url, schema) for schema, var in names.items()},
        )
        self._sources: dict[str, Any] = {
            schema: self.context.data_sources.add_postgres(name=f"dbops_{n}", connection_string="${" + var + "}")
            for n, (schema, var) in enumerate(sorted(names.items()), 1)
        }
        self._batches: dict[str, Any] = {}
        self._typed: dict[str, bool] = {}

    def close(self) -> None:
        for source in self._sources.values():
            try:
                source.get_execution_engine().close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def __enter__(self) -> GxValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _batch(self, plan: TablePlan) -> Any:
        """The whole-table batch of ``plan``'s table: one table asset per table for the life of the context."""
        if plan.name not in self._batches:
            source = self._sources[plan.table.schema]
            asset = source.add_table_asset(name=f"table_{len(self._batches) + 1}", table_name=plan.table.name)
            self._batches[plan.name] = asset.add_batch_definition_whole_table("whole").get_batch()
            with warnings.catch_warnings():  # "did not recognize type": exactly what is being asked
                warnings.simplefilter("ignore", sa.exc.SAWarning)
                columns = sa.inspect(source.get_engine()).get_columns(plan.table.name, schema=plan.table.schema)
            self._typed[plan.name] = not any(isinstance(c["type"], sa.types.NullType) for c in columns)
        return self._batches[plan.name]

    def validate(
        self, plan: TablePlan, checks: list[Check], start: str | None = None, end: str | None = None
    ) -> BatchOutcome:
        """Validate ``checks`` of ``plan``'s table on the rows ``start <= time column < end`` (all rows when the table
        has no time column or no bounds are given).

        One verdict pass in BOOLEAN_ONLY keeps the SQL to what the verdict needs: the column rules as one bundled
        aggregate, every CHECK of the table in one unexpected-rows query, each key and foreign key in its own. Only
        when something failed do the failing rules run again with BASIC, to name the failing rule and count its
        rows.
        """
        where = Slice(plan, start, end)
        batch = self._batch(plan)
        typed = self._typed[plan.name]
        kinds = COLUMN_KINDS if typed else ()
        outcome = BatchOutcome([Outcome(c, True, 0) for c in checks])
        row_checks = [i for i, c in enumerate(checks) if c.kind not in kinds and c.predicate]
        verdict = [expectation_for(c, where, i, typed) for i, c in enumerate(checks) if i not in row_checks]
        if len(row_checks) == 1:
            verdict.append(expectation_for(checks[row_checks[0]], where, row_checks[0], typed))
        elif row_checks:
            # Every CHECK is a predicate on one row: the verdict asks for all of them in a single scan.
            predicate = " OR ".join(f"({checks[i].predicate})" for i in row_checks)
            verdict.append(expectation_for(Check(checks[0].table, "checks", "check", predicate=predicate), where, -1))
        failing: list[int] = []
        if verdict:
            suite = gx.ExpectationSuite(name="verdict", expectations=verdict)
            for result in batch.validate(suite, result_format="BOOLEAN_ONLY").results:
                i, error = _index(result), _error(result)
                members = row_checks if i == -1 else [i]
                if error is not None:
                    for j in members:
                        outcome.outcomes[j] = Outcome(checks[j], False, 0, error)
                elif not result.success:
                    failing += members  # which rule failed, and on how many rows, is settled by the counting pass
        if failing:
            recount = [expectation_for(checks[i], where, i, typed) for i in failing]
            suite = gx.ExpectationSuite(name="counts", expectations=recount)
            for result in batch.validate(suite, result_format=COUNTS).results:
                i, error = _index(result), _error(result)
                outcome.outcomes[i] = Outcome(checks[i], bool(result.success) and error is None,
                                              _unexpected(result, checks[i]), error)
        return outcome


def _error(result: ExpectationValidationResult) -> str | None:
    """The first exception GX recorded for ``result`` (its info is flat, or keyed by metric)."""
    info = result.exception_info or {}
    candidates = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "exception").strip().splitlines()[0]
    return None

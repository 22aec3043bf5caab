"""Run integrity checks with Great Expectations 1.x: ephemeral context, PostgreSQL data source, SQL pushdown only.

Each batch is a query asset whose WHERE clause is a range on the time column (``>= day AND < next day``) so
PostgreSQL prunes partitions and uses indexes; GX's own daily batching filters on EXTRACT(...) and scans everything.
Nothing is loaded into pandas: column rules become aggregate SQL, multi-row rules count their unexpected rows.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

# GX's own switch, read when it is imported (a write of GX's interface, not a read of dbops' configuration).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from great_expectations.core.expectation_validation_result import ExpectationValidationResult  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.expectations.metrics import util as gx_metric_util  # noqa: E402

from dbops.validate.suite import Check  # noqa: E402

# GX logs every metric at INFO: keep Dagster's and the CLI's output readable.
logging.getLogger("great_expectations").setLevel(logging.WARNING)


_gx_column_fallback = gx_metric_util.column_reflection_fallback


def _columns_without_reading_rows(
    selectable: Any, dialect: Any, sqlalchemy_engine: Any, schema_name: Any = None
) -> Any:
    """GX learns a query asset's columns by executing the whole query and reading the cursor's description: libpq
    first pulls every row of the batch into this process (1.1 GB of RSS and a full extra scan for a 30-day range of
    10 million rows). For a custom query, ask PostgreSQL for the columns of ``LIMIT 0`` instead; anything else keeps
    GX's own path."""
    if isinstance(selectable, sa.TextClause) and dialect.name.lower() == "postgresql":
        query = sa.text(f"SELECT * FROM ({selectable.text}) AS columns_only LIMIT 0")  # noqa: S608 - GX's own query
        with sqlalchemy_engine.engine.connect() as connection:
            return [{"name": name} for name in connection.execute(query).keys()]
    return _gx_column_fallback(selectable, dialect, sqlalchemy_engine, schema_name)


gx_metric_util.column_reflection_fallback = _columns_without_reading_rows


class ExpectNoUnexpectedRows(gxe.UnexpectedRowsExpectation):
    """UnexpectedRowsExpectation that only counts.

    The stock class runs its query twice (fetch up to 200 rows, then count), doubling the cost of every orphan and
    duplicate scan; dbops samples the few rows it reports itself, and only for failing rules.
    """

    metric_dependencies: ClassVar[tuple[str, ...]] = ("unexpected_rows_query.row_count",)

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine: Any = None) -> Any:
        count = int(metrics["unexpected_rows_query.row_count"])
        return {"success": count == 0, "result": {"observed_value": count}}


def expectation_for(check: Check, index: int = 0) -> gxe.Expectation:
    """The GX expectation class that states ``check``; ``index`` comes back in the result's meta."""
    meta = {"table": check.table, "rule": check.rule, "dbops_index": index}
    if check.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=check.column, meta=meta)
    if check.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=check.column, value_set=list(check.value_set), meta=meta)
    if check.kind == "between":
        return gxe.ExpectColumnValuesToBeBetween(
            column=check.column, min_value=check.min, max_value=check.max, meta=meta
        )
    if check.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=check.column, regex=check.pattern, meta=meta)
    if check.kind == "row_count":
        return gxe.ExpectTableRowCountToBeBetween(min_value=check.min, max_value=check.max, meta=meta)
    if check.rows_query:
        query = check.rows_query
    else:
        # The predicate's own braces (regex quantifiers in a CHECK) are doubled: GX fills {batch} with str.format.
        predicate = (check.predicate or "false").replace("{", "{{").replace("}", "}}")
        query = "SELECT * FROM {batch} WHERE " + predicate  # noqa: S608 - predicate built from catalog/identifiers
    return ExpectNoUnexpectedRows(unexpected_rows_query=query, meta=meta)


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


class GxValidator:
    """One ephemeral GX context and PostgreSQL data source for the life of a validation run."""

    def __init__(self, url: str) -> None:
        # The URL reaches GX by ${VAR} substitution from this context's own runtime environment (not os.environ):
        # its password never lands in a GX config object or log line.
        self._env_var = f"DBOPS_GX_URL_{uuid.uuid4().hex[:8].upper()}"
        runtime = {self._env_var: url.replace("postgres://", "postgresql://", 1)}
        self.context = gx.get_context(mode="ephemeral", runtime_environment=runtime)
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_postgres(
            name="dbops", connection_string="${" + self._env_var + "}"
        )
        self._n = 0
        self._assets: dict[str, tuple[Any, Any]] = {}

    def close(self) -> None:
        try:
            self.datasource.get_execution_engine().close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    def __enter__(self) -> GxValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _batch(self, key: str, batch_query: str) -> Any:
        """The batch of ``batch_query``. One query asset per table, re-aimed at each day: adding and deleting an
        asset per batch re-serializes the whole context configuration every time."""
        if key not in self._assets:
            self._n += 1
            asset = self.datasource.add_query_asset(name=f"batch_{self._n}", query=batch_query)
            self._assets[key] = (asset, asset.add_batch_definition_whole_table("all"))
        asset, definition = self._assets[key]
        asset.query = batch_query
        return definition.get_batch()

    def validate(self, batch_query: str, checks: list[Check], key: str | None = None) -> BatchOutcome:
        """Validate one batch (a SELECT with its range predicate) against ``checks``.

        Two passes keep the SQL to what the verdict needs. The verdict pass runs in BOOLEAN_ONLY: all row-level rules
        of the table share one unexpected-rows query, and each multi-row rule (duplicates, orphans) has its own. Only
        when something failed do the rules run again through their own GX expectation classes
        (ExpectColumnValuesToNotBeNull, ...ToBeInSet, ...ToBeBetween, ...ToMatchRegex, unexpected rows) with BASIC,
        to name the failing rule and count its rows.
        """
        batch = self._batch(key or batch_query, batch_query)
        # Every row-level rule (NOT NULL, CHECK, value set, range, pattern) is one predicate on one row: the verdict
        # asks for all of them in a single scan, as a hand-written query would.
        row_checks = [i for i, c in enumerate(checks) if c.predicate and c.kind != "row_count"]
        if len(row_checks) < 2:
            row_checks = []
        expectations = [expectation_for(c, i) for i, c in enumerate(checks) if i not in row_checks]
        if row_checks:
            predicate = " OR ".join(f"({checks[i].predicate})" for i in row_checks)
            expectations.append(expectation_for(Check(checks[0].table, "checks", "check", predicate=predicate), -1))
        suite = gx.ExpectationSuite(name="verdict", expectations=expectations)
        verdicts = {
            int(r.expectation_config.meta["dbops_index"]): r  # type: ignore[union-attr]
            for r in batch.validate(suite, result_format="BOOLEAN_ONLY").results
        }
        outcome = BatchOutcome([Outcome(c, True, 0) for c in checks])
        failing: list[int] = []
        for i, result in verdicts.items():
            error = _error(result)
            if i == -1:
                if error is not None:
                    for j in row_checks:
                        outcome.outcomes[j] = Outcome(checks[j], False, 0, error)
                elif not result.success:
                    failing += row_checks  # which rule failed is settled by the counting pass
                continue
            outcome.outcomes[i] = Outcome(checks[i], bool(result.success) and error is None, 0, error)
            if not result.success and error is None:
                failing.append(i)
        if failing:
            suite = gx.ExpectationSuite(name="counts", expectations=[expectation_for(checks[i], i) for i in failing])
            counted = batch.validate(suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 0})
            for result in counted.results:
                i = int(result.expectation_config.meta["dbops_index"])  # type: ignore[union-attr]
                error = _error(result)
                outcome.outcomes[i] = Outcome(
                    checks[i], bool(result.success) and error is None, _unexpected(result, checks[i]), error
                )
        return outcome


def _error(result: ExpectationValidationResult) -> str | None:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception")
    return None

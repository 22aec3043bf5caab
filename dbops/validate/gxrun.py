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

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.core.expectation_validation_result import ExpectationValidationResult  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from dbops.validate.suite import Check  # noqa: E402

# GX logs every metric at INFO: keep Dagster's and the CLI's output readable.
logging.getLogger("great_expectations").setLevel(logging.WARNING)


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
        # The URL reaches GX by ${VAR} substitution: its password never lands in a GX config object or log line.
        self._env_var = f"DBOPS_GX_URL_{uuid.uuid4().hex[:8].upper()}"
        os.environ[self._env_var] = url.replace("postgres://", "postgresql://", 1)
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_postgres(
            name="dbops", connection_string="${" + self._env_var + "}"
        )
        self._n = 0

    def close(self) -> None:
        os.environ.pop(self._env_var, None)
        try:
            self.datasource.get_execution_engine().close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    def __enter__(self) -> GxValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def validate(self, batch_query: str, checks: list[Check]) -> BatchOutcome:
        """Validate one batch (a SELECT with its range predicate) against ``checks``."""
        self._n += 1
        asset = self.datasource.add_query_asset(name=f"batch_{self._n}", query=batch_query)
        batch = asset.add_batch_definition_whole_table("all").get_batch()
        suite = gx.ExpectationSuite(
            name=f"suite_{self._n}", expectations=[expectation_for(c, i) for i, c in enumerate(checks)]
        )
        results = batch.validate(suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 0})
        outcome = BatchOutcome()
        for check, result in zip(checks, _in_check_order(results.results, len(checks)), strict=True):
            error = None
            info = result.exception_info or {}
            if info.get("raised_exception"):
                error = str(info.get("exception_message") or "exception")
            outcome.outcomes.append(
                Outcome(check, bool(result.success) and error is None, _unexpected(result, check), error)
            )
        self.datasource.delete_asset(asset.name)
        return outcome


def _in_check_order(results: list[ExpectationValidationResult], count: int) -> list[ExpectationValidationResult]:
    """GX does not promise the suite's order (and unsaved expectations have no id): match by our index in meta."""
    by_index = {int(r.expectation_config.meta["dbops_index"]): r for r in results if r.expectation_config}
    return [by_index[i] for i in range(count)]

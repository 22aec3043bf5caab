"""Group ``validate``: the data kept the promises of its schema and of the operator's rules.

The tables with a time column are validated one UTC day per partition (a backfill is one ranged run,
``BackfillPolicy.single_run``); the others as a whole; indexes with amcheck. Each asset carries its own blocking ERROR
check, so a failure stops everything downstream of it. A check that evaluated nothing (no tables, no rules, no rows on
the day, no indexes) is a WARN naming the reason, never a pass.
"""


import warnings
from datetime import date
from typing import Any

import dagster as dg

from dbops.components.checks import nothing_checked
from dbops.components.metadata import figures, table
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, launch_target
from dbops.components.validate.resources import daily_partitions, validator
from dbops.validate.amcheck import IndexReport, check_indexes
from dbops.validate.run import ValidationReport

GROUP = "validate"
KINDS = {"postgres", "great_expectations"}
CHECK_NAME = "no_integrity_violations"
MAX_SAMPLE_FAILURES = 10
MAX_TABLE_ROWS = 200  # rows of a metadata table: every violation of a bad day, without flooding the event log


def failures_table(report: ValidationReport) -> dg.MetadataValue:
    """One batch's failures (table, rule, unexpected rows, a few masked sample rows) as a table."""
    rows = [{"table": f.table, "rule": f.rule, "unexpected_rows": f.unexpected, "error": f.error,
             "sample_rows": str(f.samples)[:300] if f.samples else None}
            for f in report.failures][:MAX_TABLE_ROWS]
    return table(rows, columns=["table", "rule", "unexpected_rows", "error", "sample_rows"])


def status_of(report: ValidationReport) -> str:
    """passed, failed, no rows (a day without a row in any table validated by day), or nothing checked."""
    if report.failures:
        return "failed"
    if report.nothing_checked:
        return "no rows" if report.rows == 0 and report.reason and report.reason.startswith("no rows") else \
            "nothing checked"
    return "passed"


def report_metadata(report: ValidationReport) -> dict[str, Any]:
    """One batch's own figures (a day of integrity_validation, or the dimension tables), plotted over time by the UI:
    ``violations`` (rules that failed), the unexpected rows, the rows it held, the rules evaluated, its seconds."""
    metadata = figures({
        "status": status_of(report),
        "reason": report.reason if report.nothing_checked else None,
        "violations": report.failed,
        "expectations_evaluated": report.evaluated,
        "expectations_failed": report.failed,
        "unexpected_rows": report.unexpected,
        "rows": report.rows,
        "seconds": report.seconds,
    })
    if report.failures:
        metadata["failures"] = failures_table(report)
    return metadata


def report_line(report: ValidationReport) -> str:
    """One line for the run's log."""
    if report.nothing_checked:
        return f"{report.scope}: nothing checked: {report.reason}"
    return (f"{report.scope}: {report.rows:,} rows, {report.evaluated} expectations, {report.failed} failed, "
            f"{report.unexpected} unexpected rows, {report.seconds:.1f} s")


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_SAMPLE_FAILURES])
    return shown + (f" and {len(items) - MAX_SAMPLE_FAILURES} more" if len(items) > MAX_SAMPLE_FAILURES else "")


def check_result(reports: list[ValidationReport], partitioned: bool = True) -> dg.AssetCheckResult:
    """One evaluation for the run, naming each violation's partition (its day) when ``partitioned``: a table of the
    failing (partition, table, rule, unexpected rows) and of the partitions that had nothing to check. A violation
    fails at ERROR; no violation but a partition without rows (or rules) is a WARN naming them, never a pass."""
    lead = ["partition"] if partitioned else []
    failing = [{"partition": r.scope, "table": f.table, "rule": f.rule, "unexpected_rows": f.unexpected}
               for r in reports for f in r.failures]
    unchecked = [r for r in reports if r.nothing_checked]
    failed_days = sorted({r.scope for r in reports if r.failures})
    values: dict[str, Any] = {"violations": len(failing), "unexpected_rows": sum(r.unexpected for r in reports)}
    if partitioned:
        values.update({"partitions_validated": len(reports), "partitions_failed": len(failed_days),
                       "partitions_nothing_checked": len(unchecked)})
    metadata = figures(values)
    if failing:
        metadata["failing_partitions" if partitioned else "failures"] = table(
            failing[:MAX_TABLE_ROWS], columns=[*lead, "table", "rule", "unexpected_rows"])
    if unchecked and partitioned:
        metadata["partitions_not_checked"] = table(
            [{"partition": r.scope, "reason": r.reason} for r in unchecked][:MAX_TABLE_ROWS],
            columns=["partition", "reason"])
    if not failing and unchecked:
        reason = "; ".join(f"{r.scope}: {r.reason}" for r in unchecked[:MAX_SAMPLE_FAILURES])
        if len(unchecked) > MAX_SAMPLE_FAILURES:
            reason += f"; and {len(unchecked) - MAX_SAMPLE_FAILURES} more"
        return nothing_checked(reason, CHECK_NAME, f"nothing checked: {reason}", **metadata)
    if failing:
        where = f" in {_listed(failed_days)}" if partitioned else ""
        description = f"{len(failing)} violation(s){where}: " + _listed([f"{f['table']} {f['rule']}" for f in failing])
    else:
        description = f"no violation in {len(reports)} partition(s)" if partitioned else "no violation"
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description,
    )


class IndexIntegrityConfig(dg.Config):
    thorough: bool = False  # heapallindexed: also verify every heap row is in the index (reads the whole table)


def index_metadata(report: IndexReport) -> dict[str, Any]:
    metadata = figures({
        "indexes_checked": report.checked,
        "corrupt_indexes": len(report.problems),
        "not_valid_constraints": len(report.not_valid),
        "thorough": report.thorough,
        "seconds": report.seconds,
        "reason": report.reason,
    })
    if report.problems:
        metadata["problems"] = table([{"index": p.index, "table": p.table, "error": p.error} for p in report.problems],
                                     columns=["index", "table", "error"])
    if report.not_valid:
        metadata["not_valid"] = table([{"table": c.table, "constraint": c.name, "definition": c.definition}
                                       for c in report.not_valid], columns=["table", "constraint", "definition"])
    return metadata


def build(target: str) -> list[dg.AssetsDefinition]:
    """``target``'s validation assets: its fact tables by day, its dimensions, its indexes."""

    # backfill_policy is a beta parameter of Dagster 1.13; dbops uses it on purpose (a 30-day backfill is one run, one
    # database session), so its BetaWarning is acknowledged here, where the decorator is built, and nowhere else.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Parameter `backfill_policy` .* is currently in beta", dg.BetaWarning)
        _daily_single_run = dg.asset(
            key=asset_key(target, "integrity_validation"),
            deps=[asset_key(target, "schema_migrations")],
            group_name=GROUP,
            kinds=KINDS,
            pool=pool(target),
            partitions_def=daily_partitions(target),
            backfill_policy=dg.BackfillPolicy.single_run(),
            check_specs=[dg.AssetCheckSpec(
                CHECK_NAME, asset=asset_key(target, "integrity_validation"), blocking=True,
                description="Every rule held on every day the run validated. A violation fails at ERROR; the "
                            "metadata's failing_partitions table names each one's day, table, rule and unexpected "
                            "rows. No violation but a day without rows (or rules) is a WARN naming the days, never a "
                            "pass.")],
            description="Validates one UTC day of the target's tables with a time column (validation.time_columns, "
                        "or a range partition key that is a date or timestamp) against their NOT NULL, keys, foreign "
                        "keys and CHECK constraints (NOT VALID ones included) and the target's rule files, with Great "
                        "Expectations on range-predicate batches (SQL pushdown only). Each day's materialization "
                        "carries its own figures (status, violations, unexpected rows, rows, expectations, seconds: "
                        "in a ranged run, its share of the range's batches plus its own re-runs). A day without rows "
                        "is status `no rows` and a WARN. The first day is validation.start_date, else the day of the "
                        "oldest row.",
        )


    @_daily_single_run
    def integrity_validation(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
        days = [date.fromisoformat(k) for k in context.partition_keys]
        span = f"{days[0]}" if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} partitions, one ranged run)"
        context.log.info(f"{target}: integrity validation of {span}: reading the catalog and the rules")
        with validator(target, database.for_target(target).target_url) as integrity:
            tables = ", ".join(p.name for p in integrity.fact_plans) or "none"
            context.log.info(f"tables validated by day: {tables}")
            reports = integrity.validate_days(days, progress=context.log.info)
        # Each partition's materialization carries its own figures (a ranged run would otherwise give every day the
        # run's totals): Dagster merges the metadata added for a partition key into that partition's event.
        for report in reports:
            context.add_asset_metadata(report_metadata(report), partition_key=report.scope)
            context.log.info(report_line(report))
            for failure in report.failures:
                error = f" ({failure.error})" if failure.error else ""
                context.log.warning(f"{report.scope}: FAIL {failure.table} {failure.rule}: "
                                    f"{failure.unexpected} unexpected rows{error}")
        return dg.MaterializeResult(metadata=figures({"tables": tables}), check_results=[check_result(reports)])


    @dg.asset(
        key=asset_key(target, "dimension_integrity"),
        deps=[asset_key(target, "schema_migrations")],
        group_name=GROUP,
        kinds=KINDS,
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec(
            CHECK_NAME, asset=asset_key(target, "dimension_integrity"), blocking=True,
            description="Every rule of the tables without a time column held (ERROR names the table and rule); no "
                        "table, no rule or only empty tables is a WARN with the reason.")],
        description="Validates the target's tables without a time column as a whole against their constraints and "
        "the target's rule files. No table, no rule or only empty tables is a WARN.",
    )
    def dimension_integrity(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
        context.log.info(f"{target}: dimension integrity: reading the catalog and the rules")
        with validator(target, database.for_target(target).target_url) as integrity:
            tables = ", ".join(p.name for p in integrity.dimension_plans) or "none"
            context.log.info(f"tables validated whole: {tables}")
            report = integrity.validate_dimensions(progress=context.log.info)
        context.log.info(report_line(report))
        metadata = report_metadata(report)
        metadata.update(figures({"tables": tables}))
        return dg.MaterializeResult(metadata=metadata, check_results=[check_result([report], partitioned=False)])


    @dg.asset(
        key=asset_key(target, "index_integrity"),
        deps=[asset_key(target, "schema_migrations")],
        group_name=GROUP,
        kinds={"postgres"},
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec(
            "indexes_intact", asset=asset_key(target, "index_integrity"), blocking=True,
            description="amcheck found no corrupt btree index (ERROR names each); no index to check is a WARN.")],
        description="amcheck's bt_index_check on every btree index (thorough mode adds heapallindexed), and the "
        "constraints still NOT VALID, whose existing rows PostgreSQL never checked.",
    )
    def index_integrity(
        context: dg.AssetExecutionContext, database: DatabaseResource, config: IndexIntegrityConfig
    ) -> dg.MaterializeResult:
        mode = "bt_index_check + heapallindexed" if config.thorough else "bt_index_check"
        context.log.info(f"{target}: index integrity ({mode}) started")
        with database.for_target(target).connect() as conn:
            report = check_indexes(conn, launch_target(target).schemas, thorough=config.thorough)
        context.log.info(f"{report.checked} indexes checked, {len(report.problems)} corrupt, "
                         f"{len(report.not_valid)} NOT VALID constraints, {report.seconds:.1f} s")
        for problem in report.problems:
            context.log.error(f"corrupt index {problem.index}: {problem.error}")
        for con in report.not_valid:
            context.log.warning(f"constraint {con.table}.{con.name} is NOT VALID: existing rows were never checked")
        counts = figures({"corrupt_indexes": len(report.problems), "indexes_checked": report.checked})
        if report.reason and not report.problems:
            check = nothing_checked(report.reason, "indexes_intact", f"nothing checked: {report.reason}", **counts)
        else:
            check = dg.AssetCheckResult(
                check_name="indexes_intact",
                passed=not report.problems,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=counts,
            )
        return dg.MaterializeResult(metadata=index_metadata(report), check_results=[check])

    return [integrity_validation, dimension_integrity, index_integrity]

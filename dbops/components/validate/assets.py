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

from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, launch_target
from dbops.components.validate.resources import daily_partitions, validator
from dbops.validate.amcheck import IndexReport, check_indexes
from dbops.validate.run import ValidationReport

GROUP = "validate"
KINDS = {"postgres", "great_expectations"}
CHECK_NAME = "no_integrity_violations"
MAX_SAMPLE_FAILURES = 10


def failures_table(reports: list[ValidationReport]) -> str:
    """A markdown table of failures with a few masked sample rows, small enough for the UI."""
    rows = [
        f"| {r.scope} | {f.table} | {f.rule} | {f.unexpected} | {str(f.samples)[:300].replace('|', '/')} |"
        for r in reports
        for f in r.failures
    ][:50]
    if not rows:
        return "no violations"
    return "| partition | table | rule | unexpected | sample rows |\n|---|---|---|---|---|\n" + "\n".join(rows)


def report_metadata(reports: list[ValidationReport]) -> dict[str, Any]:
    """Stable numeric keys (plotted over time by the UI) and the failures."""
    return {
        "expectations_evaluated": dg.MetadataValue.int(sum(r.evaluated for r in reports)),
        "expectations_failed": dg.MetadataValue.int(sum(r.failed for r in reports)),
        "unexpected_rows": dg.MetadataValue.int(sum(r.unexpected for r in reports)),
        "batches": dg.MetadataValue.int(len(reports)),
        "seconds": dg.MetadataValue.float(round(sum(r.seconds for r in reports), 3)),
        "failures": dg.MetadataValue.md(failures_table(reports)),
    }


def nothing_checked(check_name: str, reason: str, metadata: dict[str, Any] | None = None) -> dg.AssetCheckResult:
    """Nothing was evaluated: a warning naming why, never a pass."""
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"reason": dg.MetadataValue.text(reason), **(metadata or {})},
        description=f"nothing checked: {reason}",
    )


def check_result(reports: list[ValidationReport]) -> dg.AssetCheckResult:
    failed = [f"{r.scope} {f.table} {f.rule}" for r in reports for f in r.failures]
    metadata = {
        "violations": dg.MetadataValue.int(len(failed)),
        "unexpected_rows": dg.MetadataValue.int(sum(r.unexpected for r in reports)),
        "first_violations": dg.MetadataValue.text("; ".join(failed[:MAX_SAMPLE_FAILURES]) or "none"),
    }
    unchecked = [r for r in reports if r.nothing_checked]
    if not failed and unchecked:
        reason = "; ".join(f"{r.scope}: {r.reason}" for r in unchecked[:MAX_SAMPLE_FAILURES])
        if len(unchecked) > MAX_SAMPLE_FAILURES:
            reason += f"; and {len(unchecked) - MAX_SAMPLE_FAILURES} more"
        return nothing_checked(CHECK_NAME, reason, metadata)
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
    )


class IndexIntegrityConfig(dg.Config):
    thorough: bool = False  # heapallindexed: also verify every heap row is in the index (reads the whole table)


def index_metadata(report: IndexReport) -> dict[str, Any]:
    problems = "\n".join(f"- {p.index} on {p.table}: {p.error}" for p in report.problems) or "none"
    not_valid = "\n".join(f"- {c.table} {c.name}: {c.definition}" for c in report.not_valid) or "none"
    return {
        "indexes_checked": dg.MetadataValue.int(report.checked),
        "corrupt_indexes": dg.MetadataValue.int(len(report.problems)),
        "not_valid_constraints": dg.MetadataValue.int(len(report.not_valid)),
        "thorough": dg.MetadataValue.bool(report.thorough),
        "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "problems": dg.MetadataValue.md(problems),
        "not_valid": dg.MetadataValue.md(not_valid),
    }


def build(target: str) -> list[dg.AssetsDefinition]:
    """``target``'s validation assets: its fact tables by day, its dimensions, its indexes."""

    # backfill_policy is a beta parameter of Dagster 1.13; dbops uses it on purpose (a 30-day backfill is one run, one
    # database session), so its BetaWarning is acknowledged here, where the decorator is built, and nowhere else.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Parameter `backfill_policy` .* is currently in beta", dg.BetaWarning)
        _daily_single_run = dg.asset(
            key=asset_key(target, "integrity_validation"),
            group_name=GROUP,
            kinds=KINDS,
            pool=pool(target),
            partitions_def=daily_partitions(target),
            backfill_policy=dg.BackfillPolicy.single_run(),
            check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset=asset_key(target, "integrity_validation"), blocking=True)],
            description="Validates one UTC day of the target's tables with a time column (validation.time_columns, "
                        "or a range partition key that is a date or timestamp) against their NOT NULL, keys, foreign "
                        "keys and CHECK constraints (NOT VALID ones included) and the target's rule files, with Great "
                        "Expectations on range-predicate batches (SQL pushdown only). A day without rows is a WARN.",
        )


    @_daily_single_run
    def integrity_validation(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
        days = [date.fromisoformat(k) for k in context.partition_keys]
        with validator(target, database.for_target(target).target_url) as integrity:
            reports = integrity.validate_days(days)
            for day, report in zip(days, reports, strict=True):
                context.log.info(report.render())
                # A ranged run materializes every day with the same metadata: each day's own figures go on record too.
                context.log_event(
                    dg.AssetObservation(asset_key=context.asset_key, partition=day.isoformat(),
                                        metadata=report_metadata([report]))
                )
        metadata = report_metadata(reports)
        metadata["tables"] = dg.MetadataValue.text(", ".join(p.name for p in integrity.fact_plans) or "none")
        metadata["rows"] = dg.MetadataValue.int(sum(r.rows for r in reports))
        return dg.MaterializeResult(metadata=metadata, check_results=[check_result(reports)])


    @dg.asset(
        key=asset_key(target, "dimension_integrity"),
        group_name=GROUP,
        kinds=KINDS,
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset=asset_key(target, "dimension_integrity"), blocking=True)],
        description="Validates the target's tables without a time column as a whole against their constraints and "
        "the target's rule files. No table, no rule or only empty tables is a WARN.",
    )
    def dimension_integrity(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
        with validator(target, database.for_target(target).target_url) as integrity:
            report = integrity.validate_dimensions()
            tables = ", ".join(p.name for p in integrity.dimension_plans) or "none"
        context.log.info(report.render())
        metadata = report_metadata([report])
        metadata["tables"] = dg.MetadataValue.text(tables)
        return dg.MaterializeResult(metadata=metadata, check_results=[check_result([report])])


    @dg.asset(
        key=asset_key(target, "index_integrity"),
        group_name=GROUP,
        kinds={"postgres"},
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec("indexes_intact", asset=asset_key(target, "index_integrity"), blocking=True)],
        description="amcheck's bt_index_check on every btree index (thorough mode adds heapallindexed), and the "
        "constraints still NOT VALID, whose existing rows PostgreSQL never checked.",
    )
    def index_integrity(
        context: dg.AssetExecutionContext, database: DatabaseResource, config: IndexIntegrityConfig
    ) -> dg.MaterializeResult:
        with database.for_target(target).connect() as conn:
            report = check_indexes(conn, launch_target(target).schemas, thorough=config.thorough)
        for problem in report.problems:
            context.log.error(f"corrupt index {problem.index}: {problem.error}")
        for con in report.not_valid:
            context.log.warning(f"constraint {con.table}.{con.name} is NOT VALID: existing rows were never checked")
        counts = {"corrupt_indexes": dg.MetadataValue.int(len(report.problems)),
                  "indexes_checked": dg.MetadataValue.int(report.checked)}
        if report.reason and not report.problems:
            check = nothing_checked("indexes_intact", report.reason, counts)
        else:
            check = dg.AssetCheckResult(
                check_name="indexes_intact",
                passed=not report.problems,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=counts,
            )
        return dg.MaterializeResult(metadata=index_metadata(report), check_results=[check])

    return [integrity_validation, dimension_integrity, index_integrity]

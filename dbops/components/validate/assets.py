"""Group ``validate``: the data kept the promises of its schema and of the operator's rules.

The fact tables are validated one UTC day per partition (a backfill is one ranged run, ``BackfillPolicy.single_run``);
the dimension tables as a whole; indexes with amcheck. Each asset carries its own blocking ERROR check, so a failure
stops everything downstream of it.
"""


import warnings
from datetime import date
from typing import Any

import dagster as dg

from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource
from dbops.components.validate.resources import daily_partitions, rule_files
from dbops.validate.amcheck import IndexReport, check_indexes
from dbops.validate.run import IntegrityValidator, ValidationReport

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


def check_result(reports: list[ValidationReport]) -> dg.AssetCheckResult:
    failed = [f"{r.scope} {f.table} {f.rule}" for r in reports for f in r.failures]
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "violations": dg.MetadataValue.int(len(failed)),
            "unexpected_rows": dg.MetadataValue.int(sum(r.unexpected for r in reports)),
            "first_violations": dg.MetadataValue.text("; ".join(failed[:MAX_SAMPLE_FAILURES]) or "none"),
        },
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
            description="Validates one UTC day of the fact tables (orders, order_items, payments, audit_log...) "
                        "against the catalog's NOT NULL, keys, foreign keys and CHECK constraints and the rules in "
                        "sql/expectations, with Great Expectations on range-predicate query batches (SQL pushdown "
                        "only).",
        )


    @_daily_single_run
    def integrity_validation(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
        days = [date.fromisoformat(k) for k in context.partition_keys]
        with IntegrityValidator(database.for_target(target).target_url, *rule_files(target)) as validator:
            reports = []
            for day in days:
                report = validator.validate_day(day)
                reports.append(report)
                context.log.info(report.render())
                # A ranged run materializes every day with the same metadata: each day's own figures go on record too.
                context.log_event(
                    dg.AssetObservation(asset_key=context.asset_key, partition=day.isoformat(),
                                        metadata=report_metadata([report]))
                )
        metadata = report_metadata(reports)
        metadata["tables"] = dg.MetadataValue.text(", ".join(p.name for p in validator.fact_plans))
        return dg.MaterializeResult(metadata=metadata, check_results=[check_result(reports)])


    @dg.asset(
        key=asset_key(target, "dimension_integrity"),
        group_name=GROUP,
        kinds=KINDS,
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec(CHECK_NAME, asset=asset_key(target, "dimension_integrity"), blocking=True)],
        description="Validates the dimension tables (tenants, users, products, inventory...) as a whole against the "
        "catalog's constraints and the rules in sql/expectations.",
    )
    def dimension_integrity(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
        with IntegrityValidator(database.for_target(target).target_url, *rule_files(target)) as validator:
            report = validator.validate_dimensions()
            tables = ", ".join(p.name for p in validator.dimension_plans)
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
            report = check_indexes(conn, thorough=config.thorough)
        for problem in report.problems:
            context.log.error(f"corrupt index {problem.index}: {problem.error}")
        for con in report.not_valid:
            context.log.warning(f"constraint {con.table}.{con.name} is NOT VALID: existing rows were never checked")
        check = dg.AssetCheckResult(
            check_name="indexes_intact",
            passed=not report.problems,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"corrupt_indexes": dg.MetadataValue.int(len(report.problems))},
        )
        return dg.MaterializeResult(metadata=index_metadata(report), check_results=[check])

    return [integrity_validation, dimension_integrity, index_integrity]

"""``<target>/partition_maintenance`` (group ``maintain``): range partitions kept ahead, DEFAULT partitions watched,
old partitions retired behind a verified backup; checks ``partitions_ahead``, ``default_partition_empty`` (ERROR)
and ``retention_guarded`` (WARN). The work is dbops.maintain.partitions; see docs/partitions.md."""

from datetime import datetime
from typing import Any

import dagster as dg

from dbops.components import metadata as mt
from dbops.components.checks import nothing_checked
from dbops.components.naming import asset_key, pool
from dbops.components.resources import BackupResource, DatabaseResource, launch_target
from dbops.errors import DbopsError
from dbops.maintain.partitions import Report, covering_backup, maintain
from dbops.pg.connect import database_name

NOTHING = "nothing checked: no range-partitioned table"
DRILLS_READ = 50  # the latest restore_drill materializations looked at


def drilled_backups(instance: dg.DagsterInstance, target: str) -> set[str]:
    """The ids of the backups a restore drill of ``target`` passed on: its ``restore_drill`` materializations (their
    ``logical_backup_id`` / ``physical_backup_id``) whose run's ``drill_data_matches`` check passed. Drills are
    recorded nowhere else (not in the backup store)."""
    drilled: set[str] = set()
    for record in instance.fetch_materializations(asset_key(target, "restore_drill"), limit=DRILLS_READ).records:
        checks = instance.all_logs(record.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        if not any(e.dagster_event is not None and e.dagster_event.asset_check_evaluation_data.check_name ==
                   "drill_data_matches" and e.dagster_event.asset_check_evaluation_data.passed for e in checks):
            continue
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        drilled |= {str(metadata[k].value) for k in ("logical_backup_id", "physical_backup_id") if k in metadata}
    return drilled


def _checks(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("partitions_ahead", asset=key,
                          description="Every maintained table has partitions for the current period and "
                                      "partitions.ahead_monthly / ahead_daily periods after it."),
        dg.AssetCheckSpec("default_partition_empty", asset=key,
                          description="No DEFAULT partition holds rows (`dbops partitions move-default` moves them)."),
        dg.AssetCheckSpec("retention_guarded", asset=key,
                          description="Retention (partitions.retention_days) was not held back for want of a "
                                      "verified backup newer than the partitions due."),
    ]


def check_results(report: Report) -> list[dg.AssetCheckResult]:
    if not report.tables:
        names = ("partitions_ahead", "default_partition_empty", "retention_guarded")
        return [nothing_checked(NOTHING, name) for name in names]
    results = []
    maintained = report.maintained
    if not maintained:
        reasons = "; ".join(f"{t.qualified}: {t.reason}" for t in report.tables)
        results.append(nothing_checked(f"nothing checked: no table is maintained ({reasons})", "partitions_ahead"))
    else:
        behind = report.behind()
        results.append(dg.AssetCheckResult(
            check_name="partitions_ahead", passed=not behind, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"tables_checked": dg.MetadataValue.int(len(maintained)),
                      "behind": dg.MetadataValue.md("\n".join(
                          f"- {t.qualified}: {t.ahead} of {t.wanted} {t.period} partitions ahead"
                          + (f" ({'; '.join(t.skipped)})" if t.skipped else "") for t in behind) or "none")}))
    with_default = report.with_default()
    if not with_default:
        results.append(nothing_checked("nothing checked: no table has a DEFAULT partition", "default_partition_empty"))
    else:
        full = report.defaults_with_rows()
        unread = [t for t in with_default if t.default_rows is None]
        results.append(dg.AssetCheckResult(
            check_name="default_partition_empty", passed=not full and not unread, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"defaults_checked": dg.MetadataValue.int(len(with_default) - len(unread)),
                      "rows": dg.MetadataValue.md("\n".join(
                          [f"- {t.default.qualified} of {t.qualified}: {t.default_rows} rows, {t.default_range} — "  # type: ignore[union-attr]
                           f"`dbops partitions move-default --table {t.qualified}`" for t in full]
                          + [f"- {t.default.qualified} of {t.qualified}: not read ({'; '.join(t.skipped)})"  # type: ignore[union-attr]
                             for t in unread]) or "none")}))
    results.append(dg.AssetCheckResult(
        check_name="retention_guarded", passed=not report.retention_refused, severity=dg.AssetCheckSeverity.WARN,
        metadata={"retention": dg.MetadataValue.text(report.retention)}))
    return results


def materialization(report: Report) -> dg.MaterializeResult:
    ahead = {t.qualified: {"period": t.period, "ahead": t.ahead, "wanted": t.wanted,
                           "last_bound": str(t.last_bound() or "")} for t in report.maintained}
    return dg.MaterializeResult(
        metadata={
            "tables_maintained": dg.MetadataValue.int(len(report.maintained)),
            "partitions_created": dg.MetadataValue.int(len(report.created)),
            "created": dg.MetadataValue.md("\n".join(f"- {p}" for p in report.created) or "none"),
            "ahead": dg.MetadataValue.json(ahead),
            "default_rows": dg.MetadataValue.json({t.qualified: t.default_rows for t in report.with_default()}),
            "detached": dg.MetadataValue.md("\n".join(f"- {p}" for p in report.detached) or "none"),
            "partitions_detached": dg.MetadataValue.int(len(report.detached)),
            "not_maintained": dg.MetadataValue.json({t.qualified: t.reason for t in report.tables if not t.maintained}),
            "skipped": dg.MetadataValue.json({t.qualified: t.skipped for t in report.tables if t.skipped}),
            "retention": dg.MetadataValue.text(report.retention or "n/a"),
            **mt.figures({"seconds": float(report.seconds)}),
            **({"reason": dg.MetadataValue.text(NOTHING)} if not report.tables else {}),
        },
        check_results=check_results(report),
    )


def build_partition_maintenance(target: str) -> dg.AssetsDefinition:
    key = asset_key(target, "partition_maintenance")

    @dg.asset(
        key=key,
        group_name="maintain",
        deps=[asset_key(target, "schema_migrations")],
        pool=pool(target),
        kinds={"postgres"},
        check_specs=_checks(key),
        description="Keeps every range-partitioned table (date/timestamp key) partitions.ahead_monthly / ahead_daily "
        "periods ahead, in its own naming style, as the parent's owner with the grants of its partitions, each DDL "
        "under partitions.lock_timeout_s (a busy table is retried next run); watches the DEFAULT partitions; with "
        "partitions.retention_days, detaches older partitions only behind a verified backup newer than them.",
    )
    def partition_maintenance(context: dg.AssetExecutionContext, database: DatabaseResource,
                              backups: BackupResource) -> dg.MaterializeResult:
        database, backups = database.for_target(target), backups.for_target(target)
        settings = launch_target(target)
        url = database.target_url

        def ask(newer_than: datetime) -> tuple[dict[str, Any] | None, str]:
            try:
                store = backups.open_store()
            except DbopsError as exc:
                return None, f"no backup store: {exc}"
            return covering_backup(store, backups.master_key, newer_than, database_name(url),
                                   drilled_backups(context.instance, target))

        context.log.info(f"maintaining the range-partitioned tables of {database.display_url} "
                         f"({', '.join(settings.schemas) or 'every user schema'})")
        with database.connect() as conn:
            report = maintain(conn, settings.schemas, settings.partitions, ask)
        for line in report.render().splitlines():
            context.log.info(line)
        return materialization(report)

    return partition_maintenance


def build(target: str) -> dg.Definitions:
    return dg.Definitions(assets=[build_partition_maintenance(target)])

"""Physical backup schedules that need run config: a nightly full base backup and hourly incrementals."""

import dagster as dg


def _base_backup_schedule(name: str, cron: str, kind: str, description: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name,
        target=dg.AssetSelection.assets("base_backup"),
        cron_schedule=cron,
        execution_timezone="UTC",
        run_config=dg.RunConfig(ops={"base_backup": {"config": {"kind": kind}}}),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )


base_backup_nightly_full = _base_backup_schedule(
    "base_backup_nightly_full", "0 1 * * *", "full",
    "backup: a full base backup every night; each starts a new incremental chain")
base_backup_hourly_incremental = _base_backup_schedule(
    "base_backup_hourly_incremental", "30 2-23 * * *", "incremental",
    "backup: an incremental base backup every hour after the nightly full (PostgreSQL 17+); "
    "WAL archiving covers the minutes between")

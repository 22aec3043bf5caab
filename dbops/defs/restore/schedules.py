"""The weekly restore drill: an untested backup is not a backup."""

import dagster as dg

restore_drill_weekly = dg.ScheduleDefinition(
    name="restore_drill_weekly",
    target=dg.AssetSelection.assets("restore_drill"),
    cron_schedule="0 6 * * 6",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="restore: an untested backup is not a backup: restore, compare, time the RTO",
)

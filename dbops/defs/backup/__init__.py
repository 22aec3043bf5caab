"""Dagster group ``backup``: logical_backup and restore_drill with their checks, nightly backup, weekly drill."""

import dagster as dg

from dbops.defs.backup.assets import logical_backup, restore_drill

nightly_backup = dg.ScheduleDefinition(name="nightly_logical_backup", target=[logical_backup],
                                       cron_schedule="0 2 * * *", default_status=dg.DefaultScheduleStatus.STOPPED)
weekly_drill = dg.ScheduleDefinition(name="weekly_restore_drill", target=[restore_drill], cron_schedule="0 4 * * 0",
                                     default_status=dg.DefaultScheduleStatus.STOPPED)

defs = dg.Definitions(assets=[logical_backup, restore_drill], schedules=[nightly_backup, weekly_drill])

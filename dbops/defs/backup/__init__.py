"""Dagster group ``backup``: logical_backup and restore_drill (their schedules live in the monitoring table)."""

import dagster as dg

from dbops.defs.backup.assets import logical_backup, restore_drill

defs = dg.Definitions(assets=[logical_backup, restore_drill])

"""Dagster group ``backup``: logical_backup and restore_drill with their checks.

Their schedules (``logical_backup_daily``, ``restore_drill_weekly``) are built in ``dbops/definitions.py``.
"""

import dagster as dg

from dbops.defs.backup.assets import logical_backup, restore_drill

defs = dg.Definitions(assets=[logical_backup, restore_drill])

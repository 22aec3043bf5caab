"""Dagster group ``backup``: logical and base backups, the WAL archive and retention (the drill is group ``restore``).

The base backup schedules live in ``schedules.py``; the others (``logical_backup_daily``, ``wal_archive_every_15_min``,
``backup_retention_daily``) are built with every step's in ``dbops/definitions.py``.
"""

import dagster as dg

from dbops.defs.backup.assets import backup_retention, base_backup, logical_backup, wal_archive, wal_archive_sensor
from dbops.defs.backup.schedules import base_backup_hourly_incremental, base_backup_nightly_full

defs = dg.Definitions(
    assets=[logical_backup, base_backup, wal_archive, backup_retention],
    sensors=[wal_archive_sensor],
    schedules=[base_backup_nightly_full, base_backup_hourly_incremental],
)

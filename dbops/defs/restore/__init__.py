"""Dagster group ``restore``: the restore drill of the latest logical and base backups, and its weekly schedule."""

import dagster as dg

from dbops.defs.restore.assets import restore_drill
from dbops.defs.restore.schedules import restore_drill_weekly

defs = dg.Definitions(assets=[restore_drill], schedules=[restore_drill_weekly])

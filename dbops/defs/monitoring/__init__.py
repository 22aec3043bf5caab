"""Dagster group `monitoring`: the database_health observations, the alert sensor and the lifecycle schedules.

``build_schedules(asset_keys)`` is called by dbops/definitions.py with every asset key of the merged Definitions.
"""

import dagster as dg

from dbops.defs.monitoring.schedules import build_schedules
from dbops.defs.monitoring.sensors import database_health, database_health_sensor, dbops_alerts

defs = dg.Definitions(assets=[database_health], sensors=[database_health_sensor, dbops_alerts])

__all__ = ["build_schedules", "defs"]

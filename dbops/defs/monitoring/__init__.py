"""Dagster group `monitoring`: the database_health observations, the alert sensor and the lifecycle schedules.

``build_schedules(asset_keys)`` is called by dbops/definitions.py with every asset key of the merged Definitions.
The targets file is validated here, at load time, so a typo stops the code location with one clear line instead of
silencing the alerts; the alert sensor re-reads it at each tick.
"""

import dagster as dg

from dbops.defs.monitoring.schedules import build_schedules
from dbops.defs.monitoring.sensors import database_health, database_health_sensor, dbops_alerts
from dbops.monitor.targets import load_targets

load_targets()

defs = dg.Definitions(assets=[database_health], sensors=[database_health_sensor, dbops_alerts])

__all__ = ["build_schedules", "defs"]

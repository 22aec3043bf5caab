"""Dagster group ``health``: the database_health observations and the alert sensor.

The targets file is validated here, at load time, so a typo stops the code location with one clear line instead of
silencing the alerts; the alert sensor re-reads it at each tick.
"""

import dagster as dg

from dbops.defs.health.sensors import database_health, database_health_sensor, dbops_alerts, target_targets

target_targets()

defs = dg.Definitions(assets=[database_health], sensors=[database_health_sensor, dbops_alerts])

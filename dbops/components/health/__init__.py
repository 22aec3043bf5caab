"""Dagster group ``health``: one target's ``database_health`` observations, its alert sensor and ``alerts``, the
asset its notifications are recorded on (downstream of every lifecycle step).

The targets file is validated here, at load time, so a typo stops the code location with one clear line instead of
silencing the alerts; the alert sensor re-reads it at each tick.
"""

import dagster as dg

from dbops.components.health.checks import build_health_checks
from dbops.components.health.sensors import (
    alerts_asset,
    build_alert_sensor,
    build_database_health_sensor,
    database_health,
    target_targets,
)


def build(target: str) -> dg.Definitions:
    targets = target_targets(target)
    return dg.Definitions(assets=[database_health(target), alerts_asset(target)],
                          asset_checks=[build_health_checks(target, targets)],
                          sensors=[build_database_health_sensor(target), build_alert_sensor(target)])

"""Two sensors, no runs: one records `database_health` observations every minute, one turns missed targets into
notifications (Dagster's open-source edition has no alerting on failed asset checks)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import dagster as dg

from dbops.defs.resources import DatabaseResource, launch_target
from dbops.health.alerts import AlertEngine, Reading, metric_readings
from dbops.health.lifecycle import lifecycle_figures
from dbops.health.metrics import collect_health
from dbops.health.notify import alert_tick
from dbops.health.sinks import Sink, sinks_from_settings
from dbops.health.targets import Targets, load_targets

DATABASE_HEALTH = dg.AssetKey("database_health")

database_health = dg.AssetSpec(
    DATABASE_HEALTH,
    group_name="health",
    kinds={"postgres"},
    description="Health figures of the managed database and its host, observed every minute by the "
    "database_health_sensor (connections, sessions, locks, rates, cache hit, WAL, size, wraparound, lag).",
)


def health_observation(url: str, cursor: str | None) -> tuple[dg.AssetObservation, str]:
    """One observation of ``database_health`` and the cursor for the next (the raw counters rates need)."""
    previous = json.loads(cursor) if cursor else None
    sample = collect_health(url, previous)
    metadata: dict[str, dg.RawMetadataValue] = {k: float(v) for k, v in sorted(sample.metrics.items())}
    if sample.error:
        metadata["error"] = sample.error
    next_cursor = json.dumps(sample.state()) if sample.metrics.get("up") else (cursor or "")
    return dg.AssetObservation(asset_key=DATABASE_HEALTH, metadata=metadata), next_cursor


@dg.sensor(
    name="database_health_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every minute, samples the managed database and records the figures as an observation of "
    "database_health (no run is launched).",
)
def database_health_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    observation, cursor = health_observation(database.target_url, context.cursor)
    return dg.SensorResult(asset_events=[observation], cursor=cursor)


def _observation_metrics(record: dg.EventLogRecord) -> dict[str, float]:
    observation = record.asset_observation
    out: dict[str, float] = {}
    for key, value in (observation.metadata if observation else {}).items():
        raw = getattr(value, "value", value)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            out[key] = float(raw)
    return out


def collect_readings(instance: dg.DagsterInstance, targets: Targets, after: int | None,
                     now: float) -> tuple[list[Reading], int | None]:
    """Readings from health observations newer than ``after`` (the newest only on a first tick), the latest
    evaluation of every check target, and the lifecycle figures (backup age)."""
    readings: list[Reading] = []
    if after is None:
        result = instance.fetch_observations(DATABASE_HEALTH, limit=1)
    else:
        result = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=DATABASE_HEALTH, after_storage_id=after), limit=500, ascending=True)
    for record in result.records:
        readings += metric_readings(targets, _observation_metrics(record), float(record.timestamp))
        after = max(after or 0, record.storage_id)
    figures = lifecycle_figures(instance, targets.checks, now)
    if figures.backup_age_seconds is not None:
        readings += metric_readings(targets, {"backup_age_seconds": figures.backup_age_seconds}, now)
    for target in targets.checks:
        outcome = figures.checks.get((target.asset, target.check))
        if outcome is None:
            continue
        passed, _when = outcome
        detail = f"asset check {target.asset}/{target.check} {'passed' if passed else 'failed'}"
        readings.append(Reading(target.key, not passed, now, 0.0 if passed else 1.0, detail))
    return readings, after


def target_targets() -> Targets:
    """The default target's targets file (``targets_file``, DBOPS_TARGETS), read now."""
    return load_targets(launch_target().targets_file)


def target_sinks() -> list[Sink]:
    """The default target's alert sinks (``alerts``, DBOPS_ALERT_*), built now."""
    return sinks_from_settings(launch_target().alerts)


def build_alert_sensor(targets: Callable[[], Targets] = target_targets,
                       sinks: Callable[[], Sequence[Sink]] = target_sinks, *, name: str = "dbops_alerts",
                       retries: int = 3, backoff: float = 1.0,
                       default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING) -> dg.SensorDefinition:
    """The alert sensor; targets and sinks are loaded at each tick so a fixed file takes effect without a redeploy."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=60,
        default_status=default_status,
        description="Compares the latest database_health observations and asset-check evaluations with "
        "monitoring/targets.yml and notifies the configured sinks: once per incident, after the breach lasted "
        "its 'for', then 'resolved'; failed deliveries are retried next tick.",
    )
    def _alert_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        loaded = targets()
        state = json.loads(context.cursor) if context.cursor else {}
        engine = AlertEngine(loaded, state.get("engine"))
        readings, after = collect_readings(context.instance, loaded, state.get("after"), time.time())
        result = alert_tick(engine, readings, sinks(), retries=retries, backoff=backoff)
        for alert in result.alerts:
            context.log.info(alert.text())
        cursor = json.dumps({"after": after, "engine": engine.state})
        if not result.alerts:
            return dg.SensorResult(skip_reason=f"{len(readings)} reading(s), firing: "
                                               f"{', '.join(engine.firing()) or 'none'}", cursor=cursor)
        return dg.SensorResult(cursor=cursor)

    return _alert_sensor


dbops_alerts = build_alert_sensor()

"""Two sensors per target, no runs: one records ``<target>/database_health`` observations every minute, one turns
missed targets and failed runs, materializations and asset checks into notifications naming the target (Dagster's
open-source edition has no alerting on failed materializations or checks) and records them as observations of
``<target>/alerts``, the end of the lineage graph."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import dagster as dg

from dbops.components.health.checks import evaluation, target_pooler_url
from dbops.components.metadata import figures, number, table
from dbops.components.naming import asset_key, def_name
from dbops.components.resources import DatabaseResource, launch_target
from dbops.health.alerts import RESOLVED, Alert, AlertEngine, Reading, failure_readings, metric_readings
from dbops.health.lifecycle import failure_outcomes, lifecycle_figures
from dbops.health.metrics import collect_health
from dbops.health.notify import alert_tick
from dbops.health.runbooks import DEFAULT_RUNBOOK_BASE
from dbops.health.sinks import Sink, sinks_from_settings
from dbops.health.targets import Targets, load_targets
from dbops.health.verdicts import changed, judge, outcome


def database_health(target: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        asset_key(target, "database_health"),
        group_name="health",
        kinds={"postgres"},
        description=f"Health figures of {target}'s database and its host, observed every minute by the "
        f"{def_name(target, 'database_health_sensor')} (connections, sessions, locks, rates, cache hit, WAL, size, "
        "wraparound, lag).",
    )


# The lifecycle assets whose failures (and missed targets) end in alerts: migrate -> catalog -> profile/advice -> load
# test -> backup -> drill -> integrity -> audit -> maintenance -> health -> alerts.
ALERTED_ASSETS = ("schema_migrations", "schema_catalog", "query_profile", "index_advice", "load_test", "logical_backup",
                  "base_backup", "wal_archive", "backup_retention", "restore_drill", "integrity_validation",
                  "dimension_integrity", "index_integrity", "security_audit", "partition_maintenance",
                  "materialized_views", "database_health", "log_report")


def alerts_asset(target: str) -> dg.AssetSpec:
    """``<target>/alerts``: observed (never materialized) by the alert sensor each tick it notifies something."""
    return dg.AssetSpec(
        asset_key(target, "alerts"),
        deps=[asset_key(target, name) for name in ALERTED_ASSETS],
        group_name="health",
        kinds={"dagster", "alerting"},
        description=f"Notifications of missed targets and failures of {target}, recorded by the "
        f"{def_name(target, 'alerts')} sensor: each observation lists the incidents firing and those resolved at "
        "that tick (failed runs, materializations and asset checks of the steps upstream, and the targets file's "
        "health figures and checks).",
    )


def alerts_observation(target: str, engine: AlertEngine, sent: list[Alert]) -> dg.AssetObservation:
    """An observation of ``<target>/alerts``: how many incidents fire, and the incidents (firing, or resolved now)."""
    def when(at: float | None) -> str | None:
        return None if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    rows = [{"incident": i["key"], "status": "firing" if i["notified"] else "firing (cooldown: not notified)",
             "severity": i["severity"], "summary": i["summary"], "run_id": i["run_id"] or None,
             "since": when(i["since"])} for i in engine.incidents()]
    rows += [{"incident": a.key, "status": RESOLVED, "severity": a.severity, "summary": a.summary,
              "run_id": a.run_id or None, "since": when(a.started_at)} for a in sent if a.status == RESOLVED]
    metadata = figures({"firing": len(engine.firing()), "notified": len(sent),
                        "resolved": sum(a.status == RESOLVED for a in sent),
                        "incidents": table(rows, ["incident", "status", "severity", "summary", "run_id", "since"])})
    return dg.AssetObservation(asset_key=asset_key(target, "alerts"), metadata=metadata)


DETAIL = "_detail"  # metadata key suffix of the text naming what a figure points at (a table, a session)
HealthEvent = dg.AssetObservation | dg.AssetCheckEvaluation


def health_observation(key: dg.AssetKey, url: str, cursor: str | None, targets: Targets | None = None,
                       target: str = "", *, pooler_url: str | None = None, long_query_seconds: float = 60.0,
                       runbook_base: str = DEFAULT_RUNBOOK_BASE) -> tuple[list[HealthEvent], str]:
    """One observation of ``key`` (a target's ``database_health``), the evaluations of its checks whose outcome
    changed (with ``targets``), and the cursor for the next tick (the raw counters rates need, each target's breach
    start, each check's last outcome)."""
    state = json.loads(cursor) if cursor else {}
    sample = collect_health(url, state if state.get("counters") else None, pooler_url=pooler_url,
                            long_query_seconds=long_query_seconds)
    metadata: dict[str, dg.RawMetadataValue] = {}
    for name, raw in sorted(sample.metrics.items()):
        figure = number(float(raw))
        if figure is not None:
            metadata[name] = figure
    for name, text in sorted(sample.details.items()):
        metadata[name + DETAIL] = dg.MetadataValue.text(text)
    if sample.error:
        metadata["error"] = sample.error
    events: list[HealthEvent] = [
        dg.AssetObservation(asset_key=key, metadata=metadata)]
    next_state = dict(state)
    if sample.metrics.get("up"):
        next_state.update(sample.state())
    if targets is not None:
        verdicts, breaches = judge(targets, sample.metrics, sample.details, sample.at, state.get("breaches"),
                                   error=sample.error)
        reported = dict(state.get("reported") or {})
        for verdict in changed(verdicts, reported):
            if sample.error and verdict.target.metric != "up":
                continue  # the database is down: only ``up`` is judged; the others keep their last evaluation
            events.append(evaluation(target, verdict, runbook_base))
            reported[verdict.check_name] = outcome(verdict)
        next_state.update(breaches=breaches, reported=reported)
    return events, json.dumps(next_state)


def _health_options(target: str) -> tuple[float, str]:
    """``target``'s long-query limit and runbook base, from one read of its settings."""
    settings = launch_target(target)
    return settings.health.long_query_seconds, settings.alerts.runbook_base


def build_database_health_sensor(target: str, targets: Callable[[], Targets] | None = None,
                                 pooler: Callable[[], str | None] | None = None,
                                 health: Callable[[], tuple[float, str]] | None = None) -> dg.SensorDefinition:
    """``target``'s health sensor; its targets file, pooler URL (``health.pooler_url_env``), long-query limit and
    runbook base (``health.long_query_seconds``, ``alerts.runbook_base``) are read at each tick."""
    key = asset_key(target, "database_health")
    load = targets or (lambda: target_targets(target))
    pooler_url = pooler or (lambda: target_pooler_url(target))
    options = health or (lambda: _health_options(target))

    @dg.sensor(
        name=def_name(target, "database_health_sensor"),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Every minute, samples {target}'s database and records the figures as an observation of "
        f"{key.to_user_string()} (no run is launched), and an evaluation of each of its checks whose outcome changed "
        "(a target of the targets file missed for its 'for', back within target, or not measured).",
    )
    def database_health_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
        long_query_seconds, runbook_base = options()
        events, cursor = health_observation(
            key, database.for_target(target).target_url, context.cursor, load(), target, pooler_url=pooler_url(),
            long_query_seconds=long_query_seconds, runbook_base=runbook_base)
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return database_health_sensor


def _observation_metrics(record: dg.EventLogRecord) -> tuple[dict[str, float], dict[str, str]]:
    """The figures of a recorded health observation, and the texts naming what they point at."""
    observation = record.asset_observation
    out: dict[str, float] = {}
    details: dict[str, str] = {}
    for key, value in (observation.metadata if observation else {}).items():
        raw = getattr(value, "value", value)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            out[key] = float(raw)
        elif isinstance(raw, str) and key.endswith(DETAIL):
            details[key.removesuffix(DETAIL)] = raw
    return out, details


def collect_readings(instance: dg.DagsterInstance, targets: Targets, after: int | None,
                     now: float, target: str) -> tuple[list[Reading], int | None]:
    """Readings of ``target`` from its health observations newer than ``after`` (the newest only on a first tick),
    the latest evaluation of every check target, and the lifecycle figures (backup age)."""
    readings: list[Reading] = []
    health = asset_key(target, "database_health")
    if after is None:
        result = instance.fetch_observations(health, limit=1)
    else:
        result = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=health, after_storage_id=after), limit=500, ascending=True)
    for record in result.records:
        numbers, details = _observation_metrics(record)
        readings += metric_readings(targets, numbers, float(record.timestamp), details)
        after = max(after or 0, record.storage_id)
    figures = lifecycle_figures(instance, targets.checks, now, target=target)
    if figures.backup_age_seconds is not None:
        readings += metric_readings(targets, {"backup_age_seconds": figures.backup_age_seconds}, now)
    for check in targets.checks:
        outcome = figures.checks.get((check.asset, check.check))
        if outcome is None:
            continue
        passed, _when = outcome
        detail = f"asset check {target}/{check.asset}:{check.check} {'passed' if passed else 'failed'}"
        readings.append(Reading(check.key, not passed, now, 0.0 if passed else 1.0, detail))
    return readings, after


def target_targets(target: str) -> Targets:
    """``target``'s targets file (``targets_file``, DBOPS_TARGETS), read now."""
    return load_targets(launch_target(target).targets_file)


def target_sinks(target: str) -> list[Sink]:
    """``target``'s alert sinks (``alerts``, DBOPS_ALERT_*), built now."""
    return sinks_from_settings(launch_target(target).alerts)


def target_alerts_failures(target: str) -> bool:
    """Whether ``target``'s failed runs, materializations and checks notify (``alerts.failures``,
    DBOPS_ALERT_FAILURES), read now."""
    return launch_target(target).alerts.failures


def build_alert_sensor(target: str, targets: Callable[[], Targets] | None = None,
                       sinks: Callable[[], Sequence[Sink]] | None = None, *, name: str = "",
                       failures: Callable[[], bool] | None = None, retries: int = 3, backoff: float = 1.0,
                       runbook_base: Callable[[], str] | None = None,
                       default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING) -> dg.SensorDefinition:
    """``target``'s alert sensor (``<target>_alerts``); its targets file, sinks and ``alerts.failures`` are read at
    each tick so a fixed file takes effect without a redeploy."""
    load = targets or (lambda: target_targets(target))
    open_sinks = sinks or (lambda: target_sinks(target))
    alert_failures = failures or (lambda: target_alerts_failures(target))
    runbooks = runbook_base or (lambda: launch_target(target).alerts.runbook_base)

    @dg.sensor(
        name=name or def_name(target, "alerts"),
        minimum_interval_seconds=60,
        default_status=default_status,
        description=f"Compares {target}'s latest database_health observations and asset-check evaluations with its "
        "targets file, and reads its failed runs, materializations and asset checks (alerts.failures), and "
        "notifies its sinks (each alert names the target): once per incident, after the breach lasted its 'for', "
        "then 'resolved' (a failure: by the next success); failed deliveries are retried next tick. Each tick that "
        f"notifies records an observation of {asset_key(target, 'alerts').to_user_string()}.",
    )
    def _alert_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        loaded = load()
        state = json.loads(context.cursor) if context.cursor else {}
        engine = AlertEngine(loaded, state.get("engine"), target=target, runbook_base=runbooks())
        now = time.time()
        readings, after = collect_readings(context.instance, loaded, state.get("after"), now, target)
        runs_after = None  # off: turned on again, it reads the last day's runs, not the backlog of the time it was off
        if alert_failures():
            outcomes, runs_after = failure_outcomes(context.instance, target, state.get("runs_after"), now)
            readings += failure_readings(loaded, outcomes, target)
        result = alert_tick(engine, readings, open_sinks(), retries=retries, backoff=backoff)
        for alert in result.alerts:
            context.log.info(alert.text())
        cursor = json.dumps({"after": after, "runs_after": runs_after, "engine": engine.state})
        if not result.alerts:
            return dg.SensorResult(skip_reason=f"{len(readings)} reading(s), firing: "
                                               f"{', '.join(engine.firing()) or 'none'}", cursor=cursor)
        return dg.SensorResult(asset_events=[alerts_observation(target, engine, result.alerts)], cursor=cursor)

    return _alert_sensor

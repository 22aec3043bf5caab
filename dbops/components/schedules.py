"""Every lifecycle step's schedule in one table, built for each target from its settings (``schedules.<name>.enabled``
and ``.cron`` in dbops.yaml; the defaults are :data:`dbops.settings.options.SCHEDULES`). A schedule is built only when
all its assets exist in the target's definitions, and is named ``<target>_<name>``.

Beside them, :data:`AUTOMATIONS`: the declarative automation of a target (an asset's ``automation_condition`` and the
sensor ``<target>_<name>`` that evaluates it; Dagster evaluates conditions only through such a sensor, and dbops names
one per condition so each has its own on/off instead of the implicit ``default_automation_condition_sensor``), and
:data:`SENSORS`: every sensor of a target, with its default state, for the README's one table (:func:`schedule_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg

from dbops.components.naming import asset_key, def_name, op_name
from dbops.settings import TargetSettings
from dbops.settings.options import SCHEDULES

RUNNING = dg.DefaultScheduleStatus.RUNNING
STOPPED = dg.DefaultScheduleStatus.STOPPED


@dataclass(frozen=True)
class StepSchedule:
    step: str
    name: str
    assets: tuple[str, ...]
    why: str
    # Assets added to the run when they exist: a blocking check gates its downstream assets only within one run.
    gates: tuple[str, ...] = ()
    # Op config per asset name (the run config's ``ops``).
    config: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # A daily-partitioned asset: the schedule runs the newest partition (yesterday).
    partitioned: bool = False


STEP_SCHEDULES: tuple[StepSchedule, ...] = (
    StepSchedule("migrate", "migrate_hourly", ("schema_migrations",),
                 "migrations normally run on deploy; turn on to apply merged migrations hourly",
                 gates=("migration_rehearsal",)),
    StepSchedule("catalog", "catalog_daily", ("schema_catalog",), "nightly catalog and drift check"),
    StepSchedule("profile", "query_profile_hourly", ("query_profile",),
                 "pg_stat_statements snapshots are diffed hour by hour"),
    StepSchedule("profile", "index_advice_weekly", ("index_advice",),
                 "verifies advice by building indexes on a copy: heavy, turn on for a staging target"),
    StepSchedule("loadtest", "weekly_load_test", ("load_test",), "the full 100 → 10,000 users ramp; staging only",
                 config={"load_test": {"ramp": [100, 1000, 5000, 10000], "duration_s": 60}}),
    StepSchedule("backup", "logical_backup_daily", ("logical_backup",),
                 "daily logical dump (backup_fresh expects one younger than limits.backup_max_age_hours)"),
    StepSchedule("backup", "base_backup_nightly_full", ("base_backup",),
                 "full physical base backup; each starts a new incremental chain",
                 config={"base_backup": {"kind": "full"}}),
    StepSchedule("backup", "base_backup_hourly_incremental", ("base_backup",),
                 "incremental base backup on the night's full (PostgreSQL 17+); WAL archiving covers the minutes "
                 "between", config={"base_backup": {"kind": "incremental"}}),
    StepSchedule("backup", "wal_archive_every_15_min", ("wal_archive",),
                 "moves spooled WAL into the store and checks the archive lag (RPO)"),
    StepSchedule("backup", "backup_retention_daily", ("backup_retention",),
                 "prunes expired backups after the night's backups finished"),
    StepSchedule("restore", "restore_drill_weekly", ("restore_drill",),
                 "an untested backup is not a backup: restore, compare, time the RTO"),
    StepSchedule("validate", "integrity_daily", ("integrity_validation",),
                 "yesterday's partition once its rows stopped changing", partitioned=True),
    StepSchedule("validate", "dimension_integrity_daily", ("dimension_integrity",),
                 "the dimension tables: one pass over each, cheap, so on like the fact tables'"),
    StepSchedule("validate", "index_integrity_weekly", ("index_integrity",), "amcheck over every B-tree index"),
    StepSchedule("security", "security_audit_daily", ("security_audit",),
                 "nightly audit of roles, grants, settings and pg_hba"),
    StepSchedule("maintain", "partition_maintenance_daily", ("partition_maintenance",),
                 "creates the partitions ahead before the day needs them; rows in a DEFAULT partition fail its check"),
    StepSchedule("health", "log_report_hourly", ("log_report",),
                 "pgBadger over the server log's new lines: errors, lock waits, temp files, slowest statements"),
    StepSchedule("maintain", "materialized_views_hourly", ("materialized_views",),
                 "refreshes each materialized view (CONCURRENTLY when it has a unique index)"),
)

DEFAULTS = {name: (cron, on) for name, cron, on, _ in SCHEDULES}


def build_schedules(target: TargetSettings, asset_keys: Iterable[dg.AssetKey]) -> list[dg.ScheduleDefinition]:
    """``target``'s schedules for the steps whose assets all exist (``asset_keys``: the target's asset keys)."""
    present = set(asset_keys)
    schedules: list[dg.ScheduleDefinition] = []
    for step in STEP_SCHEDULES:
        keys = [asset_key(target.name, a) for a in step.assets]
        if not set(keys) <= present:
            continue
        state = target.schedules[step.name]
        status = RUNNING if state.enabled else STOPPED
        description = f"{target.name} · {step.step}: {step.why}"
        name = def_name(target.name, step.name)
        if step.partitioned:
            schedules.append(_previous_day_schedule(name, keys, state.cron, status, description))
            continue
        gates = [k for k in (asset_key(target.name, g) for g in step.gates) if k in present]
        run_config = dg.RunConfig(ops={op_name(target.name, a): {"config": c} for a, c in step.config.items()})
        schedules.append(dg.ScheduleDefinition(
            name=name,
            target=dg.AssetSelection.assets(*keys, *gates),
            cron_schedule=state.cron,
            execution_timezone="UTC",
            default_status=status,
            run_config=run_config if step.config else None,
            description=description,
        ))
    return schedules


def _previous_day_schedule(name: str, keys: list[dg.AssetKey], cron: str, status: dg.DefaultScheduleStatus,
                           description: str) -> dg.ScheduleDefinition:
    """Runs the daily partition of the day before each tick (any cron the operator sets; Dagster's partitioned
    schedule builder takes only minute and hour)."""

    @dg.schedule(name=name, cron_schedule=cron, target=keys, execution_timezone="UTC", default_status=status,
                 description=description)
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
        return dg.RunRequest(run_key=f"{name}-{day}", partition_key=day)

    return _schedule


def after_upstream() -> dg.AutomationCondition:
    """Materialize once after an upstream asset was updated (Dagster's ``eager()`` without its "newly missing" part:
    installing dbops or opening the UI launches nothing; only a new upstream materialization does), never while the
    upstream or the asset itself is in progress."""
    return (dg.AutomationCondition.any_deps_updated().since_last_handled()
            & ~dg.AutomationCondition.any_deps_missing()
            & ~dg.AutomationCondition.any_deps_in_progress()
            & ~dg.AutomationCondition.in_progress()).with_label("after an upstream update")


@dataclass(frozen=True)
class StepAutomation:
    step: str
    name: str  # the sensor, ``<target>_<name>``
    asset: str
    why: str
    running: bool  # the sensor's default state
    condition: Callable[[TargetSettings], dg.AutomationCondition]
    when: str  # for the table


AUTOMATIONS: tuple[StepAutomation, ...] = (
    StepAutomation("catalog", "catalog_after_migrations", "schema_catalog",
                   "the catalog and its drift check (which rides along) as soon as schema_migrations materialized: "
                   "one introspection and one replay of the migrations into a scratch database",
                   True, lambda t: after_upstream(), "after schema_migrations"),
    StepAutomation("profile", "advice_after_profile", "index_advice",
                   "instead of index_advice_weekly: at its weekly tick, waits for the next query_profile and advises "
                   "on those statistics; heavy (indexes built on a copy), so off",
                   False, lambda t: dg.AutomationCondition.on_cron(t.schedules["index_advice_weekly"].cron, "UTC"),
                   "`index_advice_weekly`'s cron, after query_profile"),
)


def build_automation_sensors(target: TargetSettings,
                             asset_keys: Iterable[dg.AssetKey]) -> list[dg.AutomationConditionSensorDefinition]:
    """One sensor per automated asset of ``target`` that exists, evaluating only that asset's condition."""
    present = set(asset_keys)
    sensors = []
    for auto in AUTOMATIONS:
        key = asset_key(target.name, auto.asset)
        if key not in present:
            continue
        sensors.append(dg.AutomationConditionSensorDefinition(
            def_name(target.name, auto.name),
            target=dg.AssetSelection.assets(key),
            default_status=dg.DefaultSensorStatus.RUNNING if auto.running else dg.DefaultSensorStatus.STOPPED,
            description=f"{target.name} · {auto.step}: materializes {key.to_user_string()} {auto.when} (its "
                        f"automation condition): {auto.why}.",
        ))
    return sensors


def automation_conditions(target: TargetSettings) -> dict[str, dg.AutomationCondition]:
    """Asset name -> its automation condition, for ``target``."""
    return {auto.asset: auto.condition(target) for auto in AUTOMATIONS}


@dataclass(frozen=True)
class StepSensor:
    step: str
    name: str  # ``<target>_<name>``
    watches: str
    running: bool
    every: str
    why: str


# Every sensor a step's component builds (the code location's are compared with this in dbops_tests/test_schedules.py).
SENSORS: tuple[StepSensor, ...] = (
    StepSensor("migrate", "new_migration_files", "schema_migrations (with migration_rehearsal)", False, "60 s",
               "runs new or changed migration files; off: migrations normally run on deploy"),
    *(StepSensor(a.step, a.name, a.asset, a.running, a.when, a.why) for a in AUTOMATIONS),
    StepSensor("backup", "wal_archive_sensor", "wal_archive", True, "300 s",
               "observes the archive lag between the 15-minute runs (no run)"),
    StepSensor("validate", "revalidate_after_migration", "integrity_validation, dimension_integrity", True, "60 s",
               "after a migration applied something, re-validates the last validation.backfill_days days"),
    StepSensor("health", "database_health_sensor", "database_health", True, "60 s",
               "records the health figures as observations (no run)"),
    StepSensor("health", "alerts", "alerts", True, "60 s",
               "notifies the sinks of missed targets and failed runs, materializations and checks (no run)"),
)


def schedule_table() -> str:
    """The README table (step, schedule or sensor, cron, default state): the defaults every target starts from."""
    lines = ["| step | schedule or sensor (`<target>_…`) | assets | cron (UTC) or interval | default | why |",
             "|---|---|---|---|---|---|"]
    for s in STEP_SCHEDULES:
        cron, on = DEFAULTS[s.name]
        partitioned = " (yesterday's partition)" if s.partitioned else ""
        lines.append(f"| {s.step} | `{s.name}` | {', '.join(s.assets)}{partitioned} | `{cron}` "
                     f"| {'on' if on else 'off'} | {s.why} |")
    for sensor in SENSORS:
        lines.append(f"| {sensor.step} | `{sensor.name}` (sensor) | {sensor.watches} | {sensor.every} "
                     f"| {'on' if sensor.running else 'off'} | {sensor.why} |")
    return "\n".join(lines)

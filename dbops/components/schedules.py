"""Every lifecycle step's schedule in one table, built for each target from its settings (``schedules.<name>.enabled``
and ``.cron`` in dbops.yaml; the defaults are :data:`dbops.settings.options.SCHEDULES`). A schedule is built only when
all its assets exist in the target's definitions, and is named ``<target>_<name>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    StepSchedule("validate", "dimension_integrity_daily", ("dimension_integrity",), "the dimension tables"),
    StepSchedule("validate", "index_integrity_weekly", ("index_integrity",), "amcheck over every B-tree index"),
    StepSchedule("security", "security_audit_daily", ("security_audit",),
                 "nightly audit of roles, grants, settings and pg_hba"),
    StepSchedule("maintain", "partition_maintenance_daily", ("partition_maintenance",),
                 "creates the partitions ahead before the day needs them; rows in a DEFAULT partition fail its check"),
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


def schedule_table() -> str:
    """The README table (step, schedule, cron, default state): the defaults every target starts from."""
    lines = ["| step | schedule (`<target>_…`) | assets | cron (UTC) | default | why |", "|---|---|---|---|---|---|"]
    for s in STEP_SCHEDULES:
        cron, on = DEFAULTS[s.name]
        lines.append(f"| {s.step} | `{s.name}` | {', '.join(s.assets)} | `{cron}` | {'on' if on else 'off'} "
                     f"| {s.why} |")
    lines.append("| health | `<target>_database_health_sensor`, `<target>_alerts` (sensors) | database_health "
                 "| every 60 s | on | observations and alerts, no runs |")
    return "\n".join(lines)

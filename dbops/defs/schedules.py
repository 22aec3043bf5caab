"""Every lifecycle step's schedule in one table. A schedule is built only when all its assets exist in the final
Definitions, so a step that has not landed yet simply has none (call ``build_schedules`` from definitions.py).

Steps whose module already ships a partition-aware schedule are listed with ``defined_in`` and not rebuilt here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from dbops.defs.resources import launch_target

RUNNING = dg.DefaultScheduleStatus.RUNNING
STOPPED = dg.DefaultScheduleStatus.STOPPED


@dataclass(frozen=True)
class StepSchedule:
    step: str
    name: str
    assets: tuple[str, ...]
    cron: str
    default_status: dg.DefaultScheduleStatus
    why: str
    defined_in: str | None = None
    # Assets added to the run when they exist: a blocking check gates its downstream assets only within one run.
    gates: tuple[str, ...] = ()


STEP_SCHEDULES: tuple[StepSchedule, ...] = (
    StepSchedule("migrate", "migrate_hourly", ("schema_migrations",), "0 * * * *", STOPPED,
                 "migrations normally run on deploy; turn on to apply merged migrations hourly",
                 gates=("migration_rehearsal",) if launch_target().rehearsal.enabled else ()),
    StepSchedule("catalog", "catalog_daily", ("schema_catalog",), "0 2 * * *", RUNNING,
                 "nightly catalog and drift check"),
    StepSchedule("profile", "query_profile_hourly", ("query_profile",), "15 * * * *", RUNNING,
                 "pg_stat_statements snapshots are diffed hour by hour"),
    StepSchedule("profile", "index_advice_weekly", ("index_advice",), "0 4 * * 1", STOPPED,
                 "verifies advice by building indexes on a copy: heavy, turn on for a staging target"),
    StepSchedule("loadtest", "weekly_load_test", ("load_test",), "0 3 * * 0", STOPPED,
                 "the full users ramp; staging only", defined_in="dbops/defs/loadtest/assets.py"),
    StepSchedule("backup", "logical_backup_daily", ("logical_backup",), "0 0 * * *", RUNNING,
                 "daily logical dump (backup_fresh expects < 26 h)"),
    StepSchedule("backup", "base_backup_nightly_full", ("base_backup",), "0 1 * * *", RUNNING,
                 "full physical base backup (run config kind=full)", defined_in="dbops/defs/backup/schedules.py"),
    StepSchedule("backup", "base_backup_hourly_incremental", ("base_backup",), "30 2-23 * * *", RUNNING,
                 "incremental base backup on the night's full (PostgreSQL 17+)",
                 defined_in="dbops/defs/backup/schedules.py"),
    StepSchedule("backup", "wal_archive_every_15_min", ("wal_archive",), "*/15 * * * *", RUNNING,
                 "moves spooled WAL into the store and checks the archive lag (RPO)"),
    StepSchedule("backup", "backup_retention_daily", ("backup_retention",), "30 5 * * *", RUNNING,
                 "prunes expired backups after the night's backups finished"),
    StepSchedule("restore", "restore_drill_weekly", ("restore_drill",), "0 6 * * 6", RUNNING,
                 "an untested backup is not a backup: restore, compare, time the RTO",
                 defined_in="dbops/defs/restore/schedules.py"),
    StepSchedule("validate", "integrity_daily", ("integrity_validation",), "30 1 * * *", RUNNING,
                 "yesterday's partition once its rows stopped changing",
                 defined_in="dbops/defs/validate/schedules.py"),
    StepSchedule("validate", "index_integrity_weekly", ("index_integrity",), "0 3 * * 6", RUNNING,
                 "amcheck over every B-tree index"),
    StepSchedule("security", "security_audit_daily", ("security_audit",), "15 5 * * *", STOPPED,
                 "nightly audit of roles, grants, settings and pg_hba",
                 defined_in="dbops/defs/security/schedules.py"),
)


def build_schedules(asset_keys: Iterable[dg.AssetKey | str]) -> list[dg.ScheduleDefinition]:
    """Schedules for the steps whose assets all exist (``asset_keys``: every asset key of the final Definitions)."""
    present = {k.to_user_string() if isinstance(k, dg.AssetKey) else k for k in asset_keys}
    schedules = []
    for step in STEP_SCHEDULES:
        if step.defined_in or not set(step.assets) <= present:
            continue
        schedules.append(dg.ScheduleDefinition(
            name=step.name,
            target=dg.AssetSelection.assets(*step.assets, *(g for g in step.gates if g in present)),
            cron_schedule=step.cron,
            execution_timezone="UTC",
            default_status=step.default_status,
            description=f"{step.step}: {step.why}",
        ))
    return schedules


def schedule_table() -> str:
    """The README table (step, schedule, cron, default state)."""
    lines = ["| step | schedule | assets | cron (UTC) | default | why |", "|---|---|---|---|---|---|"]
    for s in STEP_SCHEDULES:
        state = "on" if s.default_status == RUNNING else "off"
        where = f" (in `{s.defined_in}`)" if s.defined_in else ""
        lines.append(f"| {s.step} | `{s.name}`{where} | {', '.join(s.assets)} | `{s.cron}` | {state} | {s.why} |")
    lines.append("| health | `database_health_sensor`, `dbops_alerts` (sensors) | database_health | every 60 s "
                 "| on "
                 "| observations and alerts, no runs |")
    return "\n".join(lines)

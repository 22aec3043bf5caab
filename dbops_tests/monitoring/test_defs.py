"""The monitoring group loads beside the other steps, and schedules exist only for assets that exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from dbops.defs import monitoring
from dbops.defs.monitoring.schedules import STEP_SCHEDULES, build_schedules, schedule_table
from dbops.defs.resources import default_resources


def stub_asset(name: str) -> dg.AssetsDefinition:
    """A materializable asset with a lifecycle step's key (the real ones are built by the other steps)."""

    @dg.asset(name=name)
    def _stub() -> None:
        return None

    return _stub


def test_monitoring_defs_load_with_schedules_for_present_assets() -> None:
    step_assets = [stub_asset(name) for name in ("schema_migrations", "logical_backup", "restore_drill")]
    base = dg.Definitions.merge(monitoring.defs, dg.Definitions(assets=step_assets, resources=default_resources()))
    keys = base.resolve_asset_graph().get_all_asset_keys()
    schedules = build_schedules(keys)
    assert sorted(s.name for s in schedules) == ["logical_backup_daily", "migrate_hourly"]  # the drill ships its own
    defs = dg.Definitions.merge(base, dg.Definitions(schedules=schedules))
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {s.name for s in repo.sensor_defs} == {"database_health_sensor", "dbops_alerts"}
    assert repo.get_schedule_def("migrate_hourly").default_status == dg.DefaultScheduleStatus.STOPPED
    assert repo.get_schedule_def("logical_backup_daily").cron_schedule == "0 0 * * *"
    spec = repo.asset_graph.get(dg.AssetKey("database_health"))
    assert spec.group_name == "monitoring"


def test_every_lifecycle_asset_has_a_schedule_row() -> None:
    named = {a for s in STEP_SCHEDULES for a in s.assets}
    assert named == {"schema_migrations", "schema_catalog", "query_profile", "index_advice", "load_test",
                     "logical_backup", "base_backup", "wal_archive", "restore_drill", "backup_retention",
                     "integrity_validation",
                     "index_integrity", "security_audit"}
    assert build_schedules(named)  # all present: every step without its own module schedule is built
    assert not {s.name for s in build_schedules(named)} & {"weekly_load_test", "integrity_daily"}
    assert schedule_table().count("\n") == len(STEP_SCHEDULES) + 2


def test_a_malformed_targets_file_stops_the_code_location_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "targets.yml"
    bad.write_text("metrics:\n  - {metric: cache_hit_ratio, op: '<', threshold: 0.99, for: 2 weeks}\n")
    proc = subprocess.run([sys.executable, "-c", "import dbops.defs.monitoring"], capture_output=True, text=True,
                          env={**os.environ, "DBOPS_TARGETS": str(bad)}, timeout=120, check=False)
    assert proc.returncode != 0
    assert f"TargetsError: {bad}: metrics[1] (cache_hit_ratio).for: '2 weeks' is not a duration" in proc.stderr

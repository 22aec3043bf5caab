"""Every lifecycle step's schedule in one table (dbops/components/schedules.py): built per target from its settings,
only for assets that exist, named for the target, one row per lifecycle asset, and the README's table is the table."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from dbops.components.naming import asset_key
from dbops.components.resources import default_resources
from dbops.components.schedules import STEP_SCHEDULES, build_schedules, schedule_table
from dbops.components.target import fleet_defs
from dbops.settings import load_settings
from dbops_tests.conftest import PROJECT_DIR

LIFECYCLE = {"schema_migrations", "schema_catalog", "query_profile", "index_advice", "load_test", "logical_backup",
             "base_backup", "wal_archive", "restore_drill", "backup_retention", "integrity_validation",
             "dimension_integrity", "index_integrity", "security_audit", "partition_maintenance", "materialized_views"}


def stub_asset(target: str, name: str) -> dg.AssetsDefinition:
    """A materializable asset with a lifecycle step's key (the real ones are built by the other steps)."""

    @dg.asset(key=asset_key(target, name))
    def _stub() -> None:
        return None

    return _stub


def settings_with(tmp_path: Path, yaml_text: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "dbops.yaml"
    config.write_text(yaml_text)
    return load_settings({"DBOPS_HOME": str(tmp_path / "home")}, cwd=tmp_path, config_file=config)


def test_schedules_are_built_for_present_assets_only(tmp_path: Path) -> None:
    target = settings_with(tmp_path, "targets: {shop: {embedded: true}}\n").target("shop")
    step_assets = [stub_asset("shop", name) for name in ("schema_migrations", "logical_backup", "restore_drill")]
    base = dg.Definitions(assets=step_assets, resources=default_resources())
    schedules = build_schedules(target, base.resolve_asset_graph().get_all_asset_keys())
    assert sorted(s.name for s in schedules) == ["shop_logical_backup_daily", "shop_migrate_hourly",
                                                 "shop_restore_drill_weekly"]
    defs = dg.Definitions.merge(base, dg.Definitions(schedules=schedules))
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_schedule_def("shop_migrate_hourly").default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_schedule_def("shop_logical_backup_daily").cron_schedule == "0 0 * * *"


def test_a_targets_schedules_follow_its_settings(tmp_path: Path) -> None:
    """On/off and cron come from the target's `schedules:` block; another target keeps the defaults."""
    settings = settings_with(tmp_path, """
targets:
  dbops: {embedded: true}
  shop:
    embedded: true
    schedules:
      restore_drill_weekly: {enabled: off, cron: "0 7 * * 6"}
      security_audit_daily: {enabled: on}
""")
    built = {}
    for name in ("dbops", "shop"):
        keys = {asset_key(name, a) for a in LIFECYCLE}
        built.update({s.name: s for s in build_schedules(settings.target(name), keys)})
    assert built["shop_restore_drill_weekly"].cron_schedule == "0 7 * * 6"
    assert built["shop_restore_drill_weekly"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert built["dbops_restore_drill_weekly"].cron_schedule == "0 6 * * 6"
    assert built["dbops_restore_drill_weekly"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert built["shop_security_audit_daily"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert built["dbops_security_audit_daily"].default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_partitioned_schedule_runs_the_day_before_each_tick(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_with(tmp_path, "targets: {shop: {embedded: true}}\n")
    # the components read the settings at load, as a code location does: from the environment
    monkeypatch.setenv("DBOPS_CONFIG", str(tmp_path / "dbops.yaml"))
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    defs = fleet_defs(settings)
    schedule = defs.resolve_schedule_def("shop_integrity_daily")
    when = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 2, 1, 30, tzinfo=UTC),
                                     repository_def=defs.get_repository_def())
    request = schedule.evaluate_tick(when).run_requests[0]
    assert request.partition_key == "2026-03-01"


def test_every_lifecycle_asset_has_a_schedule_row(tmp_path: Path) -> None:
    named = {a for s in STEP_SCHEDULES for a in s.assets}
    assert named == LIFECYCLE
    target = settings_with(tmp_path, "targets: {dbops: {embedded: true}}\n").target("dbops")
    built = build_schedules(target, {asset_key("dbops", a) for a in named})
    assert {s.name for s in built} == {f"dbops_{s.name}" for s in STEP_SCHEDULES}
    assert schedule_table().count("\n") == len(STEP_SCHEDULES) + 2
    assert schedule_table() in (PROJECT_DIR / "README.md").read_text()


def test_schedule_rows_name_the_step_folders() -> None:
    """A row's step is a folder of dbops/ and of dbops/components/, as the Dagster groups are (see test_foundation)."""
    for row in STEP_SCHEDULES:
        assert (PROJECT_DIR / "dbops" / row.step).is_dir(), row
        assert (PROJECT_DIR / "dbops" / "components" / row.step).is_dir(), row

"""Every lifecycle step's schedule in one table (dbops/components/schedules.py): built per target from its settings,
only for assets that exist, named for the target, one row per lifecycle asset; every sensor in the same table; the
README's table is the table, and the code location's schedules and sensors start in the state it gives (read as the UI
reads it, from a code server and an instance)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from dbops.components.naming import asset_key
from dbops.components.resources import default_resources
from dbops.components.schedules import DEFAULTS, SENSORS, STEP_SCHEDULES, build_schedules, schedule_table
from dbops.components.target import fleet_defs
from dbops.settings import load_settings
from dbops_tests.conftest import PROJECT_DIR

LIFECYCLE = {"schema_migrations", "schema_catalog", "query_profile", "index_advice", "load_test", "logical_backup",
             "base_backup", "wal_archive", "restore_drill", "backup_retention", "integrity_validation",
             "dimension_integrity", "index_integrity", "security_audit", "partition_maintenance", "materialized_views",
             "log_report"}


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
    # today's tick (the partitions start from the target's data or a window before today, so a recent day)
    tick = datetime.now(UTC).replace(hour=1, minute=30, second=0, microsecond=0)
    when = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    request = schedule.evaluate_tick(when).run_requests[0]
    assert request.partition_key == (tick - timedelta(days=1)).date().isoformat()


def test_every_lifecycle_asset_has_a_schedule_row(tmp_path: Path) -> None:
    named = {a for s in STEP_SCHEDULES for a in s.assets}
    assert named == LIFECYCLE
    target = settings_with(tmp_path, "targets: {dbops: {embedded: true}}\n").target("dbops")
    built = build_schedules(target, {asset_key("dbops", a) for a in named})
    assert {s.name for s in built} == {f"dbops_{s.name}" for s in STEP_SCHEDULES}
    assert schedule_table().count("\n") == len(STEP_SCHEDULES) + len(SENSORS) + 1


def test_the_readme_table_is_the_generated_table() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    section = readme.split("## Schedules\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == schedule_table()


def test_the_code_location_starts_each_schedule_and_sensor_as_the_table_says(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded the way the UI loads it (a code server for the module, an instance with no stored state), each
    schedule's and sensor's state is the table's default; integrity_daily and dimension_integrity_daily run."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DBOPS_CONFIG", raising=False)
    expected = {f"dbops_{name}": on for name, (_cron, on) in DEFAULTS.items()}
    expected |= {f"dbops_{s.name}": s.running for s in SENSORS}
    running = {"RUNNING", "DECLARED_IN_CODE"}
    states: dict[str, bool] = {}
    with dg.instance_for_test() as instance, WorkspaceProcessContext(instance, ModuleTarget(
            module_name="dbops.definitions", attribute=None, working_directory=os.getcwd(), location_name="dbops",
    )) as workspace:
        context = workspace.create_request_context()
        assert not context.code_location_errors()
        (location,) = context.code_locations
        for repo in location.get_repositories().values():
            for item in [*repo.get_schedules(), *repo.get_sensors()]:
                stored = instance.get_instigator_state(item.get_remote_origin_id(), item.selector_id)
                states[item.name] = item.get_current_instigator_state(stored).status.value in running
    assert {n: v for n, v in states.items() if n.startswith("dbops_")} == expected
    assert states["dbops_integrity_daily"] and states["dbops_dimension_integrity_daily"]
    assert "default_automation_condition_sensor" not in states  # every condition has its named sensor


def test_schedule_rows_name_the_step_folders() -> None:
    """A row's step is a folder of dbops/ and of dbops/components/, as the Dagster groups are (see test_foundation)."""
    for row in STEP_SCHEDULES:
        assert (PROJECT_DIR / "dbops" / row.step).is_dir(), row
        assert (PROJECT_DIR / "dbops" / "components" / row.step).is_dir(), row

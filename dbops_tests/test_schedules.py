"""Every lifecycle step's schedule in one table (dbops/defs/schedules.py): built only for assets that exist, one row
per lifecycle asset, and the README's table is the table."""

from __future__ import annotations

import dagster as dg

from dbops.defs.resources import default_resources
from dbops.defs.schedules import STEP_SCHEDULES, build_schedules, schedule_table
from dbops_tests.conftest import PROJECT_DIR


def stub_asset(name: str) -> dg.AssetsDefinition:
    """A materializable asset with a lifecycle step's key (the real ones are built by the other steps)."""

    @dg.asset(name=name)
    def _stub() -> None:
        return None

    return _stub


def test_schedules_are_built_for_present_assets_only() -> None:
    step_assets = [stub_asset(name) for name in ("schema_migrations", "logical_backup", "restore_drill")]
    base = dg.Definitions(assets=step_assets, resources=default_resources())
    schedules = build_schedules(base.resolve_asset_graph().get_all_asset_keys())
    assert sorted(s.name for s in schedules) == ["logical_backup_daily", "migrate_hourly"]  # the drill ships its own
    defs = dg.Definitions.merge(base, dg.Definitions(schedules=schedules))
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_schedule_def("migrate_hourly").default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_schedule_def("logical_backup_daily").cron_schedule == "0 0 * * *"


def test_every_lifecycle_asset_has_a_schedule_row() -> None:
    named = {a for s in STEP_SCHEDULES for a in s.assets}
    assert named == {"schema_migrations", "schema_catalog", "query_profile", "index_advice", "load_test",
                     "logical_backup", "base_backup", "wal_archive", "restore_drill", "backup_retention",
                     "integrity_validation",
                     "index_integrity", "security_audit"}
    assert build_schedules(named)  # all present: every step without its own module schedule is built
    assert not {s.name for s in build_schedules(named)} & {"weekly_load_test", "integrity_daily",
                                                           "restore_drill_weekly"}
    assert schedule_table().count("\n") == len(STEP_SCHEDULES) + 2
    assert schedule_table() in (PROJECT_DIR / "README.md").read_text()


def test_schedule_rows_name_the_step_folders() -> None:
    """A row's step is a folder of dbops/ and of dbops/defs/, as the Dagster groups are (see test_foundation)."""
    for row in STEP_SCHEDULES:
        assert (PROJECT_DIR / "dbops" / row.step).is_dir() and (PROJECT_DIR / "dbops" / "defs" / row.step).is_dir(), row

"""The Dagster layer of the restore step: restore_drill (group restore) after logical_backup, with its checks,
against a real database, and its weekly schedule."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.keys import generate_key
from dbops.defs.backup.assets import logical_backup
from dbops.defs.resources import BackupResource, DatabaseResource
from dbops.defs.restore import defs
from dbops.defs.restore.assets import restore_drill


def test_materialize_backup_then_drill_with_checks(seeded_small: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    result = dg.materialize(
        [logical_backup, restore_drill],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"database": DatabaseResource(url=seeded_small),
                   "backups": BackupResource(store="local", directory=str(tmp_path / "store"))},
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"backup_fresh": True, "drill_data_matches": True, "drill_rto_under_target": True}
    drill_meta = result.asset_materializations_for_node("restore_drill")[0].metadata
    assert drill_meta["rto_seconds"].value > 0 and drill_meta["rows_checked"].value > 20_000


def test_defs_load() -> None:
    full = dg.Definitions.merge(defs, dg.Definitions(resources={
        "database": DatabaseResource(url="postgresql://u@127.0.0.1:1/x"), "backups": BackupResource()}))
    graph = full.resolve_asset_graph()
    assert graph.get(dg.AssetKey("restore_drill")).group_name == "restore"
    schedule = full.resolve_schedule_def("restore_drill_weekly")
    assert schedule.cron_schedule == "0 6 * * 6" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_production_target_gets_no_scratch_copy_on_its_server(seeded_small: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The logical drill restores on the target's own server: refused on a production target (DBOPS_PRODUCTION)
    unless allow_production, and nothing is created there."""
    from dbops.pg.connect import connection

    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    monkeypatch.setenv("DBOPS_PRODUCTION", "on")
    monkeypatch.chdir(tmp_path)
    resources = {"database": DatabaseResource(url=seeded_small),
                 "backups": BackupResource(store="local", directory=str(tmp_path / "store"))}
    assert dg.materialize([logical_backup], instance=dg.DagsterInstance.ephemeral(), resources=resources).success
    config = {"ops": {"restore_drill": {"config": {"physical": False}}}}
    result = dg.materialize([restore_drill], instance=dg.DagsterInstance.ephemeral(), resources=resources,
                            run_config=config, raise_on_error=False, selection=["restore_drill"])
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure.cause is not None and "marked production" in failure.cause.message
    with connection(seeded_small) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname LIKE 'dbops_drill_%'").fetchall()
    config["ops"]["restore_drill"]["config"]["allow_production"] = True
    assert dg.materialize([restore_drill], instance=dg.DagsterInstance.ephemeral(), resources=resources,
                          run_config=config, selection=["restore_drill"]).success

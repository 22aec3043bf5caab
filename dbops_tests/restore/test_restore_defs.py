"""The Dagster layer of the restore step: restore_drill (group restore) after logical_backup, with its checks,
against a real database, and its weekly schedule."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.keys import generate_key
from dbops.components import backup, restore
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import BackupResource, DatabaseResource
from dbops.components.restore.assets import build_restore_drill
from dbops.components.schedules import build_schedules
from dbops.settings import load_settings

TARGET = "dbops"
DRILL_OP = op_name(TARGET, "restore_drill")
[logical_backup] = [a for a in backup.build(TARGET).assets or []
                    if isinstance(a, dg.AssetsDefinition) and a.key == asset_key(TARGET, "logical_backup")]
restore_drill = build_restore_drill(TARGET)


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
    drill_meta = result.asset_materializations_for_node(DRILL_OP)[0].metadata
    assert drill_meta["rto_seconds"].value > 0 and drill_meta["rows_checked"].value > 20_000


def test_defs_load(tmp_path: Path) -> None:
    step = restore.build(TARGET)
    own = {k for a in step.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    assert own == {asset_key(TARGET, "restore_drill")}
    target = load_settings({"DBOPS_HOME": str(tmp_path / "home")}, cwd=tmp_path).target(TARGET)
    full = dg.Definitions.merge(step, dg.Definitions(schedules=build_schedules(target, own), resources={
        "database": DatabaseResource(url="postgresql://u@127.0.0.1:1/x"), "backups": BackupResource()}))
    dg.Definitions.validate_loadable(full)
    graph = full.resolve_asset_graph()
    assert graph.get(asset_key(TARGET, "restore_drill")).group_name == "restore"
    schedule = full.resolve_schedule_def("dbops_restore_drill_weekly")
    assert schedule.cron_schedule == "0 6 * * 6" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = full.resolve_job_def(schedule.job_name)
    assert job.asset_layer.selected_asset_keys == {asset_key(TARGET, "restore_drill")}


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
    config = {"ops": {DRILL_OP: {"config": {"physical": False}}}}
    result = dg.materialize([restore_drill], instance=dg.DagsterInstance.ephemeral(), resources=resources,
                            run_config=config, raise_on_error=False, selection=["dbops/restore_drill"])
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure.cause is not None and "marked production" in failure.cause.message
    with connection(seeded_small) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname LIKE 'dbops_drill_%'").fetchall()
    config["ops"][DRILL_OP]["config"]["allow_production"] = True
    assert dg.materialize([restore_drill], instance=dg.DagsterInstance.ephemeral(), resources=resources,
                          run_config=config, selection=["dbops/restore_drill"]).success


def test_the_targets_files_rto_decides_drill_rto_under_target(seeded_small: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """drill_rto_under_target compares the drill with limits.rto_seconds of the target's targets file (DBOPS_TARGETS),
    read when the run launches: the default (1800 s) passes, a tiny RTO fails the same drill of the same backup."""
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    monkeypatch.delenv("DBOPS_TARGETS", raising=False)
    resources = {"database": DatabaseResource(url=seeded_small),
                 "backups": BackupResource(store="local", directory=str(tmp_path / "store"))}
    assert dg.materialize([logical_backup], instance=dg.DagsterInstance.ephemeral(), resources=resources).success

    def drill_rto_check() -> dg.AssetCheckEvaluation:
        result = dg.materialize([restore_drill], instance=dg.DagsterInstance.ephemeral(), resources=resources,
                                run_config={"ops": {DRILL_OP: {"config": {"physical": False}}}})
        assert result.success  # the RTO check is not blocking: the drill itself materializes
        by_name = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert by_name["drill_data_matches"].passed
        return by_name["drill_rto_under_target"]

    default = drill_rto_check()
    assert default.passed and default.metadata["target_seconds"].value == 1800.0

    tiny = tmp_path / "tiny-rto.yml"
    tiny.write_text("limits:\n  rto_seconds: 0.000001\n")
    monkeypatch.setenv("DBOPS_TARGETS", str(tiny))
    failed = drill_rto_check()
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["target_seconds"].value == 0.000001
    assert failed.metadata["rto_seconds"].value > 0.000001

    roomy = tmp_path / "roomy-rto.yml"
    roomy.write_text("limits:\n  rto_seconds: 3600\n")
    monkeypatch.setenv("DBOPS_TARGETS", str(roomy))
    passed = drill_rto_check()
    assert passed.passed and passed.metadata["target_seconds"].value == 3600.0

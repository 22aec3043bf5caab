"""`dbops loadtest` prints the table; the Dagster asset records figures and evaluates its four checks."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from dbops.components import loadtest
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import DatabaseResource
from dbops.components.schedules import build_schedules
from dbops.loadtest.cli import main
from dbops.settings import load_settings

TARGET = "dbops"  # no config file: the one embedded target
[load_test] = loadtest.build(TARGET).assets or []
NODE = op_name(TARGET, "load_test")  # the run config's "ops" key


def test_cli_prints_the_table(seeded_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings({"DBOPS_DATABASE_URL": seeded_url, "DBOPS_HOME": str(tmp_path)})
    code = main(["--profile", "read", "--ramp", "5,10", "--duration", "2", "--think-time", "0.5",
                 "--warmup", "0"], settings)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "| users | tps |" in out.out and "| 10 |" in out.out and "degradation" in out.out
    assert "postgres:" not in out.out + out.err or "***" in out.out + out.err
    code = main(["--profile", "write", "--users", "2", "--duration", "1", "--think-time", "0", "--warmup", "0",
                 "--json"], settings)
    figures = json.loads(capsys.readouterr().out)
    assert code == 0 and figures["write_tps"] > 0 and figures["failures"] == 0


def test_cli_bad_profile_exits_1(seeded_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings({"DBOPS_DATABASE_URL": seeded_url, "DBOPS_HOME": str(tmp_path)})
    assert main(["--profile", "heavy", "--duration", "1"], settings) == 1
    assert "unknown profile 'heavy'" in capsys.readouterr().err


def test_load_test_asset_and_checks(seeded_url: str) -> None:
    step = dg.Definitions.merge(loadtest.build(TARGET),
                                dg.Definitions(resources={"database": DatabaseResource(url=seeded_url)}))
    keys = step.resolve_asset_graph().get_all_asset_keys()
    loaded = dg.Definitions.merge(step, dg.Definitions(
        schedules=build_schedules(load_settings().target(TARGET), keys)))
    assert loaded.resolve_assets_def(asset_key(TARGET, "load_test")) is not None
    assert load_test.key.to_user_string() == "dbops/load_test"
    schedule = loaded.resolve_schedule_def("dbops_weekly_load_test")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    request = schedule.evaluate_tick(dg.build_schedule_context()).run_requests[0]
    dg.validate_run_config(loaded.resolve_job_def(schedule.job_name), request.run_config)  # the 10k ramp is valid
    assert request.run_config["ops"][NODE]["config"]["ramp"][-1] == 10_000
    config = {"ramp": [4, 8], "duration_s": 2, "think_time_s": 0.5, "capacity_users": 2,
              "capacity_duration_s": 2, "warmup_s": 0, "write_tps_target": 1.0}
    result = dg.materialize(
        [load_test], resources={"database": DatabaseResource(url=seeded_url)},
        run_config={"ops": {NODE: {"config": config}}}, instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["capacity/write_tps"].value > 1.0
    assert meta["ramp/users_8/all/p95_ms"].value > 0
    assert "| 8 |" in meta["ramp_table"].value
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["write_throughput_over_target"] and checks["no_failed_transactions"]
    assert checks["read_latency_avg_under_target"]
    assert "degradation_within_bound" in checks


def test_asset_refuses_production(seeded_url: str) -> None:
    result = dg.materialize(
        [load_test], resources={"database": DatabaseResource(url=seeded_url, production=True)},
        run_config={"ops": {NODE: {"config": {"ramp": [2], "duration_s": 1, "capacity_users": 0}}}},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure.cause is not None and "marked production" in failure.cause.message


def test_production_setting_reaches_the_cli_and_the_asset(seeded_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`production: true` (DBOPS_PRODUCTION) refuses the load test from the CLI and from the default Dagster
    resource, which used to hard-code production=False."""
    from dbops.components.resources import default_resources

    settings = load_settings({"DBOPS_DATABASE_URL": seeded_url, "DBOPS_HOME": str(tmp_path),
                              "DBOPS_PRODUCTION": "on"}, tmp_path)
    assert main(["--profile", "read", "--users", "1", "--duration", "1", "--warmup", "0"], settings) == 1
    assert "marked production" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DBOPS_DATABASE_URL", seeded_url)
    monkeypatch.setenv("DBOPS_PRODUCTION", "on")
    database = default_resources()["database"]
    assert database.is_production and database.target_url == seeded_url
    result = dg.materialize(
        [load_test], resources={"database": database},
        run_config={"ops": {NODE: {"config": {"ramp": [2], "duration_s": 1, "capacity_users": 0}}}},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure.cause is not None and "marked production" in failure.cause.message

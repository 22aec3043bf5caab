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
    # each step reported on stderr as it starts and as it finishes, with its think time and figures
    err = out.err.splitlines()
    started = next(i for i, line in enumerate(err) if line.startswith("step 2/2: 10 users, think time 0.5 s for 2 s"))
    finished = next(i for i, line in enumerate(err)
                    if line.startswith("step 2/2 finished: 10 users, think time 0.5 s:"))
    assert started < finished and " tx/s, p50/p95/p99 " in err[finished] and " 0 errors, direct" in err[finished]
    assert any(line.startswith("step 1/2 finished: 5 users, think time 0.5 s:") for line in err[:started])
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
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [load_test], resources={"database": DatabaseResource(url=seeded_url)},
        run_config={"ops": {NODE: {"config": config}}}, instance=instance,
    )
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    # a few headline figures (101 flat keys before) and one table per run, a row per user step with its think time
    assert len(meta) <= 25, sorted(meta)
    assert not [k for k in meta if "/" in k], sorted(meta)
    assert meta["max_users"].value == 8 and meta["think_time_s"].value == 0.5
    assert meta["read_p99_ms_at_max_users"].value > 0 and meta["write_tps"].value > 1.0
    assert "8 users, think time 0.5 s:" in meta["summary"].value
    ramp = meta["ramp"].value
    assert isinstance(meta["ramp"], dg.TableMetadataValue) and [r.data["users"] for r in ramp.records] == [4, 8]
    assert {c.name for c in ramp.schema.columns} >= {"users", "think_time", "tps", "p50_ms", "p95_ms", "p99_ms",
                                                      "errors", "pooler"}
    assert all(r.data["think_time"] == "think time 0.5 s" and r.data["errors"] == 0 for r in ramp.records)
    assert ramp.records[1].data["p95_ms"] > 0 and ramp.records[1].data["pooler"] == "direct"
    capacity = meta["capacity"].value
    assert capacity.records[0].data["think_time"] == "closed loop" and capacity.records[0].data["write_tps"] > 1.0
    for value in meta.values():  # no unrounded float anywhere (three decimals, or three significant digits below 1)
        if isinstance(value, dg.FloatMetadataValue) and value.value is not None and abs(value.value) >= 1:
            assert round(value.value, 3) == value.value
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["write_throughput_over_target"].passed and checks["no_failed_transactions"].passed
    assert checks["read_latency_avg_under_target"].passed
    assert checks["read_latency_avg_under_target"].metadata["read_avg_ms"].value == meta["read_avg_ms"].value
    assert "degradation_p95_ratio" in checks["degradation_within_bound"].metadata
    # every check has a description
    assert all(spec.description for spec in load_test.check_specs)
    # the phases were logged as they happened: each step started and finished with its figures
    logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("step 2/2: 8 users, think time 0.5 s for 2 s") for m in logged), logged
    assert any(m.startswith("step 2/2 finished: 8 users, think time 0.5 s:") for m in logged)
    assert any(m.startswith("step 1/1 finished: 2 users, closed loop:") for m in logged)


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


def test_metadata_of_a_run_that_measured_nothing() -> None:
    """No step measured (every figure None): the keys are left out, not -1 or 0.0, and building them cannot crash."""
    from dbops.components.loadtest.assets import _metadata
    from dbops.loadtest.runner import LoadTestResult

    meta = _metadata(LoadTestResult("mixed", 10.0, "direct", "db"), None)
    assert "max_users" not in meta and "read_p99_ms_at_max_users" not in meta and "degradation_p95_ratio" not in meta
    assert meta["failures"].value == 0 and meta["think_time_s"].value == 10.0
    assert meta["ramp"].value.records == [] and "users" in {c.name for c in meta["ramp"].value.schema.columns}
    assert "no step ran without an error" in meta["summary"].value

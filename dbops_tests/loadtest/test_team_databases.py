"""The load test on databases dbops did not create (dbops_tests/foreign: library, telemetry): the operator's own
scripts, and the replay profile built from the database's pg_stat_statements. Real pgbench, real PostgreSQL."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dbops.components import loadtest
from dbops.components.naming import op_name
from dbops.components.resources import DatabaseResource
from dbops.loadtest.cli import main
from dbops.loadtest.replay import NothingToReplay, ReplayProfile, build_replay
from dbops.loadtest.runner import LoadTestPlan, run_load_test
from dbops.loadtest.workloads import LoadTestError
from dbops.pg.connect import connection
from dbops.settings import load_settings
from dbops_tests.foreign import ForeignSchema

# The operator's own script per team database: a pgbench script with its own variables, no dbops variable.
OWN_SCRIPTS = {
    "library": "-- a member's open loans\n\\set m random(1, 400)\n"
               "SELECT count(*) FROM lending.loans WHERE member_id = :m AND status = 'out';\n",
    "telemetry": "-- a device's latest readings\n\\set d random(1, 24)\n"
                 "SELECT recorded_at, value FROM iot.readings WHERE device_id = :d\n"
                 "ORDER BY recorded_at DESC LIMIT 10;\n",
}
MISSING_TABLE = {"library": "lending.reservations", "telemetry": "iot.calibrations"}

# What the application ran (bound parameters and constants: pg_stat_statements shows both as $n), per database:
# (statement, parameters, the replay's expectation: [(table.column, predicate)] or the skip reason's words).
Workload = list[tuple[str, tuple[Any, ...], list[tuple[str, str]] | str]]
WORKLOADS: dict[str, Workload] = {
    "library": [
        ("SELECT id, full_name FROM lending.members WHERE id = %s", (7,), [("lending.members.id", "=")]),
        ("SELECT count(*) FROM lending.loans WHERE member_id = %s AND status = 'out'", (9,),
         [("lending.loans.member_id", "="), ("lending.loans.status", "=")]),
        ("SELECT id, title FROM lending.books WHERE id IN (1, 2, 3)", (),
         [("lending.books.id", "IN, squashed list replayed with 5 values")]),
        ("SELECT count(*) FROM lending.loans WHERE loaned_on BETWEEN %s::date - 7 AND %s::date", ("2026-01-10",) * 2,
         "is part of an expression"),
        ("SELECT count(*) FROM lending.loans WHERE loaned_on BETWEEN %s AND %s", ("2026-01-01", "2026-02-01"),
         [("lending.loans.loaned_on", "BETWEEN"), ("lending.loans.loaned_on", "BETWEEN")]),
        ("SELECT m.full_name FROM lending.members AS m JOIN public.branches AS b ON b.id = m.branch_id"
         " WHERE b.name = %s", ("Branch 2",), [("public.branches.name", "=")]),
        # Deliberately unparameterisable: a function of the column, and a LIMIT.
        ("SELECT count(*) FROM lending.loans WHERE date_trunc('month', loaned_on) = %s", ("2026-01-01",),
         "function"),
        ("SELECT title FROM lending.books WHERE id >= %s ORDER BY id LIMIT 5", (3,), "is the LIMIT"),
    ],
    "telemetry": [
        ("SELECT id, kind FROM iot.devices WHERE id = %s", (3,), [("iot.devices.id", "=")]),
        ("SELECT avg(value) FROM iot.readings WHERE device_id = %s AND recorded_at >= %s",
         (5, "2026-01-01 10:00:00+00"), [("iot.readings.device_id", "="), ("iot.readings.recorded_at", ">=")]),
        ("SELECT count(*) FROM iot.readings WHERE recorded_at >= %s AND recorded_at < %s",
         ("2026-01-01 00:00+00", "2026-01-02 00:00+00"),
         [("iot.readings.recorded_at", ">="), ("iot.readings.recorded_at", "<")]),
        # The upper bound numbered first: its lower bound must still be drawn before it.
        ("SELECT count(*) FROM iot.readings WHERE device_id = %s AND recorded_at < %s AND recorded_at >= %s",
         (4, "2026-01-02 00:00+00", "2026-01-01 00:00+00"),
         [("iot.readings.device_id", "="), ("iot.readings.recorded_at", "<"), ("iot.readings.recorded_at", ">=")]),
        ("SELECT name FROM public.sites WHERE code IN ('S1', 'S2')", (),
         [("public.sites.code", "IN, squashed list replayed with 5 values")]),
        ("SELECT d.serial FROM iot.devices AS d JOIN public.sites AS s ON s.code = d.site_code WHERE s.name = %s",
         ("Site 1",), [("public.sites.name", "=")]),
        # Deliberately unparameterisable: the parameter is a function's argument; a column no table can be told by.
        ("SELECT count(*) FROM iot.readings WHERE recorded_at > now() - make_interval(hours => %s)", (3,),
         "argument of the function make_interval"),
        ("SELECT count(*) FROM (SELECT device_id AS dev FROM iot.alarms) AS a WHERE dev = %s", (6,),
         "subquery"),
    ],
}


def _run_workload(url: str, workload: Workload, times: int = 12) -> None:
    """Each statement tagged SELECT /* w<i> */ (pg_stat_statements keeps a comment after the first word), run
    ``times`` times."""
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for _ in range(times):
            for i, (query, params, _expected) in enumerate(workload):
                conn.execute(query.replace("SELECT ", f"SELECT /* w{i} */ ", 1), params).fetchall()  # type: ignore[arg-type]


def _has_app_schema(url: str) -> bool:
    with connection(url) as conn:
        return conn.execute("SELECT to_regnamespace('app') IS NOT NULL").fetchone()[0]  # type: ignore[index]


def _loadtest_roles(url: str) -> int:
    with connection(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'dbops\\_loadtest\\_%'"
                            ).fetchone()[0]  # type: ignore[index]


def _own_folder(tmp_path: Path, schema: ForeignSchema) -> Path:
    folder = tmp_path / "workloads"
    folder.mkdir(exist_ok=True)
    (folder / f"{schema.name}_read.sql").write_text(OWN_SCRIPTS[schema.name])
    return folder


def test_own_script_runs_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    folder = _own_folder(tmp_path, schema)
    plan = LoadTestPlan(profile="own", users=[2], duration_s=2, think_time_s=None, workloads_dir=folder)
    result = run_load_test(url, plan)
    step = result.steps[0]
    assert step.total["transactions"] > 0 and result.failures == 0 and step.error is None
    assert set(step.scripts) == {f"{schema.name}_read"} and step.writes["transactions"] == 0
    assert not _has_app_schema(url) and _loadtest_roles(url) == 0
    # The reference profiles say what to use instead of failing on the missing schema.
    with pytest.raises(LoadTestError, match="no reference schema.*--profile own.*--profile replay"):
        run_load_test(url, LoadTestPlan(profile="read", users=[1], duration_s=1, think_time_s=None))


def test_a_script_reading_a_missing_table_is_one_line_naming_it(foreign_db: tuple[ForeignSchema, str],
                                                               tmp_path: Path) -> None:
    schema, url = foreign_db
    folder = _own_folder(tmp_path, schema)
    (folder / "broken.sql").write_text(f"SELECT count(*) FROM {MISSING_TABLE[schema.name]};\n")  # noqa: S608
    with pytest.raises(LoadTestError) as caught:
        run_load_test(url, LoadTestPlan(profile="own", users=[2], duration_s=2, think_time_s=None,
                                        workloads_dir=folder))
    message = str(caught.value)
    assert message.startswith("workload script broken.sql: relation ")
    assert f'"{MISSING_TABLE[schema.name]}" does not exist' in message and "\n" not in message
    assert _loadtest_roles(url) == 0


def test_own_scripts_from_the_cli(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`dbops loadtest --profile own` reads the target's loadtest.workloads from its settings."""
    schema, url = foreign_db
    _own_folder(tmp_path, schema)
    config = tmp_path / "dbops.yaml"
    config.write_text("targets:\n  team:\n    url_env: TEAM_URL\n    loadtest: {workloads: workloads}\n")
    settings = load_settings({"TEAM_URL": url, "DBOPS_HOME": str(tmp_path / "home")}, tmp_path, config_file=config)
    code = main(["--profile", "own", "--users", "2", "--duration", "1", "--think-time", "0", "--warmup", "0",
                 "--json"], settings)
    out = capsys.readouterr()
    assert code == 0, out.err
    figures = json.loads(out.out)
    assert figures["users_2/all/transactions"] > 0 and figures["failures"] == 0
    code = main(["--profile", f"{schema.name}_read@3", "--users", "1", "--duration", "1", "--think-time", "0",
                 "--warmup", "0"], settings)
    assert code == 0 and "| 1 |" in capsys.readouterr().out


def _check_replay(profile: ReplayProfile, workload: Workload) -> None:
    """Each statement of the workload is replayed with the expected columns, or skipped for the expected reason."""
    for i, (query, _params, expected) in enumerate(workload):
        replayed = [s for s in profile.statements if s.query.startswith(f"SELECT /* w{i} */")]
        skipped = [s for s in profile.skipped if s.query.startswith(f"SELECT /* w{i} */")]
        assert len(replayed) + len(skipped) == 1, (query, replayed, skipped)
        if isinstance(expected, str):
            assert skipped, (query, replayed)
            assert expected in skipped[0].reason, (query, skipped[0].reason)
        else:
            assert replayed, (query, skipped)
            got = [(f"{p.table}.{p.column}", p.predicate) for p in replayed[0].parameters]
            assert sorted(got) == sorted(expected), query
            assert all(p.values > 0 for p in replayed[0].parameters)
            script = profile.scripts[profile.statements.index(replayed[0])].path.read_text()
            statement = "\n".join(line for line in script.splitlines() if not line.startswith(("--", "\\")))
            assert not re.search(r"\$\d", statement) and statement.count(":p") >= len(got), statement[:300]


def test_replay_profile_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    workload = WORKLOADS[schema.name]
    _run_workload(url, workload)
    folder = tmp_path / "replay"
    profile = build_replay(url, folder, limit=20)
    _check_replay(profile, workload)
    assert len(profile.statements) + len(profile.skipped) == len(workload)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for script in profile.scripts:
        text = script.path.read_text()
        assert stat.S_IMODE(script.path.stat().st_mode) == 0o600
        assert "\\set p1 random(1, " in text
        assert text.rstrip().endswith(";")
    # At most replay_statements of the top read statements are considered.
    assert len((few := build_replay(url, tmp_path / "few", limit=2)).statements) + len(few.skipped) == 2
    # The run: every replayed statement ran, with real values of its columns, and nothing failed.
    result = run_load_test(url, LoadTestPlan(profile="replay", users=[2], duration_s=2, think_time_s=None,
                                             replay_dir=tmp_path / "kept"))
    step = result.steps[0]
    assert result.replay is not None and result.failures == 0 and step.error is None
    assert step.total["transactions"] > 0 and step.writes["transactions"] == 0
    assert {s.script for s in result.replay.statements} == set(step.scripts)
    assert all(figures["transactions"] > 0 for figures in step.scripts.values()), step.scripts
    assert len(result.replay.statements) == len(profile.statements)
    assert "skipped statement" in result.table() and result.metadata()["replay/skipped"] == len(profile.skipped)
    assert "| script | calls | weight | tps | avg ms | p95 ms |" in result.table()
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == sorted(s.path.name for s in profile.scripts)
    assert not _has_app_schema(url) and _loadtest_roles(url) == 0
    # A second build does not replay the load test's own statements (its role is left out).
    again = build_replay(url, tmp_path / "again", limit=20)
    assert {s.query for s in again.statements} == {s.query for s in profile.statements}
    assert {s.query for s in again.skipped} == {s.query for s in profile.skipped}


def test_replay_with_nothing_to_replay_checks_nothing(fresh_db: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No read statement in pg_stat_statements: the CLI says "nothing checked" and exits 3; the asset's checks WARN."""
    with connection(fresh_db) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE TABLE t (id int)")
    with pytest.raises(NothingToReplay, match="nothing to replay: pg_stat_statements holds no read statement"):
        build_replay(fresh_db, tmp_path / "r", limit=5)
    settings = load_settings({"DBOPS_DATABASE_URL": fresh_db, "DBOPS_HOME": str(tmp_path / "home")}, tmp_path)
    assert main(["--profile", "replay", "--users", "1", "--duration", "1", "--warmup", "0"], settings) == 3
    err = capsys.readouterr().err.splitlines()  # the phases first, as they happened; the verdict last
    assert err[-1].startswith("nothing checked: nothing to replay") and err[0].startswith("replay: reading")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DBOPS_DATABASE_URL", fresh_db)
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    [asset] = loadtest.build("dbops").assets or []
    result = dg.materialize([asset], resources={"database": DatabaseResource(url=fresh_db)},
                            run_config={"ops": {op_name("dbops", "load_test"): {"config": {"ramp": [1]}}}},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 4 and all(not c.passed and c.severity == dg.AssetCheckSeverity.WARN for c in checks)
    assert all("nothing to replay" in c.metadata["reason"].value for c in checks)


def test_replay_from_the_cli_and_the_asset(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    schema, url = foreign_db
    # The asset reads the target's settings at launch: the one target, on this database (not the embedded server,
    # whose profile.exclude_roles would leave out the postgres role this workload runs as).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DBOPS_DATABASE_URL", url)
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    _run_workload(url, WORKLOADS[schema.name], times=5)
    settings = load_settings({"DBOPS_DATABASE_URL": url, "DBOPS_HOME": str(tmp_path / "home")}, tmp_path)
    code = main(["--profile", "replay", "--users", "2", "--duration", "2", "--think-time", "0", "--warmup", "0",
                 "--json"], settings)
    out = capsys.readouterr()
    assert code == 0, out.err
    figures = json.loads(out.out)
    assert figures["users_2/all/transactions"] > 0 and figures["failures"] == 0
    assert figures["replay"]["replayed"] and figures["replay"]["skipped"]
    assert all(s["reason"] for s in figures["replay"]["skipped"])
    print(f"replay on {schema.name}: {figures['users_2/all/tps']} tps, p95 {figures['users_2/all/p95_ms']} ms")
    [asset] = loadtest.build("dbops").assets or []
    # The defaults (profile and capacity_profile auto): on a team database the ramp replays, no capacity run.
    config = {"ramp": [2], "duration_s": 2, "think_time_s": 0, "warmup_s": 0}
    result = dg.materialize([asset], resources={"database": DatabaseResource(url=url)},
                            run_config={"ops": {op_name("dbops", "load_test"): {"config": config}}},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["ramp"].value.records[0].data["p95_ms"] > 0 and meta["failures"].value == 0
    assert meta["replayed_statements"].value == len(figures["replay"]["replayed"])
    replayed = meta["ramp_replayed"].value.records
    assert len(replayed) == len(figures["replay"]["replayed"]) and all(r.data["statement"] for r in replayed)
    skipped = meta["ramp_replay_skipped"].value.records
    assert skipped and all(r.data["reason"] for r in skipped)
    assert "capacity" not in meta and "capacity_summary" not in meta  # no capacity run on a team database
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["no_failed_transactions"].passed and checks["read_latency_avg_under_target"].passed
    assert checks["write_throughput_over_target"].severity == dg.AssetCheckSeverity.WARN  # replay writes nothing


def test_pgbench_abort_lines_name_the_script(tmp_path: Path) -> None:
    """Parsing only: the PREPARE's error is found even when two pgbench threads wrote into one line; an error that
    is no missing object (division by zero) is not a broken script."""
    from dbops.loadtest.pgbench import _broken_script
    from dbops.loadtest.workloads import Script

    scripts = [Script("ok", tmp_path / "ok.sql", 1, False, False), Script("bad", tmp_path / "bad.sql", 1, False, False)]
    mangled = ('pgbench: error: client 0 script 1 aborted in command 0 query 0: pgbench: error: ERROR:  relation '
               '"x.nope" does not exist\npgbench: error: client 1 script 1 aborted in command 0 query 0: ERROR:  '
               'prepared statement "P_0" does not exist\n')
    error = _broken_script(mangled, scripts)
    assert error is not None and str(error).startswith('workload script bad.sql: relation "x.nope" does not exist')
    lost = ('pgbench: error: client 1 script 1 aborted in command 2 query 0: ERROR:  prepared statement "P_2" does'
            ' not exist\n')
    error = _broken_script(lost, scripts)
    assert error is not None and "could not be prepared" in str(error) and "(command 3)" in str(error)
    assert _broken_script("pgbench: error: client 0 script 0 aborted in command 1 query 0: ERROR:  division by "
                          "zero\n", scripts) is None

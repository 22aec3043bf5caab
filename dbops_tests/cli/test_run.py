"""`dbops run` from the command line: a run of a job of the code location that Dagster re-executes, its phases as
they happen, and one line on stderr for every mistake."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from dbops.instance import dagster_storage_env
from dbops_tests.cli.conftest import repair
from dbops_tests.conftest import MIGRATIONS_DIR, dbops_env, run_dbops


def location_job(job_name: str) -> dg.JobDefinition:
    """``job_name`` of the code location: what the reconstructable job of a re-execution rebuilds."""
    from dbops.definitions import load

    return load().resolve_job_def(job_name)


def _run_record(instance: dg.DagsterInstance) -> dg.DagsterRun:
    (record,) = instance.get_run_records(limit=1)
    return record.dagster_run


def test_a_failed_run_is_one_line_and_re_executes_from_failure(
        pg_server, fresh_db: str, dagster_db: str, broken_migrations: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing migration: one line on stderr naming the step and its cause; the run is a run of the code location's
    job (by name, with the location's origin, tagged with the command), and Dagster re-executes it from failure once
    the migration is repaired."""
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=dagster_db,
                    DBOPS_MIGRATIONS=str(broken_migrations))
    result = run_dbops(["run", "schema_migrations"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: dbops/schema_migrations failed: ")
    assert "no_such_table_anywhere" in result.stderr and " — rerun with --verbose" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "dbops/schema_migrations  started" in result.stdout  # the phases as they happened
    assert pg_server.password not in result.stdout + result.stderr

    for name, value in {**dagster_storage_env(dagster_db), "DAGSTER_HOME": env["DAGSTER_HOME"],
                        **{k: v for k, v in env.items() if k.startswith("DBOPS_")}}.items():
        monkeypatch.setenv(name, value)
    from dbops.definitions import load

    with dg.DagsterInstance.get() as instance:
        run = _run_record(instance)
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert run.job_name in {job.name for job in load().jobs}  # a job of the code location, by name
        assert run.job_name == "dbops_lifecycle"
        assert run.asset_selection == {dg.AssetKey(["dbops", "schema_migrations"])}
        assert run.tags["dbops/command"] == "dbops run schema_migrations"
        assert run.tags["dbops/target"] == "dbops"
        origin = run.remote_job_origin  # what the UI's re-execution reads: the location and repository by name
        assert origin is not None and origin.location_name == "dbops" and origin.job_name == "dbops_lifecycle"

        repair(broken_migrations)
        recon = dg.build_reconstructable_job("dbops_tests.cli.test_run", "location_job",
                                             reconstructable_args=(run.job_name,))
        with dg.execute_job(recon, instance,
                            reexecution_options=dg.ReexecutionOptions.from_failure(run.run_id, instance),
                            run_config=run.run_config) as again:
            assert again.success
            assert again.dagster_run.parent_run_id == run.run_id
            assert again.dagster_run.job_name == run.job_name
    from dbops.pg.connect import connection

    with connection(fresh_db) as conn:
        assert conn.execute("SELECT to_regclass('app.repaired') IS NOT NULL").fetchone()[0]


def test_phases_print_as_they_happen_and_verbose_gives_dagsters_log(pg_server, fresh_db: str, dagster_db: str,
                                                                    tmp_path: Path) -> None:
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=dagster_db,
                    DBOPS_MIGRATIONS=str(MIGRATIONS_DIR))
    result = run_dbops(["run", "schema_migrations"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    started = next(i for i, line in enumerate(lines) if line.endswith("dbops/schema_migrations  started"))
    applied = [i for i, line in enumerate(lines) if "dbops/schema_migrations  applied V1__" in line]
    done = next(i for i, line in enumerate(lines) if "dbops/schema_migrations  done (" in line)
    summary = next(i for i, line in enumerate(lines) if line.startswith("run ") and "SUCCESS" in line)
    assert started < applied[0] < done < summary  # each phase in order, before the summary
    seconds = [float(line.split()[0]) for line in lines[started:done + 1] if line.strip()[0].isdigit()]
    assert seconds == sorted(seconds) and seconds  # elapsed seconds, growing
    assert "STEP_START" not in result.stdout + result.stderr  # Dagster's own events are left out
    assert "dbops:migration_history_valid" not in result.stdout
    assert "dbops/schema_migrations:migration_history_valid  done (" in result.stdout  # checks too

    verbose = run_dbops(["run", "schema_migrations", "--verbose"], env)
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    assert "STEP_START" in verbose.stderr and "dbops/schema_migrations  started" not in verbose.stdout


# Each mistake: (arguments, environment, what the one line on stderr says).
MISTAKES = [
    (["run", "integrity_validation"], {}, "error: integrity_validation is partitioned ("),
    (["run", "integrity_validation", "--partition", "1999-01-01"], {},
     "error: integrity_validation has no partition '1999-01-01' (partitions "),
    (["run", "integrity_validation", "--from", "2999-01-02", "--to", "2999-01-03"], {},
     "error: integrity_validation has no partition '2999-01-02'"),
    (["run", "integrity_validation", "--from", "2026-01-02"], {}, "error: --from and --to go together"),
    (["run", "schema_migrations", "--partition", "2026-01-02"], {}, "error: no selected asset is partitioned"),
    (["run", "no_such_asset"], {}, "error: target 'dbops' has no asset or job named 'no_such_asset'"),
    (["run", "schema_migraions"], {}, "did you mean schema_migrations?"),
    (["run", 'key:"unclosed'], {}, "error: cannot select 'key:\"unclosed': "),
    (["run", "group:nosuch"], {}, "error: selection 'group:nosuch' matches no asset of target 'dbops'"),
    (["run", "database_health"], {},
     "error: dbops/database_health is observed by the sensor dbops_database_health_sensor, not materialized"),
    (["run", "schema_migrations"], {"DBOPS_DATABASE_URL": "postgres://bad url"},
     "error: DBOPS_DATABASE_URL: "),
]


@pytest.mark.parametrize(("args", "extra", "says"), MISTAKES, ids=[" ".join(m[0][1:]) + str(m[1]) for m in MISTAKES])
def test_every_mistake_is_one_line_on_stderr(pg_server, fresh_db: str, dagster_db: str, tmp_path: Path,
                                             args: list[str], extra: dict[str, str], says: str) -> None:
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=dagster_db,
                    DBOPS_MIGRATIONS=str(MIGRATIONS_DIR), **extra)
    result = run_dbops(args, env)
    assert result.returncode in (1, 2), result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and says in result.stderr, result.stderr
    assert " — " in result.stderr  # the problem, then the fix
    assert "Traceback" not in result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if "started" in line]  # nothing ran


def test_a_server_that_refuses_is_one_line(pg_server, fresh_db: str, dagster_db: str, tmp_path: Path) -> None:
    """The target's server down: the step fails on connecting, one line naming the refusal, no traceback."""
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=dagster_db,
                    DBOPS_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")
    result = run_dbops(["run", "schema_migrations"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.stderr.startswith("error: dbops/schema_migrations failed: ") and "Connection refused" in result.stderr


def test_list_marks_partitioned_observed_blocking_and_shows_schedules_and_sensors(pg_server, fresh_db: str,
                                                                                  dagster_db: str,
                                                                                  tmp_path: Path) -> None:
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=dagster_db)
    result = run_dbops(["run", "--list"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    from dbops.definitions import load

    defs = load()
    graph = defs.resolve_asset_graph()
    lines = result.stdout.splitlines()

    def line_of(key: dg.AssetKey) -> str:
        return next(line for line in lines if line.split() and line.split()[0] == key.to_user_string())

    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert ("partitioned (" in line_of(key)) == node.is_partitioned, line_of(key)
        assert ("observed" in line_of(key)) == (not node.is_executable), line_of(key)
    assert "observed by dbops_database_health_sensor" in line_of(dg.AssetKey(["dbops", "database_health"]))
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    marked = {line.split()[1] for line in lines if line.strip().startswith("check ") and "blocking" in line}
    assert marked == blocking and blocking, (marked, blocking)
    for schedule in defs.schedules:
        state = "on" if schedule.default_status == dg.DefaultScheduleStatus.RUNNING else "off"
        row = next(line.split() for line in lines if line.split() and line.split()[0] == schedule.name)
        assert row[1] == state and " ".join(row[2:]) == schedule.cron_schedule
    for sensor in defs.sensors:
        state = "on" if sensor.default_status == dg.DefaultSensorStatus.RUNNING else "off"
        row = next(line.split() for line in lines if line.split() and line.split()[0] == sensor.name)
        assert row[1] == state
    assert "dbops_lifecycle" in result.stdout
    assert os.environ.get("DBOPS_DATABASE_URL") != fresh_db  # the listing ran in its own process


def test_phases_reach_the_terminal_while_the_run_runs(fresh_db: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each phase line is written when it happens, not at the end: the step's start reaches the writer at least the
    step's own duration before the run returns."""
    import time

    from dbops.components.target import fleet_defs
    from dbops.runner import run_selection
    from dbops.settings import load_settings

    for name, value in {"DBOPS_DATABASE_URL": fresh_db, "DBOPS_HOME": str(tmp_path / "home"),
                        "DBOPS_MIGRATIONS": str(MIGRATIONS_DIR)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DBOPS_CONFIG", raising=False)
    settings = load_settings()
    seen: list[tuple[float, str]] = []
    with dg.DagsterInstance.ephemeral() as instance:
        summary = run_selection(fleet_defs(settings), "schema_migrations", instance, target="dbops",
                                command=["run", "schema_migrations"],
                                progress=lambda line: seen.append((time.monotonic(), line)))
        returned = time.monotonic()
    assert summary.success, summary.render()
    started = next(t for t, line in seen if line.endswith("dbops/schema_migrations  started"))
    done_at = next(t for t, line in seen if "dbops/schema_migrations  done (" in line)
    # Written at the end, every line would arrive within a millisecond of the others and of the return; a step's
    # start arrives while its migrations still run, the step's end while its checks still run.
    assert done_at - started > 0.05 and returned - done_at > 0.05, seen
    assert [line for _, line in seen if "applied V1__" in line]  # the asset's own log line, as it happened
    assert all("STEP_" not in line and "dagster" not in line.lower() for _, line in seen), seen

"""`dbops ui` serves the code location `dbops` of workspace.yaml without warnings, and re-executes a run that
`dbops run` made: the run's job is the location's, and the webserver's own re-execution (what the UI's
Re-execute button sends) launches it from failure and the daemon runs it to success."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dbops.pg.connect import connection
from dbops.pg.server import free_port
from dbops_tests.cli.conftest import repair
from dbops_tests.conftest import PROJECT_DIR, dbops_env, run_dbops, stop_process_group

RUN = """query ($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runId status pipelineName parentRunId
  repositoryOrigin { repositoryLocationName repositoryName } tags { key value } } } }"""
REEXECUTE = """mutation ($id: String!) { launchPipelineReexecution(reexecutionParams:
  {parentRunId: $id, strategy: FROM_FAILURE}) { __typename ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message } ... on InvalidStepError { invalidStepKey } } }"""
JOB = """query ($job: String!) { pipelineOrError(params: {repositoryLocationName: "dbops",
  repositoryName: "__repository__", pipelineName: $job}) { __typename ... on Pipeline { name description } } }"""
START_SCHEDULE = """mutation ($name: String!) { startSchedule(scheduleSelector: {repositoryLocationName: "dbops",
  repositoryName: "__repository__", scheduleName: $name}) { __typename ... on PythonError { message } } }"""
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


def graphql(port: int, query: str, **variables: object) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer = json.loads(resp.read())
    assert "errors" not in answer, answer
    return answer["data"]


def _last_run_id(dagster_db: str) -> str:
    with connection(dagster_db) as conn:
        return conn.execute("SELECT run_id FROM runs ORDER BY create_timestamp DESC LIMIT 1").fetchone()[0]


def test_ui_re_executes_a_cli_run_from_failure(pg_server, fresh_db: str, dagster_db: str, broken_migrations: Path,
                                               tmp_path: Path) -> None:
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=dagster_db,
                    DBOPS_MIGRATIONS=str(broken_migrations))
    failed = run_dbops(["run", "schema_migrations"], env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    parent = _last_run_id(dagster_db)

    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dbops.cli", "ui", "--port", str(port)], env=env,
                                cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, log.read_text()
        entries = graphql(port, LOCATIONS)["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["loadStatus"]) for e in entries] == [("dbops", "LOADED")]  # workspace.yaml's name

        run = graphql(port, RUN, id=parent)["runOrError"]
        assert run["status"] == "FAILURE" and run["pipelineName"] == "dbops_lifecycle"
        assert run["repositoryOrigin"] == {"repositoryLocationName": "dbops", "repositoryName": "__repository__"}
        assert {"key": "dbops/command", "value": "dbops run schema_migrations"} in run["tags"]
        job = graphql(port, JOB, job=run["pipelineName"])["pipelineOrError"]
        assert job["__typename"] == "Pipeline" and job["description"]  # the job is the location's, described

        repair(broken_migrations)
        launched = graphql(port, REEXECUTE, id=parent)["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        child = launched["run"]["runId"]
        status, deadline = None, time.monotonic() + 240
        while time.monotonic() < deadline:  # queued, then launched by the daemon `dbops ui` runs
            status = graphql(port, RUN, id=child)["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert status == "SUCCESS", log.read_text()[-3000:]
        again = graphql(port, RUN, id=child)["runOrError"]
        assert again["parentRunId"] == parent and again["pipelineName"] == "dbops_lifecycle"
        with connection(fresh_db) as conn:
            assert conn.execute("SELECT to_regclass('app.repaired') IS NOT NULL").fetchone()[0]

        # A schedule turned on in the UI: `dbops run --list` shows the state the instance holds, not the default.
        started = graphql(port, START_SCHEDULE, name="dbops_index_advice_weekly")["startSchedule"]
        assert started["__typename"] == "ScheduleStateResult", started
        listed = run_dbops(["run", "--list"], env)
        row = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["dbops_index_advice_weekly"])
        assert "on (set in the UI; default off)" in row, listed.stdout
    finally:
        stop_process_group(proc)
    text = log.read_text()
    # `dg dev`, not the superseded `dagster dev`; no dagster.yaml in the working directory but DAGSTER_HOME's.
    for noise in ("Found a dagster instance configuration", "SupersessionWarning", "BetaWarning", "superseded"):
        assert noise not in text, text[:3000]

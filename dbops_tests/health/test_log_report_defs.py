"""``<target>/log_report`` in Dagster: materialized over a real server's log it carries the report's path, the
figures and the slowest statements; its check ``log_errors_under_target`` passes, warns when no new line was read and
fails on a FATAL line; the asset loads in group ``health`` beside the other steps."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from dbops.components.health import logs
from dbops.components.health.logs import ASSET, CHECK, build, reports_dir, server_log_path
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import DatabaseResource, default_resources, launch_settings
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops_tests.health.conftest import settle

TARGET = "dbops"  # no config file: the one embedded target
KEY = asset_key(TARGET, ASSET)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def materialize(server: EmbeddedServer, **options: object) -> dg.ExecuteInProcessResult:
    settle(server.log_file)
    defs = build(TARGET, **{"log_path": server.log_file, **options})
    return dg.materialize(defs.assets or [], instance=dg.DagsterInstance.ephemeral(),
                          resources={"database": DatabaseResource(url=server.url("postgres"))}, raise_on_error=False)


def quiet(url: str) -> None:
    """Connections, statements and temporary files unlogged: the asset's own session (reading the settings) then writes
    no line."""
    with connection(url) as conn:
        for name in ("log_connections", "log_disconnections"):
            conn.execute(f"ALTER SYSTEM SET {name} = off")
        conn.execute("ALTER SYSTEM SET log_min_duration_statement = -1")
        conn.execute("ALTER SYSTEM SET log_temp_files = -1")
        conn.execute("SELECT pg_reload_conf()")


def test_log_report_metadata_and_check(logged_server: EmbeddedServer, home: Path) -> None:
    url = logged_server.url("postgres")
    with connection(url) as conn:
        conn.execute("SELECT pg_sleep(0.3)")
        conn.execute("CREATE ROLE h8_defs PASSWORD 'defs-Secret-0815'")
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT 1/0")
    result = materialize(logged_server)
    assert result.success
    [mat] = result.asset_materializations_for_node(op_name(TARGET, ASSET))
    meta = mat.metadata
    assert meta["report"] == dg.MetadataValue.path(str(home / "logs" / TARGET / "index.html"))
    assert Path(meta["report"].value).is_file() and Path(meta["day_report"].value).is_file()
    assert meta["log"].value == str(logged_server.log_file)
    assert meta["errors_error"].value == 1 and meta["errors_fatal"].value == 0
    assert meta["errors_by_level"].value == {"WARNING": 0, "ERROR": 1, "FATAL": 0, "PANIC": 0}
    assert isinstance(meta["lines"].value, int) and meta["lines"].value > 0
    assert meta["lock_waits"].value == 0 and meta["temp_files"].value == 0
    assert "not_logged" not in meta and "reason" not in meta
    table = meta["slowest"].value
    assert [c.name for c in table.schema.columns] == ["duration_ms", "at", "database", "user", "statement"]
    statements = [r.data["statement"] for r in table.records]
    assert "pg_sleep" in statements[0] and table.records[0].data["duration_ms"] >= 300
    assert any("PASSWORD '***'" in s for s in statements)
    assert not any("defs-Secret-0815" in str(v.value) for v in meta.values())
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK and evaluation.asset_key == KEY and evaluation.passed
    assert evaluation.metadata["errors"].value == 1 and evaluation.metadata["fatal_or_panic"].value == 0

    # one ERROR allowed at most: the next run reads the asset's own session and two new errors
    with connection(url) as conn:
        for _ in range(2):
            with pytest.raises(psycopg.Error):
                conn.execute("SELECT * FROM no_such_table")
    strict = materialize(logged_server, max_errors=1)
    [evaluation] = strict.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["problems"].value == "2 ERROR lines, more than 1"


def test_nothing_new_warns_and_a_fatal_fails(log_server: EmbeddedServer, home: Path) -> None:
    url = log_server.url("postgres")
    quiet(url)
    first = materialize(log_server)
    assert first.success and first.get_asset_check_evaluations()[0].passed  # the server's start, no FATAL
    meta = first.asset_materializations_for_node(op_name(TARGET, ASSET))[0].metadata
    assert "slowest" not in meta and meta["not_logged"].value == {
        "slowest": "log_min_duration_statement = '1s'", "connections": "log_connections = on",
        "sessions": "log_disconnections = on", "temp_files": "log_temp_files = 0"}
    assert "temp_files" not in meta and "temp_bytes" not in meta  # not logged: left out, not 0
    assert meta["connections"].value >= 1  # logged before quiet() took effect: a count, not "not logged"

    again = materialize(log_server)
    assert again.success
    [evaluation] = again.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    until = first.asset_materializations_for_node(op_name(TARGET, ASSET))[0].metadata["until"].value
    assert evaluation.metadata["reason"].value == f"nothing checked: no new log lines since {until}"

    time.sleep(1.1)  # pgBadger does not read again the second its previous run ended in
    with pytest.raises(Exception, match="does not exist"):
        with connection(log_server.url("no_such_database")):
            pass
    fatal = materialize(log_server)
    assert fatal.success
    [evaluation] = fatal.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["fatal_or_panic"].value == 1
    assert evaluation.metadata["problems"].value == "1 FATAL/PANIC lines, more than 0"


def test_a_target_without_a_readable_log_fails_in_one_line(log_server: EmbeddedServer, home: Path,
                                                          tmp_path: Path) -> None:
    result = materialize(log_server, log_path=tmp_path / "missing.log")
    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None and error.cause is not None
    assert error.cause.message.strip() == (
        f"dbops.errors.DbopsError: the server log {tmp_path / 'missing.log'} does not exist — name the file the server"
        " writes (logs.path), or check that the server is running")


def test_a_server_that_cannot_say_where_it_logs_is_nothing_checked(log_server: EmbeddedServer, home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A target of another server (not embedded), no logs.path, logging to stderr without the collector: the run
    succeeds and the check is a WARN naming the fix, not a failed run an alert would page for."""
    monkeypatch.setenv("DBOPS_DATABASE_URL", log_server.url("postgres"))  # an external target: no server log path
    defs = build(TARGET)
    result = dg.materialize(defs.assets or [], instance=dg.DagsterInstance.ephemeral(),
                            resources={"database": DatabaseResource(url=log_server.url("postgres"))},
                            raise_on_error=False)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    reason = evaluation.metadata["reason"].value
    assert reason.startswith("nothing checked: no server log to read") and "logs.path" in reason


def test_log_report_loads_in_group_health() -> None:
    defs = dg.Definitions.merge(logs.build(TARGET), dg.Definitions(resources=default_resources()))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    node = graph.get(KEY)
    assert node.group_name == "health" and node.pools == {TARGET} and node.kinds == {"postgres", "pgbadger"}
    assert "pgBadger" in (node.description or "")
    check = dg.AssetCheckKey(KEY, CHECK)
    assert check in graph.asset_check_keys
    assert "FATAL/PANIC" in (graph.get_check_spec(check).description or "")


def test_the_embedded_targets_log_is_its_servers_and_an_external_one_names_its_own(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert server_log_path(TARGET, None) == launch_settings().server().log_file == home / "postgresql.log"
    assert reports_dir(TARGET) == home / "logs" / TARGET
    monkeypatch.setenv("DBOPS_DATABASE_URL", "postgresql://app@db.example.com/shop")
    assert server_log_path(TARGET, None) is None  # the server names its file (logging_collector), or logs.path does
    assert server_log_path(TARGET, "/var/log/postgresql/shop.log") == Path("/var/log/postgresql/shop.log")

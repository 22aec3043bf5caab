"""pgBadger over a real server's log: what a test plants (an error, a lock wait, temporary files, a checkpoint, a slow
statement, a password literal) is what the report counts; a second run reads nothing new, a third only the new lines."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dbops.errors import ConfigError, DbopsError
from dbops.health import pgbadger
from dbops.health.pgbadger import (
    LEVELS,
    LogReport,
    LogSource,
    find_pgbadger,
    log_report,
    log_source,
    missing_log_settings,
    server_log_settings,
)
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import start_test_server, stop_test_server
from dbops_tests.health.conftest import settle

SECRET = "planted-Secret-4711"
SLEEP_S = 0.7


def source_of(server: EmbeddedServer) -> LogSource:
    with connection(server.url("postgres")) as conn:
        settings = server_log_settings(conn)
    return log_source(settings, log_path=server.log_file)


def report(source: LogSource, out: Path, **kwargs: Any) -> LogReport:
    """A report of the server's log; ``source`` was read once: every session opened here would be new log lines."""
    settle(source.path)
    return log_report(source, out, top=50, **kwargs)


def temp_stats(url: str) -> tuple[int, int]:
    with connection(url) as conn:
        return conn.execute("SELECT temp_files, temp_bytes FROM pg_stat_database WHERE datname = current_database()"
                            ).fetchone()


def plant(url: str) -> dict[str, int]:
    """Each event once, in the ``postgres`` database; returns the server's own temp-file counts of the sort."""
    files_before, bytes_before = temp_stats(url)
    with connection(url) as conn:
        conn.execute("CREATE TABLE planted (x int)")
        with pytest.raises(Exception, match="division by zero"):
            conn.execute("SELECT 1/0")
        conn.execute("SET work_mem = '64kB'")
        conn.execute("SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC").fetchall()
        conn.execute(f"SELECT pg_sleep({SLEEP_S})")
        conn.execute(f"CREATE ROLE h8_planted LOGIN PASSWORD '{SECRET}'")
        conn.execute("CHECKPOINT")
    with connection(url) as holder, connection(url) as waiter:  # a lock wait longer than deadlock_timeout (100 ms)
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE planted IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
        release.start()
        waiter.execute("SELECT * FROM planted").fetchall()
        release.join()
    deadline = time.monotonic() + 15  # the sort's backend reports its statistics when idle
    files, size = temp_stats(url)
    while files == files_before and time.monotonic() < deadline:
        time.sleep(0.2)
        files, size = temp_stats(url)
    assert files > files_before
    return {"temp_files": files - files_before, "temp_bytes": size - bytes_before}


def test_report_counts_what_was_planted_then_nothing_new_then_only_the_new_lines(logged_server: EmbeddedServer,
                                                                                  tmp_path: Path) -> None:
    url = logged_server.url("postgres")
    planted = plant(url)
    source = source_of(logged_server)
    out = tmp_path / "reports"
    lines: list[str] = []
    first = report(source, out, progress=lines.append)

    assert first.since is None and first.until and first.lines > 0 and first.nothing_reason is None
    assert first.errors == {"WARNING": 0, "ERROR": 1, "FATAL": 0, "PANIC": 0}
    assert first.lock_waits == 1 and first.lock_wait_ms is not None and first.lock_wait_ms >= 400
    assert first.deadlocks == 0
    assert (first.temp_files, first.temp_bytes) == (planted["temp_files"], planted["temp_bytes"])
    assert first.checkpoints is not None and first.checkpoints >= 1
    assert first.connections is not None and first.connections >= 3  # the planting's three sessions, the polling's
    assert first.sessions is not None and first.sessions >= 3
    assert first.not_logged == {}
    slowest = first.slowest[0]
    assert "pg_sleep" in slowest.statement and slowest.duration_ms >= SLEEP_S * 1000
    assert slowest.database == "postgres" and slowest.user == "postgres"
    assert [s.duration_ms for s in first.slowest] == sorted((s.duration_ms for s in first.slowest), reverse=True)
    [role] = [s for s in first.slowest if "h8_planted" in s.statement]
    assert "PASSWORD '***'" in role.statement and SECRET not in role.statement
    assert any("SELECT * FROM planted" in s.statement and s.duration_ms >= 400 for s in first.slowest)

    assert first.report == out / "index.html" and first.report.is_file()
    [day] = first.day_reports
    assert day.is_file() and "division by zero" in day.read_text()
    for html in out.rglob("*.html"):  # --anonymize: no literal of a statement reaches the HTML
        assert SECRET not in html.read_text(errors="replace"), html
    assert (out.stat().st_mode & 0o777) == 0o700
    assert lines[0].startswith("pgBadger 12") and "from its first line" in lines[0]
    assert "1 ERROR, 0 FATAL" in lines[-1]

    again = report(source, out)
    assert again.lines == 0 and again.since == first.until
    assert again.nothing_reason == f"nothing checked: no new log lines since {first.until}"
    assert again.errors == {level: 0 for level in LEVELS} and again.slowest == ()

    time.sleep(1.1)  # past the second the first run ended in: pgBadger does not read that second's lines again
    with connection(url) as conn:
        with pytest.raises(Exception, match="does not exist"):
            conn.execute("SELECT * FROM no_such_table")
    third = report(source, out)
    assert third.since == first.until and third.lines > 0
    assert third.errors["ERROR"] == 1 and third.fatal == 0
    assert third.lock_waits == 0 and third.temp_files == 0
    assert not any("pg_sleep" in s.statement for s in third.slowest)
    assert third.connections == 1 and third.sessions == 1


def test_a_figure_the_server_does_not_log_is_left_out_and_named(log_server: EmbeddedServer, tmp_path: Path) -> None:
    """The embedded server's own settings (dbops.pg.server.default_settings) log everything pgBadger reports; with
    temporary files unlogged, that figure is left out and named with the setting to change."""
    url = log_server.url("postgres")
    with connection(url) as conn:
        assert missing_log_settings(server_log_settings(conn)) == {}
        conn.execute("ALTER SYSTEM SET log_temp_files = -1")
        conn.execute("SELECT pg_reload_conf()")
    with connection(url) as conn:
        conn.execute("SELECT pg_sleep(1.1)")  # above log_min_duration_statement = 1s
        settings = server_log_settings(conn)
    assert missing_log_settings(settings) == {"temp_files": "log_temp_files = 0"}
    result = report(source_of(log_server), tmp_path / "reports")
    assert result.temp_files is None and result.temp_bytes is None
    assert result.not_logged == {"temp_files": "log_temp_files = 0"}
    assert result.lock_waits == 0  # logged (log_lock_waits = on), none happened
    assert [s.statement for s in result.slowest] == ["SELECT pg_sleep(1.1);"]


def test_the_server_names_its_log_when_the_collector_writes_it(tmp_path: Path) -> None:
    server = start_test_server(logging_collector="on", log_directory="'log'",
                               log_filename="'postgresql-%Y-%m-%d.log'")
    try:
        with connection(server.url("postgres")) as conn:
            with pytest.raises(Exception, match="division by zero"):
                conn.execute("SELECT 1/0")
            settings = server_log_settings(conn)
        source = log_source(settings)
        assert source.path.parent == server.data_dir / "log" and source.format == "stderr"
        assert source.prefix == "%m [%p] %q%u@%d "
        result = log_report(source, tmp_path / "reports")
        assert result.errors["ERROR"] == 1 and result.log == source.path
    finally:
        stop_test_server(server)


def test_bad_input_is_one_line_naming_the_fix(log_server: EmbeddedServer, tmp_path: Path) -> None:
    with connection(log_server.url("postgres")) as conn:
        settings = server_log_settings(conn)
    source = log_source(settings, log_path=log_server.log_file)

    with pytest.raises(DbopsError, match=r"pgBadger not found at /nonexistent/pgbadger — .*apt-get install pgbadger"):
        log_report(source, tmp_path / "a", program="/nonexistent/pgbadger")
    missing = log_source(settings, log_path=tmp_path / "nope.log")
    with pytest.raises(DbopsError, match=r"the server log .*nope.log does not exist — name the file"):
        log_report(missing, tmp_path / "b")
    with pytest.raises(DbopsError, match="is not a file"):
        log_report(log_source(settings, log_path=tmp_path), tmp_path / "c")
    with pytest.raises(ConfigError, match=r"no server log to read: the server writes its log to stderr without"
                                          r" logging_collector.* — name the log file"):
        log_source(settings)  # the embedded server's stderr goes where pg_ctl -l sends it: the server cannot say
    with pytest.raises(ConfigError, match=r"log_line_prefix '\[%p\] ' has no timestamp"):
        log_source(settings, log_path=log_server.log_file, log_line_prefix="[%p] ")
    with pytest.raises(ConfigError, match="unknown log format"):
        log_source(settings, log_path=log_server.log_file, log_format="xml")

    wrong = log_source(settings, log_path=log_server.log_file, log_line_prefix="%t user=%u,db=%d ")
    with pytest.raises(ConfigError, match=r"pgBadger read no line of .*postgresql.log: its lines do not match the"
                                          r" log_line_prefix '%t user=%u,db=%d '"):
        log_report(wrong, tmp_path / "d")


def test_no_pgbadger_installed_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgbadger, "PGBADGER", tmp_path / "pgbadger")
    with pytest.raises(DbopsError) as caught:
        find_pgbadger()
    assert str(caught.value) == ("pgBadger is not installed (no pgbadger program on PATH) — install it: `apt-get"
                                 " install pgbadger` (or `make system-deps`)")


def test_an_empty_log_is_nothing_checked(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("")
    result = log_report(log_source({"log_line_prefix": "%m [%p] "}, log_path=empty), tmp_path / "reports")
    assert result.lines == 0 and result.nothing_reason == f"nothing checked: no new log lines in {empty} (empty)"

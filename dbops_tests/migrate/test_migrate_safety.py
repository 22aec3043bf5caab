"""Nothing lost, nothing leaked: a migration is either checked whole before anything runs, or visibly unfinished.

Every test runs against the session's real PostgreSQL; the kill -9 one kills a real `dbops migrate` process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbops.migrate import MigrationError, Migrator, lint_files, statements
from dbops.pg.connect import connection
from dbops_tests.conftest import PROJECT_DIR, dbops_env, run_dbops


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def scalar(url: str, query: str, params: list | None = None):
    with connection(url) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None


def history(url: str) -> list[tuple]:
    if not scalar(url, "SELECT to_regclass('public.flyway_schema_history') IS NOT NULL"):
        return []
    with connection(url) as conn:
        return conn.execute("SELECT version, script, success FROM public.flyway_schema_history"
                            " ORDER BY installed_rank").fetchall()


def exists(url: str, relation: str) -> bool:
    return bool(scalar(url, "SELECT to_regclass(%s) IS NOT NULL", [relation]))


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


# ---- 1. nothing of a file is silently dropped ----------------------------------------------------------------------

TRICKY = """-- leading comment; with a semicolon
CREATE TABLE t (id int, note text DEFAULT 'a;b', "odd;name" int);

/* block comment; /* nested; */ still comment */
CREATE FUNCTION f(x int) RETURNS int LANGUAGE plpgsql AS $body$
DECLARE
    s text := E'it\\'s; fine';
BEGIN
    -- BEGIN, COMMIT; in a body are not transaction control
    RETURN x + 1;
END
$body$;
CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO t VALUES (1); COMMIT; END $$;
CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;
DO $$ BEGIN PERFORM 1; END $$;;
INSERT INTO t (id) VALUES (2)  -- no semicolon at the end, a trailing comment
"""


def test_statements_cover_the_whole_text_with_their_lines() -> None:
    found = statements(TRICKY)
    assert [line for line, _ in found] == [2, 5, 13, 14, 15, 16]
    assert found[1][1].startswith("CREATE FUNCTION f") and found[1][1].rstrip().endswith("$body$")
    assert found[3][1].endswith("END")  # BEGIN ATOMIC ... END is one statement
    rest = TRICKY
    for _line, text in found:
        rest = rest.replace(text, "", 1)
    assert set(rest.replace("-- leading comment; with a semicolon", "")
               .replace("/* block comment; /* nested; */ still comment */", "")) <= set(" \n;")


@pytest.mark.parametrize(("text", "line", "message"), [
    ("CREATE TABLE a (id int);\nCREATE TABLE b (id int;\nCREATE TABLE c (id int);\n", 2, 'syntax error at or near ";"'),
    ("SELECT 1;\nSELECT 'never closed;\nSELECT 2;\n", 2, "unterminated quoted string"),
    ("SELECT 1;\n\\set x 1\nSELECT 2;\n", 2, "syntax error"),
    ("SELECT 1;\nSELECT 2 /* open comment\n", 2, "unterminated /* comment"),
    ("SELECT 1;\nSELECT 'a\x00b';\nSELECT 3;\n", 2, "NUL"),
])
def test_text_the_parser_cannot_take_is_refused_with_its_line(text: str, line: int, message: str) -> None:
    with pytest.raises(MigrationError) as info:
        statements(text)
    assert f"line {line}:" in str(info.value) and message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_unclosed_statement_is_refused_before_any_pending_file_runs(fresh_db: str, tmp_path: Path) -> None:
    """The issue's repro: the old scanner split ran app.a, dropped app.b and app.c, and recorded success."""
    d = tmp_path / "m"
    write(d, "V1__schema.sql", "CREATE SCHEMA app;\n")
    write(d, "V9__x.sql", "CREATE TABLE app.a(id int);\nCREATE TABLE app.b(id int;\nCREATE TABLE app.c(id int);\n")
    with pytest.raises(MigrationError) as info:
        Migrator(fresh_db, d).apply()
    message = str(info.value)
    assert "V9__x.sql line 2" in message and 'syntax error at or near ";"' in message
    assert not exists(fresh_db, "app.a") and scalar(fresh_db, "SELECT to_regnamespace('app') IS NULL")
    assert history(fresh_db) == []  # V1 did not run either: every pending file is checked first
    write(d, "V9__x.sql", "CREATE TABLE app.a(id int);\nCREATE TABLE app.b(id int);\nCREATE TABLE app.c(id int);\n")
    assert [m.version for m in Migrator(fresh_db, d).apply().applied] == ["1", "9"]
    assert all(exists(fresh_db, f"app.{t}") for t in "abc")


def test_plpgsql_and_atomic_bodies_apply_whole(fresh_db: str, tmp_path: Path) -> None:
    write(tmp_path / "m", "V1__tricky.sql", TRICKY)
    Migrator(fresh_db, tmp_path / "m").apply()
    assert scalar(fresh_db, "SELECT f(41)") == 42 and scalar(fresh_db, "SELECT g()") == 2
    assert scalar(fresh_db, "SELECT string_agg(id::text, ',') FROM t") == "2"


def test_unparseable_callback_is_refused_before_anything_runs(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__a.sql", "CREATE TABLE a (id int);\n")
    write(d, "afterMigrate.sql", "SELECT 1;\nSELEC 2;\n")
    with pytest.raises(MigrationError, match="afterMigrate.sql line 2"):
        Migrator(fresh_db, d).apply()
    assert not exists(fresh_db, "public.a") and history(fresh_db) == []


# ---- 2. transaction control inside a transactional migration -------------------------------------------------------

@pytest.mark.parametrize("control", [
    "COMMIT", "ROLLBACK", "BEGIN", "START TRANSACTION", "SAVEPOINT s", "RELEASE SAVEPOINT s", "ROLLBACK TO s",
    "END", "ABORT", "PREPARE TRANSACTION 'x'", "commit and chain",
])
def test_transaction_control_is_refused_before_anything_runs(fresh_db: str, tmp_path: Path, control: str) -> None:
    d = tmp_path / "m"
    write(d, "V1__first.sql", "CREATE TABLE first (id int);\n")
    write(d, "V2__control.sql", f"CREATE TABLE a (id int);\n-- breaks atomicity:\n  {control};\n"
          "CREATE TABLE b (id int);\nINSERT INTO b VALUES ('not a number');\n")
    with pytest.raises(MigrationError) as info:
        Migrator(fresh_db, d).apply()
    message = str(info.value)
    assert "V2__control.sql line 3" in message and "-- dbops:no-transaction" in message, message
    assert not exists(fresh_db, "public.first") and not exists(fresh_db, "public.a")
    assert not exists(fresh_db, "public.b") and history(fresh_db) == []


def test_transaction_words_inside_bodies_and_no_transaction_files_are_fine(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__bodies.sql", TRICKY)
    write(d, "V2__own_transactions.sql", "-- dbops:no-transaction\nBEGIN;\nCREATE TABLE mine (id int);\nCOMMIT;\n"
          "CREATE INDEX CONCURRENTLY mine_id ON mine (id);\n")
    assert [m.version for m in Migrator(fresh_db, d).apply().applied] == ["1", "2"]
    assert exists(fresh_db, "public.mine_id") and [r[2] for r in history(fresh_db)] == [True, True]


@pytest.mark.parametrize(("body", "expected"), [
    ("BEGIN;\nCREATE TABLE half (id int);\n", "V1__open.sql left a transaction open.*repair"),
    ("BEGIN;\nCREATE TABLE half (id int);\nINSERT INTO half VALUES ('x');\nCOMMIT;\n",
     "V1__open.sql line 4: invalid input syntax.*repair"),
])
def test_no_transaction_file_leaving_a_transaction_open_is_rolled_back_and_failed(fresh_db: str, tmp_path: Path,
                                                                                   body: str, expected: str) -> None:
    d = tmp_path / "m"
    write(d, "V1__open.sql", "-- dbops:no-transaction\n" + body)
    with pytest.raises(MigrationError, match=expected):
        Migrator(fresh_db, d).apply()
    assert not exists(fresh_db, "public.half") and history(fresh_db) == [("1", "V1__open.sql", False)]


def test_transaction_control_in_an_each_migrate_callback_is_refused(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__a.sql", "CREATE TABLE a (id int);\n")
    write(d, "afterEachMigrate.sql", "COMMIT;\n")
    with pytest.raises(MigrationError, match="afterEachMigrate.sql line 1: COMMIT"):
        Migrator(fresh_db, d).apply()
    assert not exists(fresh_db, "public.a")


def test_lint_reports_what_apply_would_refuse(tmp_path: Path) -> None:
    path = write(tmp_path / "m", "V1__c.sql", "CREATE TABLE a (id bigint);\nCOMMIT;\n")
    findings = [f for f in lint_files([path]) if f.rule.startswith("dbops-")]
    assert [(f.line, f.level, f.rule) for f in findings] == [(2, "error", "dbops-transaction-control")]


def test_cli_refuses_commit_in_one_line(pg_server, fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__c.sql", "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);\n")
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_MIGRATIONS=str(d))
    assert_one_line_error(run_dbops(["migrate"], env), "V1__c.sql line 2: COMMIT", "dbops:no-transaction")
    assert not exists(fresh_db, "public.a") and history(fresh_db) == []


# ---- 3. an interrupted no-transaction migration is visible ---------------------------------------------------------

def _wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_kill_9_during_a_no_transaction_migration_is_recorded_failed(pg_server, fresh_db: str,
                                                                     tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__t.sql", "CREATE TABLE t (id bigint PRIMARY KEY, note text);\n")
    write(d, "V2__idx.sql", "-- dbops:no-transaction\nCREATE INDEX CONCURRENTLY t_note_idx ON t (note);\n"
          "SELECT pg_sleep(60);\n")
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_MIGRATIONS=str(d))
    proc = subprocess.Popen([sys.executable, "-m", "dbops.cli", "migrate"], env=env, cwd=PROJECT_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sleeping = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'SELECT pg_sleep%'")
    terminate = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                 " AND query LIKE 'SELECT pg_sleep%'")
    try:
        _wait_for(lambda: proc.poll() is not None or scalar(fresh_db, sleeping) is not None, "the migration to run")
        assert proc.poll() is None, proc.communicate()
        # While it runs, the row is there (success = false) and info says it is running, not failed.
        assert history(fresh_db) == [("1", "V1__t.sql", True), ("2", "V2__idx.sql", False)]
        states = {i.version: i.state for i in Migrator(fresh_db, d).info()}
        assert states == {"1": "success", "2": "running"}
        Migrator(fresh_db, d).validate()  # a run in progress is not a broken history
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    # The server-side statement outlives its client until it next talks to it; end it as a crash would.
    scalar(fresh_db, terminate)
    _wait_for(lambda: scalar(fresh_db, sleeping) is None, "the orphaned backend to go")
    assert exists(fresh_db, "public.t_note_idx")  # the partial change it made...
    assert history(fresh_db)[-1] == ("2", "V2__idx.sql", False)  # ...is visible in the history
    states = {i.version: i.state for i in Migrator(fresh_db, d).info()}
    assert states == {"1": "success", "2": "failed"}
    info = run_dbops(["migrate", "info"], env)
    assert info.returncode == 0 and "failed" in info.stdout
    line = assert_one_line_error(run_dbops(["migrate"], env), "V2__idx.sql", "repair")
    assert "interrupted" in line
    # The operator checks, finishes the change by hand, fixes the file and repairs: then migrate goes on.
    write(d, "V2__idx.sql", "-- dbops:no-transaction\n"
          "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_note_idx ON t (note);\n")
    assert Migrator(fresh_db, d).repair().removed_failed == 1
    assert [m.version for m in Migrator(fresh_db, d).apply().applied] == ["2"]
    assert history(fresh_db)[-1] == ("2", "V2__idx.sql", True)


def test_no_transaction_row_is_flipped_with_its_duration(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__slow.sql", "-- dbops:no-transaction\nCREATE TABLE s (id int);\nSELECT pg_sleep(0.3);\n")
    Migrator(fresh_db, d).apply()
    with connection(fresh_db) as conn:
        rows = conn.execute("SELECT version, success, execution_time FROM public.flyway_schema_history").fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("1", True) and rows[0][2] >= 300


# ---- 4. what the history table cannot hold is refused up front -----------------------------------------------------

@pytest.mark.parametrize("no_transaction", [False, True])
def test_version_longer_than_the_history_column_is_refused(fresh_db: str, tmp_path: Path,
                                                           no_transaction: bool) -> None:
    d = tmp_path / "m"
    write(d, "V1__a.sql", "CREATE TABLE a (id int);\n")
    header = "-- dbops:no-transaction\n" if no_transaction else ""
    write(d, f"V{'1' * 55}__long.sql", f"{header}CREATE TABLE b (id int);\n")
    with pytest.raises(MigrationError, match="55 characters.*holds 50") as info:
        Migrator(fresh_db, d).apply()
    assert "\n" not in str(info.value)
    assert not exists(fresh_db, "public.a") and not exists(fresh_db, "public.b") and history(fresh_db) == []


def test_non_utf8_file_name_is_refused(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__a.sql", "CREATE TABLE a (id int);\n")
    (d / os.fsdecode(b"V3__caf\xe9.sql")).write_text("-- dbops:no-transaction\nCREATE TABLE c (id int);\n")
    with pytest.raises(MigrationError, match=r"V3__caf\\xe9.sql.*not UTF-8"):
        Migrator(fresh_db, d).apply()
    assert not exists(fresh_db, "public.a") and not exists(fresh_db, "public.c") and history(fresh_db) == []


def test_cli_bad_names_are_one_line_errors(pg_server, fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__a.sql", "CREATE TABLE a (id int);\n")
    bad = d / os.fsdecode(b"V3__caf\xe9.sql")
    bad.write_text("CREATE TABLE c (id int);\n")
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_MIGRATIONS=str(d))
    for action in ("apply", "info", "plan"):
        assert_one_line_error(run_dbops(["migrate", action], env), "V3__caf\\xe9.sql", "not UTF-8")
    bad.unlink()
    write(d, f"V{'9' * 55}__long.sql", "CREATE TABLE b (id int);\n")
    assert_one_line_error(run_dbops(["migrate"], env), "55 characters", "50")
    assert not exists(fresh_db, "public.a") and history(fresh_db) == []

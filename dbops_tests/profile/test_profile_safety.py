"""The profiler on real PostgreSQL: password literals never leave pg_stat_statements, its files are private, and
profiling or advising never executes what an application statement does (pg_terminate_backend, say)."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbops.pg.connect import connection, parse_url
from dbops.pg.server import EmbeddedServer
from dbops.profile.cli import advise_main, profile_main
from dbops.settings import load_settings
from dbops_tests.conftest import dbops_env, run_dbops

# A distinctive piece of each password literal below (as it would appear in a text, a JSON string or a table).
LITERALS = ["S3cretLiteral", "Q7ecret", "D0llar", "T4gged"]


def _files(root: Path) -> list[Path]:
    return [Path(folder) / name for folder, _, names in os.walk(root) for name in names]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_password_literals_reach_no_file_metadata_or_output(pg_server: EmbeddedServer, fresh_db: str,
                                                            tmp_path: Path) -> None:
    role = f"pw_{uuid.uuid4().hex[:8]}"
    with connection(fresh_db) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        ident = sql.Identifier(role).as_string(conn)
        try:
            conn.execute(f"ALTER ROLE {ident} PASSWORD 'S3cretLiteral!'")  # noqa: S608 - the statement under test
            conn.execute(f"ALTER ROLE {ident} WITH ENCRYPTED PASSWORD E'Escaped\\'Q7ecret'")
            conn.execute(f"ALTER USER {ident} PASSWORD $$Dollar$D0llar$$")
            conn.execute(f"ALTER ROLE {ident} PASSWORD $t$T4gged$t$ VALID UNTIL 'infinity'")
            kept = conn.execute("SELECT string_agg(query, ' ') FROM pg_stat_statements WHERE query LIKE 'ALTER%'")
            kept_text = kept.fetchone()[0] or ""
        finally:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert all(literal in kept_text for literal in LITERALS), kept_text  # the server keeps them: the test has teeth

    parent_mode = _mode(tmp_path)
    env = dbops_env(pg_server, fresh_db, tmp_path)  # `dbops profile` writes its snapshot under this DBOPS_HOME
    shown = run_dbops(["profile", "--top", "500"], env, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "PASSWORD '***'" in shown.stdout, shown.stdout  # the statements are listed, their literals masked
    run_env = dict(env, DBOPS_HOME=str(tmp_path / "run-home"), DAGSTER_HOME=str(tmp_path / "run-dagster-home"))
    materialized = run_dbops(["run", "query_profile"], run_env, timeout=600)  # its own first snapshot: everything
    assert materialized.returncode == 0, materialized.stdout + materialized.stderr
    homes = [Path(env["DBOPS_HOME"]), Path(run_env["DBOPS_HOME"]), Path(run_env["DAGSTER_HOME"])]
    for literal in LITERALS:
        for output in (shown, materialized):
            assert literal not in output.stdout + output.stderr, literal
        for path in [p for home in homes for p in _files(home)]:
            assert literal.encode() not in path.read_bytes(), (literal, path)
    with connection(pg_server.url("dagster")) as conn:  # Dagster's event log: the materialization's metadata
        stored = conn.execute("SELECT count(*) FROM event_logs WHERE event LIKE %s",
                              ["%PASSWORD '***'%"]).fetchone()[0]
        assert stored > 0
        for literal in LITERALS:
            assert conn.execute("SELECT count(*) FROM event_logs WHERE strpos(event, %s) > 0",
                                [literal]).fetchone()[0] == 0, literal

    for home in homes[:2]:
        assert (home / "profile" / f"{parse_url(fresh_db).database}.pgss.json").is_file()
    for root in homes:
        for folder, _, names in os.walk(root):
            assert _mode(Path(folder)) == 0o700, folder
            for name in names:
                path = Path(folder) / name
                if stat.S_ISREG(path.lstat().st_mode):
                    assert _mode(path) == 0o600, path
    assert _mode(tmp_path) == parent_mode  # the folder above DBOPS_HOME is left as it was


VICTIMS = """
CREATE SCHEMA bad;
CREATE TABLE bad.victim_list (pid integer);
CREATE TABLE bad.victims (pid integer NOT NULL, note text);
INSERT INTO bad.victims SELECT -g, 'no such backend' FROM generate_series(1, 20000) AS g;
ANALYZE bad.victims;
"""
KILL_LISTED = "SELECT pg_terminate_backend(pid) FROM bad.victim_list"
KILL_BY_PID = "SELECT pg_terminate_backend(pid) FROM bad.victims WHERE pid = %s"


@pytest.fixture
def app_role(fresh_db: str) -> Iterator[tuple[str, str]]:
    """A login role of the application and its URL."""
    name, password = f"app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with connection(fresh_db) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
    parts = parse_url(fresh_db)
    yield name, f"postgresql://{name}:{password}@{parts.hostport}/{parts.database}"
    with connection(fresh_db) as conn:  # its grants live in fresh_db; the role is cluster-wide
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_profiling_and_advising_never_run_what_a_statement_does(fresh_db: str, server_url: str,
                                                                app_role: tuple[str, str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    role, app_url = app_role
    with connection(fresh_db) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(VICTIMS)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA bad TO {0}; GRANT SELECT ON ALL TABLES IN SCHEMA bad TO {0}")
                     .format(sql.Identifier(role)))
    # The application's statements, harmless when they ran: nobody listed, no such pid. Recorded per role.
    for url in (app_url, fresh_db):
        with connection(url) as conn:
            conn.execute(KILL_LISTED).fetchall()
            conn.execute(KILL_BY_PID, (0,)).fetchall()
    with connection(server_url) as victim:  # another superuser session, on another database
        pid = victim.info.backend_pid
        with connection(fresh_db) as conn:  # now the same texts would kill it
            conn.execute("INSERT INTO bad.victim_list VALUES (%s)", (pid,))
            conn.execute("UPDATE bad.victims SET pid = %s", (pid,))
            conn.execute("ANALYZE bad.victims")
        settings = load_settings({"DBOPS_DATABASE_URL": fresh_db, "DBOPS_HOME": str(tmp_path / "home"),
                                  "DBOPS_MIGRATIONS": str(tmp_path / "migrations"),
                                  "DBOPS_REVIEW_DIR": str(tmp_path / "review")})
        assert profile_main(["--top", "100"], settings) == 0
        assert victim.execute("SELECT 1").fetchone()[0] == 1, "the profiler executed pg_terminate_backend"
        assert advise_main(["--top", "100"], settings) == 0
        try:
            assert victim.execute("SELECT 1").fetchone()[0] == 1
        except psycopg.OperationalError:
            pytest.fail("index advice executed pg_terminate_backend on its scratch copy")
    assert not list((tmp_path / "review").glob("*.sql"))

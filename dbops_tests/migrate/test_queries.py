"""Production's statements (pg_stat_statements) planned on a copy before and after migrations, on real servers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbops.migrate.queries import (
    Plan,
    Recorded,
    RecordedStatement,
    compare,
    plan_statements,
    recorded_statements,
)
from dbops.pg.connect import connection, drop_database, with_database
from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import start_test_server, stop_test_server
from dbops_tests.foreign import ForeignSchema

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
ROWS = 50_000


@dataclass
class Production:
    url: str
    excluded: str  # a role passed in exclude_roles
    loadtest: str  # a role named like the load test's
    app: str  # a role with a search_path of its own in this database
    dollar_user: str  # a role whose search_path starts with "$user"


def _find(recorded: Recorded, fragment: str) -> RecordedStatement:
    found = [s for s in recorded.statements if fragment in s.query]
    assert len(found) == 1, (fragment, [s.query for s in recorded.statements])
    return found[0]


@pytest.fixture
def production(fresh_db: str) -> Iterator[Production]:
    """fresh_db with an application schema (50k users, an index on email) and a workload run through psycopg, so
    pg_stat_statements holds its statements with $n parameters, plus dbops' own and excluded ones."""
    tag = uuid.uuid4().hex[:8]
    prod = Production(fresh_db, f"t_excl_{tag}", f"dbops_loadtest_{tag}", f"t_app_{tag}", f"t_du_{tag}")
    database = fresh_db.rsplit("/", 1)[1]
    with connection(fresh_db) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for role in (prod.excluded, prod.loadtest, prod.app, prod.dollar_user):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN SUPERUSER").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = app").format(
            sql.Identifier(prod.app), sql.Identifier(database)))
        conn.execute(sql.SQL("ALTER ROLE {} SET search_path = '$user', app").format(sql.Identifier(prod.dollar_user)))
    try:
        with connection(fresh_db) as conn:
            conn.execute("CREATE SCHEMA app")
            conn.execute("CREATE TABLE app.users (id bigint PRIMARY KEY, email text NOT NULL, name text)")
            conn.execute("INSERT INTO app.users SELECT g, 'user' || g || '@example.com', 'name ' || g"
                         " FROM generate_series(1, %s) AS g", [ROWS])
            conn.execute("CREATE INDEX users_email_idx ON app.users (email)")
            conn.execute("CREATE TABLE app.flyway_schema_history (installed_rank int PRIMARY KEY, version text)")
            conn.execute("ANALYZE")
            for i in range(1, 21):
                conn.execute("SELECT id FROM app.users WHERE email = %s", [f"user{i}@example.com"])
            for i in range(1, 6):
                conn.execute("SELECT id, email FROM app.users WHERE name = %s", [f"name {i}"])
                conn.execute("UPDATE app.users SET name = %s WHERE id = %s", [f"name {i}", i])
            conn.execute("INSERT INTO app.users (id, email) VALUES (%s, %s)", [ROWS + 1, "new@example.com"])
            conn.execute("CREATE TEMP TABLE scratch (x int)")
            conn.execute("SELECT x FROM scratch WHERE x = %s", [1])
            # dbops' own, the catalog's, Flyway's, no relation at all, a utility statement: none is the application's
            # PostgreSQL 18 drops a leading comment from the recorded text: a marker goes after the first keyword.
            conn.execute("SELECT /* dbops:profile */ count(*) FROM app.users WHERE id > %s", [1])
            conn.execute("SELECT relname FROM pg_class WHERE oid = %s", [1259])
            conn.execute("SELECT version FROM app.flyway_schema_history WHERE installed_rank = %s", [1])
            conn.execute("SELECT %s::int + 1", [1])
            conn.execute("VACUUM app.flyway_schema_history")
            conn.execute("SELECT count(*) FROM pg_stat_statements")
            for role in (prod.excluded, prod.loadtest):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
                conn.execute("SELECT email FROM app.users WHERE id < %s", [3])
                conn.execute("RESET ROLE")
            # A role that relied on its own search_path: an unqualified name.
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(prod.app)))
            conn.execute("SET search_path = app")
            conn.execute("SELECT email FROM users WHERE id = %s", [7])
            conn.execute("RESET ROLE")
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(prod.dollar_user)))
            conn.execute("SELECT name FROM users WHERE id BETWEEN %s AND %s", [1, 9])
            conn.execute("RESET ROLE")
        yield prod
    finally:
        with connection(fresh_db) as conn:
            for role in (prod.excluded, prod.loadtest, prod.app, prod.dollar_user):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def copy_of(production: Production, server_url: str) -> Iterator[str]:
    """A copy of the production database (CREATE DATABASE ... TEMPLATE), as a rehearsal restores one."""
    name = f"t_copy_{uuid.uuid4().hex[:10]}"
    with connection(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(production.url.rsplit("/", 1)[1])))
    try:
        yield with_database(server_url, name)
    finally:
        drop_database(server_url, name)


@pytest.fixture(scope="module")
def pg15() -> Iterator[EmbeddedServer]:
    """Debian's PostgreSQL 15 (no EXPLAIN GENERIC_PLAN), without pg_stat_statements preloaded."""
    server = start_test_server(PG15_BIN, shared_preload_libraries="''")
    try:
        yield server
    finally:
        stop_test_server(server)


def test_recorded_statements_are_the_applications_with_role_and_search_path(production: Production) -> None:
    with connection(production.url) as conn:
        recorded = recorded_statements(conn, exclude_roles=[production.excluded])
    assert recorded.note == ""
    texts = [s.query for s in recorded.statements]
    email = _find(recorded, "WHERE email = $1")
    assert email.role == "postgres" and email.calls == 20 and email.search_path == '"postgres", public'
    for fragment in ("WHERE name = $1", "UPDATE app.users SET name = $1", "INSERT INTO app.users (id",
                     "FROM scratch WHERE x = $1"):
        _find(recorded, fragment)
    assert _find(recorded, "FROM users WHERE id = $1").role == production.app
    assert _find(recorded, "FROM users WHERE id = $1").search_path == "app"
    assert _find(recorded, "BETWEEN $1 AND $2").search_path == f'"{production.dollar_user}", app'
    assert not [t for t in texts if "dbops:" in t or "pg_class" in t or "flyway_schema_history" in t
                or "VACUUM" in t or "pg_stat_statements" in t or "CREATE" in t or "$1::int" in t], texts
    assert not [s for s in recorded.statements if s.role in (production.excluded, production.loadtest)]
    assert not [t for t in texts if "id < $1" in t]  # run only by the excluded and the load test role

    with connection(production.url) as conn:
        top = recorded_statements(conn, limit=1, exclude_roles=[production.excluded])
        unexcluded = recorded_statements(conn)
    assert [s.query for s in top.statements] == [email.query]  # most called
    assert [s.role for s in unexcluded.statements if "id < $1" in s.query] == [production.excluded]


def test_migrations_break_slow_down_or_leave_unjudged_the_recorded_statements(production: Production,
                                                                              copy_of: str) -> None:
    with connection(production.url) as conn:
        recorded = recorded_statements(conn, exclude_roles=[production.excluded])
    with connection(copy_of) as conn:
        path = conn.execute("SHOW search_path").fetchone()[0]  # type: ignore[index]
        before = plan_statements(conn, recorded.statements)
        conn.execute("ALTER TABLE app.users RENAME COLUMN name TO full_name")
        conn.execute("DROP INDEX app.users_email_idx")
        after = plan_statements(conn, recorded.statements)
        # Planned only, each in a transaction rolled back: nothing inserted (production's one row), nothing left set.
        assert conn.execute("SELECT count(*) FROM app.users").fetchone()[0] == ROWS + 1  # type: ignore[index]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SHOW search_path").fetchone()[0] == path  # type: ignore[index]
    assert set(before) == set(after) == {s.key for s in recorded.statements}

    replay = compare(recorded, before, after)
    broken = {b.statement.query: b.error for b in replay.broken}
    assert sorted(broken) == sorted([_find(recorded, "WHERE name = $1").query,
                                     _find(recorded, "SET name = $1").query,
                                     _find(recorded, "BETWEEN $1 AND $2").query])
    for error in broken.values():
        assert 'column "name"' in error and "42703" in error, error

    email = _find(recorded, "WHERE email = $1")
    assert [r.statement for r in replay.regressions] == [email]
    regression = replay.regressions[0]
    assert "users_email_idx on app.users" in regression.before.summary, regression.before.summary
    assert "Seq Scan on app.users" in regression.after.summary, regression.after.summary
    assert regression.ratio > 2 and regression.after.cost > 2 * regression.before.cost  # type: ignore[operator]

    # A temp table of production's session, and a seed whose generic plan cannot type its parameters.
    reasons = {n.statement.query: n.reason for n in replay.not_judged}
    assert sorted(reasons) == sorted([_find(recorded, "FROM scratch").query, _find(recorded, "generate_series").query])
    assert 'relation "scratch" does not exist (SQLSTATE 42P01)' in reasons[_find(recorded, "FROM scratch").query]
    # The role's own search_path found app.users for the unqualified name, before and after.
    unqualified = _find(recorded, "FROM users WHERE id = $1")
    assert "app.users" in before[unqualified.key].summary and after[unqualified.key].error is None
    assert before[_find(recorded, "INSERT INTO app.users (id").key].summary.startswith("Insert on app.users")
    assert replay.planned == len(recorded.statements) - 2 and not replay.nothing_checked

    lines = replay.lines()
    assert lines[0].startswith(f"production statements: {replay.planned} planned")
    assert sum(line.startswith("BROKEN") for line in lines) == 3
    assert any(line.startswith("COSTLIER") and "users_email_idx" in line for line in lines)
    markdown = replay.markdown()
    assert "| broken statement |" in markdown and "| costlier statement |" in markdown
    assert "| not judged |" in markdown and "scratch" in markdown

    # The same plans on both sides: nothing to report.
    same = compare(recorded, before, before)
    assert not same.broken and not same.regressions and len(same.not_judged) == 2


def test_no_pg_stat_statements_gives_a_note(fresh_db: str, pg15: EmbeddedServer) -> None:
    with connection(fresh_db) as conn:  # the library is preloaded, the extension not created here
        recorded = recorded_statements(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert recorded.statements == [] and "CREATE EXTENSION pg_stat_statements" in recorded.note
    replay = compare(recorded, {}, {})
    assert replay.nothing_checked and replay.note == recorded.note
    assert "nothing replayed" in replay.lines()[0] and recorded.note in replay.markdown()

    with connection(pg15.url()) as conn:  # created, but the library is not loaded
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        unloaded = recorded_statements(conn)
    assert unloaded.statements == [] and "not loaded" in unloaded.note and "shared_preload_libraries" in unloaded.note


def test_generic_plans_before_postgresql_16(pg15: EmbeddedServer) -> None:
    with connection(pg15.url()) as conn:
        conn.execute("DROP SCHEMA IF EXISTS s15 CASCADE")
        conn.execute("CREATE SCHEMA s15")
        conn.execute("CREATE TABLE s15.t (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO s15.t SELECT g, 'n' || g FROM generate_series(1, 10000) AS g")
        conn.execute("ANALYZE s15.t")
        statements = [
            RecordedStatement("1", "SELECT name FROM t WHERE id = $1 AND name <> $2", 5, 1.0, "postgres", "s15"),
            RecordedStatement("2", "SELECT nope FROM t WHERE id = $1", 1, 1.0, "postgres", "s15"),
            RecordedStatement("3", "INSERT INTO t (id, name) VALUES ($1, $2)", 1, 1.0, "postgres", "s15"),
            RecordedStatement("4", "SELECT count(*) FROM t", 1, 1.0, "postgres", "s15"),
            # pg_stat_statements' form of interval '1 day': planned as CAST($1 AS interval)
            RecordedStatement("5", "SELECT id FROM t WHERE id > $2 AND now() - interval $1 < now()", 1, 1.0,
                              "postgres", "s15"),
        ]
        plans = plan_statements(conn, statements)
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0  # type: ignore[index]
        assert conn.execute("SELECT count(*) FROM s15.t").fetchone()[0] == 10000  # type: ignore[index]
        conn.execute("DROP SCHEMA s15 CASCADE")
    assert plans["1/postgres"].error is None and plans["1/postgres"].cost is not None
    assert plans["1/postgres"].summary.startswith("Index Scan using t_pkey on s15.t; cost ")
    assert plans["2/postgres"].cost is None
    assert re.match(r'column "nope" does not exist \(SQLSTATE 42703\)$', plans["2/postgres"].error or "")
    assert plans["3/postgres"].summary.startswith("Insert on s15.t")
    assert plans["4/postgres"].summary.startswith("Aggregate -> Seq Scan on s15.t")
    assert plans["5/postgres"].error is None and "s15.t" in plans["5/postgres"].summary
    replay = compare(Recorded(statements), plans, {**plans, "4/postgres": Plan(None, "", "gone (SQLSTATE 42P01)")})
    assert [b.statement.queryid for b in replay.broken] == ["4"] and replay.planned == 4


def _workload_statements(schema: ForeignSchema) -> list[str]:
    """The team's pgbench scripts as SQL with psycopg placeholders (each pgbench variable becomes %s)."""
    out = []
    for script in sorted(schema.workloads.glob("*.sql")):
        body = " ".join(line for line in script.read_text().splitlines()
                        if line.strip() and not line.lstrip().startswith(("--", "\\")))
        out += [re.sub(r"(?<![:\w]):[A-Za-z_]\w*", "%s", part).strip() for part in body.split(";") if part.strip()]
    return out


def test_team_databases_record_and_plan(foreign_db: tuple[ForeignSchema, str]) -> None:
    schema, url = foreign_db
    workload = _workload_statements(schema)
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for _ in range(3):
            for text in workload:
                conn.execute(text, [1] * text.count("%s"))  # type: ignore[arg-type]
        recorded = recorded_statements(conn)
        plans = plan_statements(conn, recorded.statements)
        generic = conn.info.server_version >= 160000
    assert recorded.note == ""
    partitioned = next(iter(schema.partitioned))
    ran = [s for s in recorded.statements if partitioned in s.query and s.calls >= 3]
    assert len(ran) >= len(workload), [s.query for s in recorded.statements]
    planned = [s for s in ran if plans[s.key].error is None]
    assert planned, [(s.query, plans[s.key]) for s in ran]
    for stmt in planned:
        # Before 16 (EXPLAIN EXECUTE with NULLs) a partitioned table's partitions can all be pruned at executor start.
        summary = plans[stmt.key].summary
        assert plans[stmt.key].cost and (partitioned.split(".")[1] in summary
                                         or not generic and "partitions pruned at start" in summary), plans[stmt.key]
    for stmt in ran:  # a constant's type is lost in pg_stat_statements' $n: only a parameter typing error is allowed
        assert stmt in planned or re.search(r"SQLSTATE 42(883|725|P18|804)", plans[stmt.key].error or ""), (
            stmt.query, plans[stmt.key])
    replay = compare(recorded, plans, plans)
    assert replay.planned >= len(planned) and not replay.broken and not replay.regressions

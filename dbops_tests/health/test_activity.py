"""Session and server activity figures (dbops.health.activity), each planted on a real PostgreSQL: a long query, a
blocked session and its blocker, the oldest xmin held by a snapshot, a prepared transaction and a replication slot,
an inactive slot retaining WAL, a failing archive_command, connection slots; each is named in its detail and clears.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbops.health.activity import ACTIVITY_METRICS, QUERY_CHARS, activity_figures
from dbops.health.figures import Figures
from dbops.health.metrics import METRICS, SAMPLE_TIMEOUTS, collect_health
from dbops.loadtest.role import loadtest_role
from dbops.pg.connect import connection, parse_url
from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import new_database, start_test_server, stop_test_server

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
# The embedded PostgreSQL 18 and Debian's 15: the queries differ by version (reserved_connections is 16+).
VERSIONS = [pytest.param(None, id="pg18"), pytest.param(PG15_BIN, id="pg15")]


def sample(url: str, long_query_seconds: float = 60) -> Figures:
    """One look, as collect_health takes it: an autocommit session with the sampler's timeouts."""
    with connection(url, autocommit=True) as conn:
        conn.execute(SAMPLE_TIMEOUTS)
        return activity_figures(conn, long_query_seconds)


def wait_for(probe: Callable[[], Figures], ok: Callable[[Figures], bool], timeout: float = 20) -> Figures:
    """Probe until ``ok`` holds or ``timeout`` passes; the last figures either way (the test asserts on them)."""
    deadline = time.monotonic() + timeout
    while True:
        figures = probe()
        if ok(figures) or time.monotonic() > deadline:
            return figures
        time.sleep(0.1)


@contextmanager
def in_thread(url: str, statement: str, **connect: Any) -> Iterator[dict[str, Any]]:
    """Run ``statement`` on its own autocommit session in a thread; yields {"pid": ...} once the session is open,
    and waits for the thread at the end (the error it ended with, if any, under "error")."""
    state: dict[str, Any] = {}
    opened = threading.Event()

    def run() -> None:
        try:
            with psycopg.connect(url, autocommit=True, **connect) as conn:
                state["pid"] = conn.info.backend_pid
                opened.set()
                conn.execute(statement)
        except Exception as exc:  # noqa: BLE001 - kept for the test
            state["error"] = exc
        finally:
            opened.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert opened.wait(20), "the session did not open"
        yield state
    finally:
        thread.join(30)
        assert not thread.is_alive(), "the statement's thread did not end"


def consume_xids(url: str, count: int) -> None:
    """``count`` transactions that each take a transaction ID (and commit)."""
    with connection(url, autocommit=True) as conn:
        for _ in range(count):
            conn.execute("SELECT txid_current()")


@contextmanager
def own_server(bin_dir: Path | None = None, **settings: str) -> Iterator[tuple[EmbeddedServer, str]]:
    """A server of the test's own with ``settings``, and the URL of a new database on it."""
    server = start_test_server(bin_dir, **settings)
    try:
        yield server, new_database(server.url("postgres"))
    finally:
        stop_test_server(server)


def test_every_activity_figure_has_a_meaning_and_is_a_health_metric() -> None:
    assert len(ACTIVITY_METRICS) >= 12 and all(text.strip() for text in ACTIVITY_METRICS.values())
    assert set(ACTIVITY_METRICS) <= set(METRICS)


def test_a_long_query_is_timed_named_and_clears(fresh_db: str) -> None:
    # A password literal and a long tail in the text: the detail masks the one and cuts the other.
    statement = ("SELECT pg_sleep(60) /* ALTER ROLE app PASSWORD 'planted-s3cret' */, '" + "x" * 400 + "' AS pad")
    with in_thread(fresh_db, statement, application_name="dbops-test-sleeper") as sleeper:
        figures = wait_for(lambda: sample(fresh_db, long_query_seconds=1),
                           lambda f: f.metrics["long_running_queries"] >= 1)
        with connection(fresh_db) as conn:
            role = conn.execute("SELECT current_user").fetchone()[0]
            conn.execute("SELECT pg_cancel_backend(%s)", [sleeper["pid"]])
    assert isinstance(sleeper.get("error"), psycopg.errors.QueryCanceled)
    assert figures.metrics["longest_query_seconds"] > 1
    assert figures.metrics["long_running_queries"] == 1
    detail = figures.details["long_running_queries"]
    assert detail == figures.details["longest_query_seconds"]
    assert detail.startswith(f"pid {sleeper['pid']} (role {role}, application dbops-test-sleeper) running ")
    assert "SELECT pg_sleep(60)" in detail and "planted-s3cret" not in detail and "PASSWORD '***'" in detail
    assert len(detail) < QUERY_CHARS + 120 and detail.endswith("...")

    after = sample(fresh_db, long_query_seconds=1)
    assert after.metrics["longest_query_seconds"] == 0 and after.metrics["long_running_queries"] == 0
    assert "longest_query_seconds" not in after.details and "long_running_queries" not in after.details


def test_a_blocked_session_names_itself_and_its_blocker_and_clears(fresh_db: str) -> None:
    with connection(fresh_db) as admin:
        admin.execute("CREATE TABLE account (id int PRIMARY KEY, balance int)")
        admin.execute("INSERT INTO account VALUES (1, 0)")
    parts = parse_url(fresh_db)
    with loadtest_role(fresh_db, member_of="pg_monitor") as role:
        with connection(fresh_db) as admin:
            admin.execute(sql.SQL("GRANT ALL ON account TO {}").format(sql.Identifier(role.name)))
        holder = psycopg.connect(host=parts.host, port=parts.port, dbname=parts.database, user=role.name,
                                 password=role.password, application_name="dbops-test-holder")
        try:
            holder.execute("UPDATE account SET balance = 1 WHERE id = 1")  # B: the row lock, transaction left open
            with in_thread(fresh_db, "UPDATE account SET balance = 2 WHERE id = 1") as waiter:  # A waits for B
                figures = wait_for(lambda: sample(fresh_db), lambda f: f.metrics["blocked_sessions"] >= 1)
                time.sleep(0.2)
                later = sample(fresh_db)
                holder.commit()
            assert "error" not in waiter
            b_pid = holder.info.backend_pid
        finally:
            holder.close()
            with connection(fresh_db) as admin:  # the role is dropped next: nothing may depend on it
                admin.execute(sql.SQL("REVOKE ALL ON account FROM {}").format(sql.Identifier(role.name)))
    assert figures.metrics["blocked_sessions"] == 1
    assert 0 < figures.metrics["longest_blocked_seconds"] < later.metrics["longest_blocked_seconds"]
    detail = figures.details["blocked_sessions"]
    assert detail == figures.details["longest_blocked_seconds"]
    assert detail.startswith(f"pid {waiter['pid']} (role ")
    assert "on UPDATE account SET balance = 2 WHERE id = 1 blocked by " in detail
    assert (f"blocked by pid {b_pid} (role {role.name}, idle in transaction for " in detail
            and detail.endswith("): UPDATE account SET balance = 1 WHERE id = 1"))

    after = sample(fresh_db)
    assert after.metrics["blocked_sessions"] == 0 and after.metrics["longest_blocked_seconds"] == 0
    assert "blocked_sessions" not in after.details


def test_oldest_xmin_held_by_a_repeatable_read_snapshot(fresh_db: str) -> None:
    assert sample(fresh_db).metrics["oldest_xmin_age"] == 0
    holder = psycopg.connect(fresh_db)
    try:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM pg_class")  # the snapshot, kept to the end of the transaction
        consume_xids(fresh_db, 12)
        figures = sample(fresh_db)
        holder.rollback()
        pid = holder.info.backend_pid
    finally:
        holder.close()
    assert figures.metrics["oldest_xmin_age"] >= 12
    detail = figures.details["oldest_xmin_age"]
    assert detail.startswith(f"session pid {pid} (role ") and "idle in transaction since " in detail
    assert "SELECT count(*) FROM pg_class" in detail

    after = sample(fresh_db)
    assert after.metrics["oldest_xmin_age"] == 0 and "oldest_xmin_age" not in after.details


@pytest.mark.parametrize("bin_dir", VERSIONS)
def test_oldest_xmin_held_by_a_prepared_transaction_then_by_a_logical_slot(bin_dir: Path | None) -> None:
    gid, slot = f"dbops-test-{uuid.uuid4().hex[:6]}", "dbops_test_xmin_slot"
    with own_server(bin_dir, max_prepared_transactions="5", wal_level="logical") as (server, url):
        with connection(url) as conn:
            owner = conn.execute("SELECT current_user").fetchone()[0]
            conn.execute("CREATE TABLE ledger (id int)")
            conn.execute(sql.SQL("BEGIN; INSERT INTO ledger VALUES (1); PREPARE TRANSACTION {}").format(
                sql.Literal(gid)))
        try:
            consume_xids(url, 12)
            prepared = sample(url)
        finally:
            with connection(url) as conn:
                conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
        cleared = sample(url)

        with connection(url) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
        try:
            consume_xids(url, 12)
            held = sample(url)
        finally:
            with connection(url) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        dropped = sample(url)

    assert prepared.metrics["oldest_xmin_age"] >= 12
    assert prepared.details["oldest_xmin_age"].startswith(
        f"prepared transaction '{gid}' (owner {owner}, prepared at ")
    assert cleared.metrics["oldest_xmin_age"] == 0 and "oldest_xmin_age" not in cleared.details
    assert held.metrics["oldest_xmin_age"] >= 12
    assert held.details["oldest_xmin_age"].startswith(f"replication slot '{slot}' (logical, inactive)")
    assert held.metrics["inactive_replication_slots"] == 1
    assert dropped.metrics["oldest_xmin_age"] == 0 and dropped.metrics["inactive_replication_slots"] == 0


def test_an_inactive_physical_slot_retains_growing_wal_until_dropped(fresh_db: str) -> None:
    slot = f"dbops_test_{uuid.uuid4().hex[:8]}"
    with connection(fresh_db) as conn:
        assert conn.execute("SHOW wal_level").fetchone()[0] in ("replica", "logical")
        conn.execute("CREATE TABLE filler (id int, pad text)")
    before = sample(fresh_db)
    assert before.metrics["inactive_replication_slots"] == 0 and before.metrics["replication_slot_retained_bytes"] == 0
    with connection(fresh_db) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", [slot])
    try:
        first = sample(fresh_db)
        with connection(fresh_db) as conn:
            conn.execute("INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g")
            conn.execute("SELECT pg_switch_wal()")
        second = sample(fresh_db)
    finally:
        with connection(fresh_db) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
    after = sample(fresh_db)

    assert first.metrics["inactive_replication_slots"] == 1
    assert first.details["inactive_replication_slots"].startswith(f"replication slot '{slot}' (physical, inactive")
    assert 0 < first.metrics["replication_slot_retained_bytes"] < second.metrics["replication_slot_retained_bytes"]
    assert second.metrics["replication_slot_retained_bytes"] > 1_000_000  # 5000 rows of 200 bytes and a switch
    assert second.details["replication_slot_retained_bytes"].startswith(f"replication slot '{slot}' (")
    assert after.metrics["inactive_replication_slots"] == 0 and after.metrics["replication_slot_retained_bytes"] == 0
    assert "inactive_replication_slots" not in after.details
    assert "replication_slot_retained_bytes" not in after.details


@pytest.mark.parametrize("bin_dir", VERSIONS)
def test_a_failing_archive_command_counts_failures_and_lags_until_it_archives(bin_dir: Path | None) -> None:
    with own_server(bin_dir, archive_mode="on", archive_command="'false'") as (server, url):
        first = collect_health(url, host=False)
        assert first.error is None and first.metrics["archive_lag_seconds"] == 0
        assert first.counters["archive_failed_count"] == 0
        switched = []
        with connection(url) as conn:
            conn.execute("CREATE TABLE wal_maker (id int)")
            for n in range(2):
                conn.execute("INSERT INTO wal_maker VALUES (%s)", [n])
                switched.append(conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])
        failing = wait_for(lambda: sample(url), lambda f: f.counters["archive_failed_count"] > 0)
        second = collect_health(url, first.state(), host=False)
        with connection(url) as conn:
            conn.execute("ALTER SYSTEM SET archive_command = 'true'")
            conn.execute("SELECT pg_reload_conf()")
        archived = wait_for(lambda: sample(url), lambda f: f.metrics["archive_lag_seconds"] == 0, timeout=60)
        with connection(url) as conn:
            last_archived = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]

    assert failing.counters["archive_failed_count"] > 0
    assert failing.metrics["archive_lag_seconds"] > 0
    assert failing.details["archive_failures_per_minute"].startswith(f"archive_command failed on {switched[0]} at ")
    assert failing.details["archive_lag_seconds"].startswith("nothing archived since ")
    assert second.metrics["archive_failures_per_minute"] > 0 and second.metrics["archive_lag_seconds"] > 0
    assert switched[0] in second.details["archive_failures_per_minute"]
    assert archived.metrics["archive_lag_seconds"] == 0 and "archive_lag_seconds" not in archived.details
    assert last_archived == switched[1]


def test_no_archive_lag_without_archiving(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
    figures = sample(fresh_db)
    assert "archive_lag_seconds" not in figures.metrics and "archive_failed_count" in figures.counters


@pytest.mark.parametrize("bin_dir", VERSIONS)
def test_held_sessions_lower_the_connection_slots_left(bin_dir: Path | None) -> None:
    settings = {"max_connections": "25"} if bin_dir else {"max_connections": "25", "reserved_connections": "2"}
    reserved = 3 if bin_dir else 5  # superuser_reserved_connections (3), and reserved_connections on 16+
    with own_server(bin_dir, **settings) as (server, url):
        before = sample(url)
        held = [psycopg.connect(url, application_name="dbops-test-held") for _ in range(10)]
        try:
            during = sample(url)
        finally:
            for conn in held:
                conn.close()
        after = wait_for(lambda: sample(url),
                         lambda f: f.metrics["connections_available"] == before.metrics["connections_available"])
    assert before.metrics["connections_reserved"] == reserved
    assert before.metrics["connections_available"] == 25 - reserved  # the sampling session is not counted
    assert during.metrics["connections_available"] == before.metrics["connections_available"] - 10
    assert "application dbops-test-held (10 sessions)" in during.details["connections_available"]
    assert after.metrics["connections_available"] == before.metrics["connections_available"]


def test_temporary_files_are_counted_and_the_statement_writing_them_named(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    before = sample(fresh_db)
    with connection(fresh_db) as conn:
        conn.execute("SET work_mem = '64kB'")
        conn.execute("SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC").fetchone()
    after = wait_for(lambda: sample(fresh_db), lambda f: f.counters["temp_files"] > before.counters["temp_files"])
    assert "temp_files_per_minute" not in before.details
    assert after.counters["temp_files"] > before.counters["temp_files"]
    assert "most temporary blocks written by: SELECT g FROM generate_series(" in after.details["temp_files_per_minute"]

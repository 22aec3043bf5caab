"""Each health condition planted on a real server while the two sensors tick as the daemon ticks them: the figure,
the failed check of ``database_health``, exactly one alert naming what is wrong, and, once cleared, one "resolved"
and the check passing again.

Each test judges one target of the shipped targets file with its ``for`` set to 0 (and, where the shipped threshold
needs days or gigabytes, a threshold a test can cross), so what is tested is the figure, the check, the alert and its
runbook link, not the waiting.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbops.health.metrics import METRICS, collect_health
from dbops.health.runbooks import alert_name, runbook_path
from dbops.health.sinks import JsonWebhookSink
from dbops.health.targets import load_targets, parse_targets
from dbops.loadtest.pgbouncer import PgBouncer
from dbops.loadtest.role import loadtest_role
from dbops.pg.connect import drop_database, parse_url
from dbops_tests.conftest import make_test_dir, new_database, start_test_server, stop_test_server
from dbops_tests.health.conftest import Receiver
from dbops_tests.health.test_spike import Ticker

SHIPPED = load_targets(Path(__file__).resolve().parents[2] / "monitoring" / "targets.yml")


def one_target(metric: str, threshold: float | None = None) -> Any:
    """The shipped target of ``metric``, its ``for`` 0 (and its threshold ``threshold`` when given)."""
    shipped = next(t for t in SHIPPED.metrics if t.metric == metric)
    return parse_targets({"defaults": {"cooldown": "10m"}, "metrics": [{
        "metric": metric, "op": shipped.op, "threshold": shipped.threshold if threshold is None else threshold,
        "for": 0, "severity": shipped.severity, "summary": shipped.summary}]})


@dataclass
class Outcome:
    ticker: Ticker
    receiver: Receiver
    metric: str

    @property
    def values(self) -> list[float | None]:
        return [o.get(self.metric) for o in self.ticker.observations]

    def detail(self) -> str:
        return str(self.ticker.observations[-1].get(f"{self.metric}_detail", ""))

    def check_outcomes(self) -> list[bool]:
        """The check's recorded outcomes once measured (a rate is "not measured", a WARN, on the first tick)."""
        mine = [e for e in self.ticker.evaluations if e.check_name.startswith(self.metric)]
        for e in mine:
            if "reason" in e.metadata:
                assert not e.passed and e.severity.value == "WARN", e
        return [e.passed for e in mine if "reason" not in e.metadata]


def planted(url: str, receiver: Receiver, metric: str, plant: Callable[[], Any], *, threshold: float | None = None,
            who: Callable[[Any], list[str]] = lambda _: [], pooler_url: str | None = None,
            ticks: int = 1, steady: bool = True) -> Outcome:
    """Tick once healthy, plant (a context manager: the condition lasts while it is open), tick, clear, tick; assert
    the figure, the check, one alert naming ``who`` with its runbook, and one resolve. ``steady``: the condition
    holds on the next tick too (not a rate of events that may pause), which must not alert again."""
    targets = one_target(metric, threshold)
    target = targets.metrics[0]
    ticker = Ticker(url, [JsonWebhookSink(receiver.url)], targets=targets, pooler_url=pooler_url)
    out = Outcome(ticker, receiver, metric)
    try:
        ticker.tick()
        if out.values[-1] is None:  # a rate: the second sample has it
            time.sleep(1)
            ticker.tick()
        healthy = out.values[-1]
        assert healthy is not None and not target.missed(healthy), f"{metric} = {healthy} before planting"
        with plant() as planted_state:
            for _ in range(ticks):
                ticker.tick()
            value = out.values[-1]
            assert value is not None and target.missed(value), f"{metric} = {value} with the condition planted"
            names = who(planted_state)
            for name in names:
                assert name in out.detail(), (name, out.detail())
            alerts = receiver.alerts()
            assert [(a["key"], a["status"]) for a in alerts] == [(target.key, "firing")], alerts
            for name in names:
                assert name in alerts[0]["detail"], (name, alerts[0]["detail"])
            assert alerts[0]["runbook"].endswith(f"/{alert_name(target.key, targets)}.md")
            assert runbook_path(alert_name(target.key, targets)).exists()
            if steady:
                ticker.tick()  # still planted: no second alert
                assert len(receiver.alerts()) == 1
        ticker.tick()
        cleared = out.values[-1]
        assert cleared is not None and not target.missed(cleared), f"{metric} = {cleared} after clearing"
        assert [(a["key"], a["status"]) for a in receiver.alerts()] == [(target.key, "firing"),
                                                                       (target.key, "resolved")]
        assert out.check_outcomes() == [True, False, True], out.check_outcomes()
        return out
    finally:
        ticker.instance.dispose()


def run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def toggled(url: str, plant: Sequence[str], clear: Sequence[str]) -> Callable[[], Any]:
    """A condition planted by ``plant``'s statements and cleared by ``clear``'s."""
    @contextmanager
    def condition() -> Iterator[None]:
        run(url, *plant)
        yield
        run(url, *clear)

    return condition


@contextmanager
def session(url: str, *statements: str, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    with psycopg.connect(url, autocommit=autocommit) as conn:
        for statement in statements:
            conn.execute(statement)
        yield conn


@contextmanager
def in_thread(url: str, statement: str) -> Iterator[threading.Thread]:
    """``statement`` running in a session of its own until it ends (the block waits for it)."""
    started = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                started.set()
                conn.execute(statement)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield thread
    finally:
        thread.join(60)
    assert not errors, errors


def pid_of(url: str, pattern: str) -> int:
    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                               (pattern,)).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.05)
    raise AssertionError(f"no session runs {pattern!r}")


def test_an_invalid_index(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE accounts (id int, email text)", "INSERT INTO accounts VALUES (1, 'a@x'), (2, 'a@x')")

    @contextmanager
    def plant() -> Iterator[None]:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("CREATE UNIQUE INDEX CONCURRENTLY accounts_email_key ON accounts (email)")
        yield
        run(fresh_db, "DROP INDEX accounts_email_key")

    planted(fresh_db, receiver, "invalid_indexes", plant, who=lambda _: ["accounts_email_key"])


def test_a_query_running_for_minutes(fresh_db: str, receiver: Receiver) -> None:
    @contextmanager
    def plant() -> Iterator[int]:
        with in_thread(fresh_db, "SELECT pg_sleep(4) /* the report of the quarter */"):
            pid = pid_of(fresh_db, "SELECT pg_sleep(4)%")
            time.sleep(2.2)
            yield pid

    planted(fresh_db, receiver, "longest_query_seconds", plant, threshold=2, who=lambda pid: [f"pid {pid}"])


def test_a_session_blocked_by_another_sessions_lock(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE stock (sku int PRIMARY KEY, qty int); INSERT INTO stock VALUES (1, 10)")

    @contextmanager
    def plant() -> Iterator[tuple[int, int]]:
        with session(fresh_db, "UPDATE stock SET qty = qty - 1 WHERE sku = 1") as blocker:
            blocker_pid = blocker.info.backend_pid
            with in_thread(fresh_db, "UPDATE stock SET qty = qty - 2 WHERE sku = 1"):
                waiter = pid_of(fresh_db, "UPDATE stock SET qty = qty - 2%")
                time.sleep(0.3)
                yield waiter, blocker_pid
                blocker.commit()

    planted(fresh_db, receiver, "blocked_sessions", plant,
            who=lambda pids: [f"pid {pids[0]}", f"pid {pids[1]}", "UPDATE stock SET qty = qty - 1"])


def forgotten_slot(url: str, slot: str) -> Callable[[], Any]:
    """A physical replication slot nobody uses, reserving WAL from its creation on, while about 5 MB of WAL is
    written; dropped when cleared."""
    @contextmanager
    def condition() -> Iterator[None]:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
            conn.execute("CREATE TABLE wal_maker AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
        try:
            yield
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))

    return condition


def test_an_inactive_replication_slot(fresh_db: str, receiver: Receiver) -> None:
    planted(fresh_db, receiver, "inactive_replication_slots", forgotten_slot(fresh_db, "dbops_test_forgotten"),
            who=lambda _: ["dbops_test_forgotten"])


def test_wal_retained_by_a_slot(fresh_db: str, receiver: Receiver) -> None:
    # the shipped threshold is 1 GiB; here 1 MB
    planted(fresh_db, receiver, "replication_slot_retained_bytes", forgotten_slot(fresh_db, "dbops_test_retaining"),
            threshold=1_000_000, who=lambda _: ["dbops_test_retaining"])


def test_vacuum_held_back_by_an_old_snapshot(fresh_db: str, receiver: Receiver) -> None:
    @contextmanager
    def plant() -> Iterator[int]:
        with session(fresh_db, "BEGIN ISOLATION LEVEL REPEATABLE READ", "SELECT count(*) FROM pg_class") as holder:
            with psycopg.connect(fresh_db, autocommit=True) as burner:
                for _ in range(60):
                    burner.execute("SELECT txid_current()")
            yield holder.info.backend_pid
            holder.rollback()

    planted(fresh_db, receiver, "oldest_xmin_age", plant, threshold=50, who=lambda pid: [f"pid {pid}"])


def test_an_int4_serial_near_its_end(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE tickets (id serial PRIMARY KEY, note text)")
    plant = toggled(fresh_db, ["SELECT setval('tickets_id_seq', 2000000000)"],  # 93 % of int4, nothing of bigint
                    ["ALTER TABLE tickets ALTER COLUMN id TYPE bigint",
                     "ALTER SEQUENCE tickets_id_seq AS bigint MAXVALUE 9223372036854775807"])
    planted(fresh_db, receiver, "sequence_used_ratio_max", plant, who=lambda _: ["tickets_id_seq"])


def test_rows_in_a_default_partition(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE events (at date NOT NULL, v int) PARTITION BY RANGE (at)",
        "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        "CREATE TABLE events_default PARTITION OF events DEFAULT")
    plant = toggled(fresh_db, ["INSERT INTO events VALUES ('2027-03-01', 1)"], ["DELETE FROM events_default"])
    planted(fresh_db, receiver, "default_partition_rows", plant, who=lambda _: ["events_default"])


def test_dead_tuples_piling_up(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE counters (id int PRIMARY KEY, n int) WITH (autovacuum_enabled = off)",
        "INSERT INTO counters SELECT g, 0 FROM generate_series(1, 30000) g",
        "VACUUM ANALYZE counters")

    @contextmanager
    def plant() -> Iterator[None]:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("UPDATE counters SET n = n + 1")
            wait_for_stats(conn, "counters", lambda dead: dead >= 30000)
        yield
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("VACUUM counters")
            wait_for_stats(conn, "counters", lambda dead: dead == 0)

    planted(fresh_db, receiver, "dead_tuple_ratio_max", plant, who=lambda _: ["counters"])


def wait_for_stats(conn: psycopg.Connection, table: str, done: Callable[[int], bool]) -> None:
    """The cumulative statistics are flushed at the end of a transaction, at most once a second: wait for them."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()
        if row and done(int(row[0])):
            return
        time.sleep(0.2)
    raise AssertionError(f"the statistics of {table} did not arrive")


def test_connection_slots_running_out(receiver: Receiver) -> None:
    server = start_test_server(max_connections="25")
    url = new_database(server.url("postgres"))
    try:
        @contextmanager
        def plant() -> Iterator[None]:
            sessions = [psycopg.connect(url) for _ in range(19)]  # of 22 slots (3 reserved for superusers)
            try:
                yield
            finally:
                for conn in sessions:
                    conn.close()

        planted(url, receiver, "connections_available", plant)
    finally:
        drop_database(server.url("postgres"), url.rsplit("/", 1)[1])
        stop_test_server(server)


@dataclass
class Pooler:
    dbname: str
    client: str  # a client's URL through PgBouncer
    admin: str  # its admin console

    @contextmanager
    def waiting_client(self) -> Iterator[None]:
        """One client holds the pool's only server connection in a transaction, a second one waits 1.5 s for it."""
        with session(self.client, "SELECT 1") as holder:
            with in_thread(self.client, "SELECT 2"):
                time.sleep(1.5)
                yield
                holder.rollback()


@pytest.fixture
def pooler(fresh_db: str) -> Iterator[Pooler]:
    """Debian's PgBouncer in transaction mode with a pool of one server connection in front of ``fresh_db``."""
    parts = parse_url(fresh_db)
    dbname = fresh_db.rsplit("/", 1)[1]
    work = make_test_dir("pgbouncer")  # directly under /tmp: PgBouncer's own user must traverse it
    try:
        with loadtest_role(fresh_db, member_of="pg_monitor", grant_connect=True) as role, PgBouncer(
                parts.host or "127.0.0.1", parts.port or 5432, dbname, role.name, role.verifier, pool_size=1,
                work_dir=work) as bouncer:
            base = f"postgresql://{role.name}:{role.password}@127.0.0.1:{bouncer.port}"
            yield Pooler(dbname, f"{base}/{dbname}?sslmode=disable", f"{base}/pgbouncer?sslmode=disable")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_clients_waiting_in_pgbouncer(fresh_db: str, pooler: Pooler, receiver: Receiver) -> None:
    planted(fresh_db, receiver, "pooler_clients_waiting", pooler.waiting_client, pooler_url=pooler.admin,
            who=lambda _: [pooler.dbname])


def test_a_client_waiting_long_in_pgbouncer(fresh_db: str, pooler: Pooler, receiver: Receiver) -> None:
    # the shipped threshold is 1 s; the waiting client has waited 1.5 s
    planted(fresh_db, receiver, "pooler_max_wait_seconds", pooler.waiting_client, pooler_url=pooler.admin,
            who=lambda _: [pooler.dbname])


@pytest.fixture
def archiving_server() -> Iterator[str]:
    """A database on a server of its own whose archive_command fails (``false``)."""
    server = start_test_server(archive_mode="on", archive_command="'false'", wal_level="replica")
    url = new_database(server.url("postgres"))
    try:
        yield url
    finally:
        drop_database(server.url("postgres"), url.rsplit("/", 1)[1])
        stop_test_server(server)


@contextmanager
def failing_archiver(url: str) -> Iterator[None]:
    """A finished WAL segment the archiver fails to archive, until archive_command is 'true' again."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
        conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 20
        while conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] == 0:
            assert time.monotonic() < deadline, "the archiver never tried"
            time.sleep(0.2)
    time.sleep(1.2)
    yield
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET archive_command = 'true'")
        conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 30
        while conn.execute("SELECT last_archived_wal IS NULL FROM pg_stat_archiver").fetchone()[0]:
            assert time.monotonic() < deadline, "the archiver never caught up"
            time.sleep(0.2)
    time.sleep(1.1)  # the failures-per-minute rate is over the time since the previous sample


def test_archiving_failing(archiving_server: str, receiver: Receiver) -> None:
    # a rate of failures: the archiver pauses between its attempts, so the next tick may see none (not 'steady')
    planted(archiving_server, receiver, "archive_failures_per_minute", lambda: failing_archiver(archiving_server),
            who=lambda _: ["000000010000000000000001"], steady=False)


def test_archiving_behind(archiving_server: str, receiver: Receiver) -> None:
    # the shipped threshold is 5 minutes (RPO); here 1 s, crossed while the segment waits
    planted(archiving_server, receiver, "archive_lag_seconds", lambda: failing_archiver(archiving_server),
            threshold=1)


def test_a_table_not_vacuumed(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE ledger (id int) WITH (autovacuum_enabled = off)",
        "INSERT INTO ledger SELECT generate_series(1, 100)",
        "VACUUM ANALYZE ledger")

    @contextmanager
    def plant() -> Iterator[None]:
        time.sleep(2.5)  # the shipped threshold is 10 days; here 2 s
        yield
        run(fresh_db, "VACUUM ledger")

    planted(fresh_db, receiver, "vacuum_age_seconds_max", plant, threshold=2, who=lambda _: ["ledger"])


def test_every_figure_is_documented_and_every_target_names_a_figure() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "health.md").read_text()
    assert [name for name in METRICS if f"| `{name}` |" not in doc] == []
    assert [t.metric for t in SHIPPED.metrics if t.metric not in METRICS and t.metric != "backup_age_seconds"] == []


def test_a_duplicate_index(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE orders (id int PRIMARY KEY, customer int, placed date)",
        "CREATE INDEX orders_customer_placed ON orders (customer, placed)")
    plant = toggled(fresh_db, ["CREATE INDEX orders_customer ON orders (customer)"], ["DROP INDEX orders_customer"])
    planted(fresh_db, receiver, "duplicate_indexes", plant, who=lambda _: ["orders_customer covered by"])


def test_an_unused_index(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE notes (id int PRIMARY KEY, body text)")
    plant = toggled(fresh_db, ["CREATE INDEX notes_body ON notes (body)"], ["DROP INDEX notes_body"])
    planted(fresh_db, receiver, "unused_indexes", plant, who=lambda _: ["notes_body"])


def bloated_table(url: str) -> Callable[[], Any]:
    """A table of about 14 MB (and its 15 MB index) with 90 % of its rows deleted and analyzed, no VACUUM; cleared
    by VACUUM FULL."""
    run(url, "CREATE TABLE wide (id serial PRIMARY KEY, pad text) WITH (autovacuum_enabled = off)",
        "INSERT INTO wide (pad) SELECT repeat(md5(g::text), 6) || g FROM generate_series(1, 60000) g",
        "CREATE INDEX wide_pad ON wide (pad)",
        "ANALYZE wide")

    @contextmanager
    def plant() -> Iterator[None]:
        run(url, "DELETE FROM wide WHERE id % 10 <> 0", "ANALYZE wide")
        yield
        run(url, "VACUUM FULL wide", "ANALYZE wide")

    return plant


def test_a_bloated_table(fresh_db: str, receiver: Receiver) -> None:
    planted(fresh_db, receiver, "table_bloat_ratio_max", bloated_table(fresh_db), who=lambda _: ["public.wide"])


def test_a_bloated_index(fresh_db: str, receiver: Receiver) -> None:
    planted(fresh_db, receiver, "index_bloat_ratio_max", bloated_table(fresh_db), who=lambda _: ["public.wide_pad"])


def test_a_table_not_analyzed(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE audit_trail (id int) WITH (autovacuum_enabled = off)",
        "INSERT INTO audit_trail SELECT generate_series(1, 100)",
        "VACUUM ANALYZE audit_trail")

    @contextmanager
    def plant() -> Iterator[None]:
        time.sleep(2.5)  # the shipped threshold is 10 days; here 2 s
        yield
        run(fresh_db, "ANALYZE audit_trail")

    planted(fresh_db, receiver, "analyze_age_seconds_max", plant, threshold=2, who=lambda _: ["audit_trail"])


def test_temporary_files_written(fresh_db: str, receiver: Receiver) -> None:
    @contextmanager
    def plant() -> Iterator[None]:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("SET work_mem = '64kB'")
            for _ in range(3):
                conn.execute("SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC").fetchone()
        time.sleep(1.1)  # the statistics are flushed within a second
        yield
        time.sleep(1.1)

    # the shipped threshold is 10 a minute for 10 minutes; here any, a rate of events (not 'steady')
    planted(fresh_db, receiver, "temp_files_per_minute", plant, threshold=0, steady=False)


def test_a_table_near_transaction_id_wraparound(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE old_rows (id int) WITH (autovacuum_enabled = off)",
        "INSERT INTO old_rows VALUES (1)",
        "VACUUM FREEZE")

    @contextmanager
    def plant() -> Iterator[None]:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            for _ in range(1500):  # 1,500 transaction IDs older than its frozen rows
                conn.execute("SELECT txid_current()")
            conn.execute("VACUUM FREEZE")  # every table of the database frozen again...
            conn.execute("INSERT INTO old_rows VALUES (2)")
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            for _ in range(1500):
                conn.execute("SELECT txid_current()")
        yield
        run(fresh_db, "VACUUM FREEZE")

    # the shipped threshold is 10 million left; here 1,000 consumed since the tables were last frozen (which table
    # is the oldest, TOAST included, is tested in test_tables.py)
    planted(fresh_db, receiver, "table_wraparound_transactions_left", plant, threshold=2**31 - 1000,
            who=lambda _: [" age "])


def test_multixact_ids_consumed(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE shared_rows (id int PRIMARY KEY); INSERT INTO shared_rows VALUES (1)", "VACUUM FREEZE")
    left = collect_health(fresh_db).metrics["multixact_wraparound_left"]

    @contextmanager
    def plant() -> Iterator[None]:
        with session(fresh_db, "SELECT * FROM shared_rows FOR SHARE") as first:
            with session(fresh_db, "SELECT * FROM shared_rows FOR SHARE") as second:  # a multixact holds both
                second.commit()
            first.commit()
        yield
        run(fresh_db, "VACUUM FREEZE")

    # the shipped threshold is 10 million left; here the value before planting: one multixact is enough
    planted(fresh_db, receiver, "multixact_wraparound_left", plant, threshold=left - 0.5)


def test_anti_wraparound_vacuum_due(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE hot (id int) WITH (autovacuum_enabled = off)", "INSERT INTO hot VALUES (1)")
    plant = toggled(fresh_db, ["ALTER TABLE hot SET (autovacuum_freeze_max_age = 100000)"],  # the lowest allowed
                    ["ALTER TABLE hot RESET (autovacuum_freeze_max_age)"])
    planted(fresh_db, receiver, "freeze_max_age_headroom", plant, who=lambda _: ["hot"])

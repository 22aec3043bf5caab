"""Planted conditions that need more than one session or a server of their own: a real streaming standby falling
behind its primary, a deadlock, checkpoints forced by requests rather than by time. Each is judged the way
test_planted.py judges the others: the figure, the check of ``database_health``, exactly one alert (and one resolve
when the condition can be cleared)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dbops.health.exporter import build_registry
from dbops.health.metrics import collect_health
from dbops.health.runbooks import alert_name, runbook_path
from dbops.health.sinks import JsonWebhookSink
from dbops.pg.server import EmbeddedServer, free_port
from dbops.private import write_private
from dbops.programs import run_command
from dbops_tests.conftest import TEST_SETTINGS, make_test_dir, new_database, start_test_server, stop_test_server
from dbops_tests.health.conftest import Receiver
from dbops_tests.health.test_planted import Outcome, one_target, planted, run, session
from dbops_tests.health.test_spike import Ticker

LAG_THRESHOLD = 0.5  # seconds; the shipped target is 5 s for 30 s
# The standby reports its positions every second (default 10 s), so the primary's replay_lag follows it closely.
STANDBY_SETTINGS = {**TEST_SETTINGS, "max_wal_senders": "5", "hot_standby": "on",
                    "wal_receiver_status_interval": "'1s'"}
LAG_SQL = "SELECT state, extract(epoch FROM replay_lag), replay_lsn >= pg_current_wal_lsn() FROM pg_stat_replication"


@contextmanager
def streaming_standby(primary: EmbeddedServer) -> Iterator[EmbeddedServer]:
    """A hot standby of ``primary``: ``pg_basebackup -R -X stream`` into a test directory, started by EmbeddedServer
    on a free port as the restore drill starts a restored data directory (adopt_data_dir, start); stopped and removed
    when the block ends."""
    standby = EmbeddedServer(make_test_dir("pg"), free_port(), None, dict(STANDBY_SETTINGS))
    try:
        write_private(standby.password_file, primary.password + "\n")  # the same cluster, the same superuser
        run_command([primary.program("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                     "-D", standby.data_dir, "-R", "-X", "stream", "--checkpoint=fast"],
                    password=primary.password, timeout=120, what="pg_basebackup")
        assert (standby.data_dir / "standby.signal").exists()
        standby.adopt_data_dir()
        standby.start()
        with psycopg.connect(standby.url(), autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        yield standby
    finally:
        stop_test_server(standby)


def replay_lag(url: str) -> tuple[str, float | None, bool] | None:
    """The standby's row of pg_stat_replication on the primary: (state, replay_lag in seconds, caught up)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(LAG_SQL).fetchone()
    return None if row is None else (row[0], None if row[1] is None else float(row[1]), bool(row[2]))


def wait_caught_up(url: str) -> float | None:
    """Commit small transactions until the standby streams, has replayed everything and its reported replay_lag is
    under the threshold (or NULL: replay_lag is forgotten once the standby has been idle and caught up); each commit is
    a new sample of the primary's lag tracker, so a stale lag measured before is replaced by a fresh one."""
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            conn.execute("INSERT INTO ticks DEFAULT VALUES")
            time.sleep(0.3)
            row = replay_lag(url)
            if row and row[0] == "streaming" and row[2] and (row[1] is None or row[1] < LAG_THRESHOLD / 2):
                return row[1]
    raise AssertionError(f"the standby did not catch up: {replay_lag(url)}")


def scrape(url: str) -> dict[str, float]:
    """The unlabelled samples of one scrape of the exporter on ``url``."""
    text = generate_latest(build_registry(url)).decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def test_no_standby_is_not_measured(receiver: Receiver) -> None:
    primary = start_test_server(wal_level="replica", max_wal_senders="5")
    try:
        url = new_database(primary.url("postgres"))
        targets = one_target("replication_lag_seconds", LAG_THRESHOLD)
        ticker = Ticker(url, [JsonWebhookSink(receiver.url)], targets=targets)
        try:
            ticker.tick()
        finally:
            ticker.instance.dispose()
        assert "replication_lag_seconds" not in ticker.observations[-1]
        (check,) = [e for e in ticker.evaluations if e.check_name.startswith("replication_lag_seconds")]
        assert not check.passed and check.severity.value == "WARN"
        assert check.metadata["reason"].value == "no streaming replica is connected"
        assert receiver.alerts() == []
    finally:
        stop_test_server(primary)


def test_a_standby_falling_behind(receiver: Receiver) -> None:
    primary = start_test_server(wal_level="replica", max_wal_senders="5")
    try:
        url = new_database(primary.url("postgres"))
        run(url, "CREATE TABLE ticks (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        assert "replication_lag_seconds" not in collect_health(url).metrics
        with streaming_standby(primary) as standby:
            standby_url = standby.url(url.rsplit("/", 1)[1])
            wait_caught_up(url)
            exported = scrape(standby_url)
            assert exported["pg_replication_is_replica"] == 1
            assert scrape(url)["pg_replication_is_replica"] == 0
            seen: dict[str, float | None] = {}

            @contextmanager
            def paused_replay() -> Iterator[None]:
                """Replay paused on the standby while the primary commits for 2 s: the standby receives and flushes
                the WAL but does not apply it, and the primary's replay_lag grows (a stuck apply position is
                reported as a lag growing from the first sample not replayed)."""
                run(standby_url, "SELECT pg_wal_replay_pause()")
                with psycopg.connect(url, autocommit=True) as conn:
                    began = time.monotonic()
                    while time.monotonic() - began < 2:
                        conn.execute("INSERT INTO ticks DEFAULT VALUES")
                        time.sleep(0.1)
                deadline = time.monotonic() + 20
                while (row := replay_lag(url)) is None or row[1] is None or row[1] <= 2 * LAG_THRESHOLD:
                    assert time.monotonic() < deadline, f"replay_lag did not grow: {row}"
                    time.sleep(0.2)
                seen["planted"] = row[1]
                seen["standby_exporter"] = scrape(standby_url)["pg_replication_lag_seconds"]
                assert seen["standby_exporter"] > 0  # received but not replayed, as the standby sees it
                yield
                run(standby_url, "SELECT pg_wal_replay_resume()")
                seen["cleared"] = wait_caught_up(url)

            planted(url, receiver, "replication_lag_seconds", paused_replay, threshold=LAG_THRESHOLD)
        deadline = time.monotonic() + 20  # the standby gone, its walsender ends and the figure is absent again
        while "replication_lag_seconds" in collect_health(url).metrics:
            assert time.monotonic() < deadline, "the figure outlived the standby"
            time.sleep(0.2)
    finally:
        stop_test_server(primary)


def test_a_deadlock(fresh_db: str, receiver: Receiver) -> None:
    run(fresh_db, "CREATE TABLE pair (id int PRIMARY KEY, n int)", "INSERT INTO pair VALUES (1, 0), (2, 0)")

    @contextmanager
    def plant() -> Iterator[None]:
        both_locked = threading.Barrier(2, timeout=30)
        outcomes: list[BaseException | None] = []

        def lock_both(first: int, second: int) -> None:
            try:
                with session(fresh_db) as conn:
                    conn.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (first,))
                    both_locked.wait()
                    conn.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (second,))
                    conn.commit()
                outcomes.append(None)
            except BaseException as exc:  # noqa: BLE001 - judged below
                outcomes.append(exc)

        threads = [threading.Thread(target=lock_both, args=pair, daemon=True) for pair in ((1, 2), (2, 1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(type(o).__name__ for o in outcomes) == ["DeadlockDetected", "NoneType"], outcomes
        with psycopg.connect(fresh_db, autocommit=True) as conn:  # flushed at the victim's transaction end or exit
            deadline = time.monotonic() + 15
            while True:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                if conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
                                ).fetchone()[0] >= 1:
                    break
                assert time.monotonic() < deadline, "the deadlock never reached pg_stat_database"
                time.sleep(0.2)
        yield
        time.sleep(1.1)

    # the shipped threshold is 5 a minute; here any, a rate of events (not 'steady')
    out = planted(fresh_db, receiver, "deadlocks_per_minute", plant, threshold=0, steady=False)
    assert out.values[-2] > 0 and out.values[-1] == 0  # type: ignore[operator]


def test_checkpoints_requested_not_timed(receiver: Receiver) -> None:
    server = start_test_server()
    url = server.url("postgres")
    reset = "checkpointer" if server.major_version() >= 17 else "bgwriter"
    targets = one_target("checkpoints_timed_ratio")
    target = targets.metrics[0]
    ticker = Ticker(url, [JsonWebhookSink(receiver.url)], targets=targets)
    out = Outcome(ticker, receiver, "checkpoints_timed_ratio")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_reset_shared(%s)", (reset,))
        ticker.tick()
        assert out.values == [None]  # no checkpoint since the reset: not measured
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(3):
                conn.execute("CHECKPOINT")
        deadline = time.monotonic() + 15  # the checkpointer reports its statistics after its checkpoints
        while collect_health(url).metrics.get("checkpoints_requested", 0) < 3:
            assert time.monotonic() < deadline, "the requested checkpoints never reached the statistics"
            time.sleep(0.2)
        ticker.tick()
        ratio = out.values[-1]
        assert ratio is not None and ratio < 0.5 and target.missed(ratio), out.values
        assert ticker.observations[-1]["checkpoints_requested"] >= 3
        alerts = receiver.alerts()
        assert [(a["key"], a["status"]) for a in alerts] == [(target.key, "firing")], alerts
        assert alerts[0]["runbook"].endswith(f"/{alert_name(target.key, targets)}.md")
        assert runbook_path(alert_name(target.key, targets)).exists()
        ticker.tick()  # still requested: no second alert
        assert len(receiver.alerts()) == 1
        assert out.check_outcomes() == [False], out.check_outcomes()
    finally:
        ticker.instance.dispose()
        stop_test_server(server)

"""A synthetic load spike against real PostgreSQL while the two sensors tick: alerted exactly once to a real HTTP
receiver, "resolved" once after; a single short spike never pages; a planted integrity violation raises an alert."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg
import pytest

from dbops.components.health.sensors import build_alert_sensor, build_database_health_sensor
from dbops.components.naming import asset_key
from dbops.components.resources import DatabaseResource
from dbops.health.sinks import JsonWebhookSink, LogFileSink, SlackWebhookSink
from dbops.health.targets import Targets, parse_targets
from dbops.pg.connect import drop_database
from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import new_database, start_test_server, stop_test_server
from dbops_tests.health.conftest import Receiver

SESSIONS = 20
RUNBOOK_BASE = "https://git.example.com/dba/dbops/-/blob/main/docs/runbooks"
TARGET = "dbops"  # no config file: the one embedded target
TARGETS = parse_targets({
    "defaults": {"cooldown": "10m"},
    "metrics": [
        # breach must last 2 s here (2 m in production) so a one-tick spike does not page
        {"metric": "idle_in_transaction_sessions", "op": ">", "threshold": 10, "for": "2s", "severity": "critical",
         "summary": "sessions idle in transaction"},
        {"metric": "connections_used_ratio", "op": ">", "threshold": 0.8, "for": "2s", "severity": "critical",
         "summary": "more than 80 % of max_connections in use"},
        {"metric": "up", "op": "<", "threshold": 1, "for": 0},
    ],
    "checks": [{"asset": "integrity_validation", "check": "no_integrity_violations", "severity": "critical"}],
})


@contextmanager
def open_transactions(url: str, count: int) -> Iterator[None]:
    """``count`` sessions in threads, each inside an open transaction until the block ends."""
    release = threading.Event()
    ready = threading.Barrier(count + 1, timeout=30)
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with psycopg.connect(url) as conn:
                conn.execute("SELECT count(*) FROM pg_class")
                ready.wait()
                release.wait(60)
                conn.rollback()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test below
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    try:
        ready.wait()
        yield
    finally:
        release.set()
        for t in threads:
            t.join(30)
    assert not errors, errors


class Ticker:
    """Drives one target's two sensors the way the daemon does: health observation recorded, then the alert sensor."""

    def __init__(self, url: str, sinks: list[Any], target: str = TARGET,
                 instance: dg.DagsterInstance | None = None, targets: Targets = TARGETS,
                 pooler_url: str | None = None) -> None:
        self.instance = instance or dg.DagsterInstance.ephemeral()
        self.resources = {"database": DatabaseResource(url=url)}
        self.health_sensor = build_database_health_sensor(target, lambda: targets, lambda: pooler_url,
                                                          lambda: (60.0, RUNBOOK_BASE))
        self.alert_sensor = build_alert_sensor(target, lambda: targets, lambda: sinks, failures=lambda: True,
                                               backoff=0.05, runbook_base=lambda: RUNBOOK_BASE)
        self.health_cursor: str | None = None
        self.alert_cursor: str | None = None
        self.observations: list[dict[str, float]] = []
        self.evaluations: list[dg.AssetCheckEvaluation] = []

    def tick(self) -> None:
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.health_cursor, resources=self.resources)
        result = self.health_sensor(ctx)
        assert isinstance(result, dg.SensorResult) and not result.run_requests
        self.health_cursor = result.cursor
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
            if isinstance(event, dg.AssetCheckEvaluation):
                self.evaluations.append(event)
            else:
                self.observations.append({k: v.value for k, v in event.metadata.items()})
        self.alerts()

    def alerts(self) -> None:
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.alert_cursor)
        result = self.alert_sensor(ctx)
        assert isinstance(result, dg.SensorResult) and not result.run_requests
        self.alert_cursor = result.cursor


@pytest.fixture(scope="module")
def spike_server() -> Iterator[EmbeddedServer]:
    """A server of its own with max_connections = 25, so 20 sessions cross the 80 % connections target."""
    server = start_test_server(max_connections="25")
    try:
        yield server
    finally:
        stop_test_server(server)


@pytest.fixture
def spike_db(spike_server: EmbeddedServer) -> Iterator[str]:
    url = new_database(spike_server.url("postgres"))
    try:
        yield url
    finally:
        drop_database(spike_server.url("postgres"), url.rsplit("/", 1)[1])


@pytest.fixture
def ticker(fresh_db: str, receiver: Receiver, tmp_path: Any) -> Iterator[Ticker]:
    t = Ticker(fresh_db, [SlackWebhookSink(receiver.url), LogFileSink(tmp_path / "alerts.log")])
    try:
        yield t
    finally:
        t.instance.dispose()


def test_spike_alerts_once_then_resolves(spike_db: str, receiver: Receiver, tmp_path: Any) -> None:
    ticker = Ticker(spike_db, [SlackWebhookSink(receiver.url), LogFileSink(tmp_path / "alerts.log")])
    try:
        spike(ticker, spike_db, receiver)
    finally:
        ticker.instance.dispose()


def spike(ticker: Ticker, url: str, receiver: Receiver) -> None:
    ticker.tick()
    assert ticker.observations[-1]["up"] == 1.0
    # a one-tick spike: recorded, not paged
    with open_transactions(url, SESSIONS):
        ticker.tick()
    assert ticker.observations[-1]["idle_in_transaction_sessions"] >= SESSIONS
    ticker.tick()
    assert receiver.bodies == []
    # a sustained spike: one alert, however many ticks it lasts
    with open_transactions(url, SESSIONS):
        started = time.monotonic()
        while time.monotonic() - started < 4.5:
            ticker.tick()
            time.sleep(0.5)
        assert ticker.observations[-1]["longest_transaction_seconds"] >= 4
    texts = sorted(b["text"] for b in receiver.alerts())
    assert len(texts) == 2, texts
    assert len(receiver.bodies) == 1, "the two alerts of one tick are one message"
    assert receiver.bodies[0]["text"].startswith("[dbops dbops] 2 alerts: 2 critical\n- ")
    assert texts[0].startswith(
        "[dbops dbops CRITICAL] more than 80 % of max_connections in use: connections_used_ratio")
    assert texts[1].startswith(
        "[dbops dbops CRITICAL] sessions idle in transaction: idle_in_transaction_sessions = 20")
    ticker.tick()
    ticker.tick()
    resolved = sorted(b["text"] for b in receiver.alerts()[2:])
    assert len(resolved) == 2, resolved
    assert resolved[0].startswith("[dbops dbops RESOLVED] more than 80 % of max_connections")
    assert resolved[1].startswith("[dbops dbops RESOLVED] sessions idle in transaction")
    # the figures a UI plots: rates exist from the second sample on, host figures because the server is local
    last = ticker.observations[-1]
    for name in ("connections_used_ratio", "commits_per_second", "cache_hit_ratio", "wal_bytes_per_second",
                 "database_size_bytes", "wraparound_transactions_left", "host_cpu_percent", "lock_waits"):
        assert name in last, name
    assert 0 < last["connections_used_ratio"] < 1 and last["idle_in_transaction_sessions"] == 0
    assert 0 <= last["host_cpu_percent"] <= 100 and 0 < last["host_memory_percent"] <= 100
    recorded = ticker.instance.fetch_observations(asset_key(TARGET, "database_health"), limit=100).records
    assert len(recorded) == len(ticker.observations)
    # database_health's checks: recorded when their outcome changes (first tick, the breach past its 'for', the end)
    by_check: dict[str, list[bool]] = {}
    for evaluation in ticker.evaluations:
        by_check.setdefault(evaluation.check_name, []).append(evaluation.passed)
    assert by_check == {"up_within_target": [True], "connections_used_ratio_within_target": [True, False, True],
                        "idle_in_transaction_sessions_within_target": [True, False, True]}
    failed = next(e for e in ticker.evaluations if not e.passed and e.check_name.startswith("idle"))
    assert failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["threshold"].value == 10 and failed.metadata["value"].value >= SESSIONS
    assert failed.metadata["runbook"].value.endswith("/DbopsIdleInTransactionSessionsHigh.md")


def test_a_failed_asset_check_raises_an_alert_and_its_fix_resolves_it(
    fresh_db: str, receiver: Receiver, ticker: Ticker
) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer_id int)")  # FK left out on purpose
        conn.execute("INSERT INTO customers VALUES (1); INSERT INTO orders VALUES (1, 1), (2, 999)")

    @dg.asset(key=asset_key(TARGET, "integrity_validation"))
    def integrity_validation() -> None:
        """Stands in for the integrity step: same asset and check keys, a real query."""

    @dg.asset_check(asset=integrity_validation, name="no_integrity_violations")
    def no_integrity_violations() -> dg.AssetCheckResult:
        with psycopg.connect(fresh_db) as conn:
            row = conn.execute("SELECT count(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id "
                               "WHERE c.id IS NULL").fetchone()
        orphans = row[0] if row else 0
        return dg.AssetCheckResult(passed=orphans == 0, metadata={"orphan_orders": orphans},
                                   severity=dg.AssetCheckSeverity.ERROR)

    ticker.alerts()
    assert receiver.bodies == []
    result = dg.materialize([integrity_validation, no_integrity_violations], instance=ticker.instance,
                            raise_on_error=False)
    assert not result.get_asset_check_evaluations()[0].passed
    ticker.alerts()
    ticker.alerts()
    assert len(receiver.alerts()) == 1
    assert "integrity_validation/no_integrity_violations" in receiver.alerts()[0]["text"]
    assert "CRITICAL" in receiver.alerts()[0]["text"]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE customer_id = 999")
    dg.materialize([integrity_validation, no_integrity_violations], instance=ticker.instance)
    ticker.alerts()
    assert len(receiver.alerts()) == 2 and receiver.alerts()[1]["text"].startswith("[dbops dbops RESOLVED]")
    state = json.loads(ticker.alert_cursor or "{}")
    assert state["engine"]["pending"] == []


def test_a_server_that_is_down_is_a_figure_and_pages(receiver: Receiver, tmp_path: Any) -> None:
    ticker = Ticker("postgresql://nobody@127.0.0.1:9/none", [JsonWebhookSink(receiver.url)])
    try:
        ticker.tick()
    finally:
        ticker.instance.dispose()
    assert ticker.observations[-1]["up"] == 0.0
    assert "error" in ticker.observations[-1]
    assert [b["key"] for b in receiver.alerts()] == ["metric:up<1"]


def test_an_alert_names_its_target_and_another_targets_sensor_stays_quiet(receiver: Receiver) -> None:
    """Target ``shop``'s sensors observe ``shop/database_health`` and send alerts naming shop (title, payload and
    incident); target ``dbops``'s alert sensor on the same instance reads its own observations only."""
    shop = Ticker("postgresql://nobody@127.0.0.1:9/none", [JsonWebhookSink(receiver.url)], target="shop")
    quiet = Receiver()
    try:
        shop.tick()
        dbops = Ticker("postgresql://nobody@127.0.0.1:9/none", [JsonWebhookSink(quiet.url)], instance=shop.instance)
        dbops.alerts()
        dbops.alerts()
        assert shop.instance.fetch_observations(asset_key("shop", "database_health"), limit=10).records
        assert not shop.instance.fetch_observations(asset_key(TARGET, "database_health"), limit=10).records
    finally:
        quiet.close()
        shop.instance.dispose()
    assert [b["key"] for b in receiver.alerts()] == ["metric:up<1"]
    body = receiver.alerts()[0]
    assert body["target"] == "shop"
    assert body["title"] == "[dbops shop WARNING] up < 1" and body["severity"] == "warning"
    assert body["text"].startswith(body["title"]) and body["incident"].startswith("shop/metric:up<1@")
    assert quiet.bodies == []

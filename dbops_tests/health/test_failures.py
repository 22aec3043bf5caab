"""Failed runs, materializations and asset checks alert: real PostgreSQL behind the assets, a real Dagster instance,
the real alert sensor, and a real HTTP receiver and log file as sinks. One firing alert per incident with its
severity, no duplicate on the next tick, one "resolved" after the next success, and cooldown against flapping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from dbops.components.health.sensors import build_alert_sensor
from dbops.components.naming import asset_key
from dbops.health.sinks import JsonWebhookSink, LogFileSink
from dbops.health.targets import parse_targets
from dbops.settings import load_settings
from dbops_tests.health.conftest import Receiver

TARGET = "dbops"
SECRET = "hunter2-not-for-slack"


class World:
    """One target's stand-in assets over a real database: ``load_test`` fails while ``broken`` (a PostgreSQL error
    naming a URL with a password), ``integrity_validation`` carries an ERROR check (orphan orders) and a WARN check
    (no order in the last day), and a job of plain ops fails while ``broken``."""

    def __init__(self, url: str, instance: dg.DagsterInstance) -> None:
        self.url, self.instance, self.broken = url, instance, True
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE customers (id int PRIMARY KEY)")
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer_id int, placed_at timestamptz)")
            conn.execute("INSERT INTO customers VALUES (1)")
            conn.execute("INSERT INTO orders VALUES (1, 1, now() - interval '3 days'), (2, 999, now() - "
                         "interval '3 days')")
        world = self

        @dg.asset(key=asset_key(TARGET, "load_test"))
        def load_test() -> None:
            """Fails with a real PostgreSQL error while the world is broken."""
            with psycopg.connect(world.url) as conn:
                if world.broken:
                    conn.execute(f"DO $$ BEGIN RAISE EXCEPTION 'cannot reach postgresql://app:{SECRET}@db/shop'; "
                                 "END $$")
                conn.execute("SELECT 1")

        @dg.asset(key=asset_key(TARGET, "integrity_validation"))
        def integrity_validation() -> None:
            """Stands in for the integrity step."""

        @dg.asset_check(asset=integrity_validation, name="no_orphan_orders", description="every order's customer")
        def no_orphan_orders() -> dg.AssetCheckResult:
            orphans = world.scalar("SELECT count(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id "
                                   "WHERE c.id IS NULL")
            return dg.AssetCheckResult(passed=orphans == 0, severity=dg.AssetCheckSeverity.ERROR,
                                       metadata={"orphans": orphans})

        @dg.asset_check(asset=integrity_validation, name="orders_recent", description="an order in the last day")
        def orders_recent() -> dg.AssetCheckResult:
            recent = world.scalar("SELECT count(*) FROM orders WHERE placed_at > now() - interval '1 day'")
            return dg.AssetCheckResult(passed=recent > 0, severity=dg.AssetCheckSeverity.WARN,
                                       metadata={"reason": "no order in the last day"} if not recent else {})

        @dg.op
        def vacuum_orders() -> None:
            with psycopg.connect(world.url) as conn:
                conn.execute("SELECT 1 / 0" if world.broken else "SELECT 1")

        @dg.job(name="dbops_nightly", tags={"dbops/target": TARGET})
        def nightly() -> None:
            vacuum_orders()

        self.load_test, self.integrity = load_test, [integrity_validation, no_orphan_orders, orders_recent]
        self.nightly = nightly

    def scalar(self, sql: str) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def fix(self) -> None:
        self.broken = False
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("DELETE FROM orders WHERE customer_id = 999")
            conn.execute("INSERT INTO orders VALUES (3, 1, now())")

    def run_load_test(self, tags: dict[str, str] | None = None) -> str:
        return dg.materialize([self.load_test], instance=self.instance, raise_on_error=False, tags=tags).run_id

    def run_integrity(self) -> str:  # untagged, as a UI materialization: attributed by its asset keys
        return dg.materialize(self.integrity, instance=self.instance, raise_on_error=False).run_id

    def run_nightly(self) -> str:
        return self.nightly.execute_in_process(instance=self.instance, raise_on_error=False).run_id


class Sensor:
    """The target's alert sensor, evaluated the way the daemon does (cursor kept, observations recorded)."""

    def __init__(self, instance: dg.DagsterInstance, sinks: list[Any], cooldown: str = "10m",
                 failures: bool = True) -> None:
        self.instance, self.cursor = instance, None
        targets = parse_targets({"defaults": {"cooldown": cooldown}, "metrics": [], "checks": []})
        self.sensor = build_alert_sensor(TARGET, lambda: targets, lambda: sinks, failures=lambda: failures,
                                         backoff=0.05)
        self.observations: list[dict[str, Any]] = []

    def tick(self) -> dg.SensorResult:
        result = self.sensor(dg.build_sensor_context(instance=self.instance, cursor=self.cursor))
        assert isinstance(result, dg.SensorResult) and not result.run_requests
        json.loads(result.cursor or "{}")  # JSON-able, as the daemon stores it
        self.cursor = result.cursor
        for event in result.asset_events:
            assert event.asset_key == asset_key(TARGET, "alerts")
            self.instance.report_runless_asset_event(event)
            self.observations.append({k: v.value for k, v in event.metadata.items()})
        return result


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def by_key(bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {b["key"]: b for b in bodies}
    assert len(out) == len(bodies), [b["key"] for b in bodies]  # one alert per incident
    return out


def test_failed_runs_materializations_and_checks_alert_once_then_resolve(
        fresh_db: str, instance: dg.DagsterInstance, receiver: Receiver, tmp_path: Path) -> None:
    log_file = tmp_path / "alerts.log"
    world = World(fresh_db, instance)
    sensor = Sensor(instance, [JsonWebhookSink(receiver.url), LogFileSink(log_file)])
    sensor.tick()
    assert receiver.bodies == [] and sensor.observations == []

    failed_asset = world.run_load_test(tags={"dbops/target": TARGET})
    checks_run = world.run_integrity()
    failed_job = world.run_nightly()
    other = dg.materialize([world.load_test], instance=instance, raise_on_error=False,
                           tags={"dbops/target": "shop"})  # another target's run: not this sensor's
    assert not other.success
    result = sensor.tick()

    fired = by_key(receiver.alerts())
    # one message for the tick's four alerts (grouping against alert fatigue), each alert whole inside it
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["group"] is True
    assert receiver.bodies[0]["title"] == "[dbops dbops] 4 alerts: 3 critical, 1 warning"
    assert receiver.bodies[0]["text"].count("\n- [dbops dbops ") == 4
    assert set(fired) == {"asset:load_test", "check:integrity_validation/no_orphan_orders",
                          "check:integrity_validation/orders_recent", "run:dbops_nightly"}
    assert {b["status"] for b in fired.values()} == {"firing"}
    assert {b["target"] for b in fired.values()} == {TARGET}
    severities = {k: b["severity"] for k, b in fired.items()}
    assert severities == {"asset:load_test": "critical", "check:integrity_validation/no_orphan_orders": "critical",
                          "check:integrity_validation/orders_recent": "warning", "run:dbops_nightly": "critical"}
    asset = fired["asset:load_test"]
    runbooks = {k: b["runbook"].rsplit("/", 1)[1] for k, b in fired.items()}  # each alert links its runbook
    assert runbooks == {"asset:load_test": "DbopsMaterializationFailed.md", "run:dbops_nightly": "DbopsRunFailed.md",
                        "check:integrity_validation/no_orphan_orders": "DbopsAssetCheckFailed.md",
                        "check:integrity_validation/orders_recent": "DbopsAssetCheckFailed.md"}
    assert asset["run_id"] == failed_asset != other.run_id
    assert asset["title"] == "[dbops dbops CRITICAL] materialization of dbops/load_test failed"
    assert f"run {failed_asset}: psycopg.errors.RaiseException: cannot reach postgresql://app:***@db/shop" in asset[
        "text"]
    assert SECRET not in json.dumps(receiver.bodies) and SECRET not in log_file.read_text()
    warn = fired["check:integrity_validation/orders_recent"]
    assert warn["title"] == "[dbops dbops WARNING] asset check dbops/integrity_validation:orders_recent failed"
    assert warn["run_id"] == checks_run and "severity WARN: no order in the last day" in warn["detail"]
    error = fired["check:integrity_validation/no_orphan_orders"]
    assert error["title"].startswith("[dbops dbops CRITICAL] asset check dbops/integrity_validation:no_orphan_orders")
    assert error["detail"] == f"run {checks_run}: severity ERROR: orphans=1"
    job = fired["run:dbops_nightly"]
    assert job["run_id"] == failed_job and "DivisionByZero: division by zero" in job["detail"]
    # the failed run of load_test is that asset's incident, not a second one of the run
    assert not any(k.startswith("run:") and "load_test" in k for k in fired)
    # the tick is recorded on <target>/alerts
    assert len(result.asset_events) == 1 and sensor.observations[-1]["firing"] == 4
    incidents = sensor.observations[-1]["incidents"]
    assert sorted(r.data["incident"] for r in incidents.records) == sorted(fired)
    assert [c.name for c in incidents.schema.columns] == ["incident", "status", "severity", "summary", "run_id",
                                                          "since"]
    recorded = instance.fetch_observations(asset_key(TARGET, "alerts"), limit=10).records
    assert len(recorded) == 1

    # no duplicate: the next tick, and a second failure of the same asset, are the same incident
    assert sensor.tick().skip_reason
    world.run_load_test()
    sensor.tick()
    assert len(receiver.alerts()) == 4 and len(sensor.observations) == 1

    # the next successes resolve each incident once, with the severity it fired with
    world.fix()
    fixed = [world.run_load_test(), world.run_integrity(), world.run_nightly()]
    sensor.tick()
    resolved = by_key(receiver.alerts()[4:])
    assert set(resolved) == set(fired)
    assert {b["status"] for b in resolved.values()} == {"resolved"}
    assert {k: b["severity"] for k, b in resolved.items()} == severities
    assert {b["incident"] for b in resolved.values()} == {b["incident"] for b in fired.values()}
    assert resolved["asset:load_test"]["text"].startswith(
        "[dbops dbops RESOLVED] materialization of dbops/load_test failed: materialized in run " + fixed[0])
    assert sensor.observations[-1]["firing"] == 0 and sensor.observations[-1]["resolved"] == 4
    assert len(receiver.bodies) == 2 and receiver.bodies[1]["title"] == "[dbops dbops] 4 alerts: 4 resolved"
    sensor.tick()
    assert len(receiver.alerts()) == 8

    # the log file holds the same eight notifications, one JSON line each
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [x["status"] for x in lines] == ["firing"] * 4 + ["resolved"] * 4  # sinks are sent to concurrently:
    assert sorted(x["text"] for x in lines[:4]) == sorted(b["text"] for b in receiver.alerts()[:4])  # order per tick
    assert sorted(x["text"] for x in lines[4:]) == sorted(b["text"] for b in receiver.alerts()[4:])
    assert json.loads(sensor.cursor or "{}")["engine"]["pending"] == []


def test_a_flapping_asset_is_not_renotified_within_the_cooldown(
        fresh_db: str, instance: dg.DagsterInstance, receiver: Receiver) -> None:
    cooldown = 8.0
    world = World(fresh_db, instance)
    sensor = Sensor(instance, [JsonWebhookSink(receiver.url)], cooldown=f"{cooldown:g}s")
    world.run_load_test()
    sensor.tick()
    assert [(b["key"], b["status"]) for b in receiver.alerts()] == [("asset:load_test", "firing")]
    fired_at = receiver.alerts()[0]["at"]
    world.broken = False
    world.run_load_test()
    sensor.tick()
    assert [b["status"] for b in receiver.alerts()] == ["firing", "resolved"]
    # it fails again at once, then recovers: within the cooldown neither is sent
    world.broken = True
    again = world.run_load_test()
    sensor.tick()
    world.broken = False
    world.run_load_test()
    sensor.tick()
    refailed_at = instance.get_run_record_by_id(again).end_time  # type: ignore[union-attr]
    assert refailed_at is not None and refailed_at - fired_at < cooldown, "the re-failure came after the cooldown"
    assert len(receiver.alerts()) == 2
    # after the cooldown a new failure is a new incident, notified
    time.sleep(max(0.0, fired_at + cooldown + 0.5 - time.time()))
    world.broken = True
    last = world.run_load_test()
    sensor.tick()
    assert [b["status"] for b in receiver.alerts()] == ["firing", "resolved", "firing"]
    alerts = receiver.alerts()
    assert alerts[2]["run_id"] == last and alerts[2]["incident"] != alerts[0]["incident"]


def test_alerts_failures_off_sends_nothing_for_failures(fresh_db: str, instance: dg.DagsterInstance,
                                                        receiver: Receiver, tmp_path: Path) -> None:
    assert load_settings({}, tmp_path).target().alerts.failures is True
    assert load_settings({"DBOPS_ALERT_FAILURES": "off"}, tmp_path).target().alerts.failures is False
    world = World(fresh_db, instance)
    sensor = Sensor(instance, [JsonWebhookSink(receiver.url)], failures=False)
    world.run_load_test()
    world.run_integrity()
    world.run_nightly()
    assert sensor.tick().skip_reason
    assert receiver.bodies == [] and sensor.observations == []
    assert json.loads(sensor.cursor or "{}")["runs_after"] is None  # nothing read: no run is marked as seen


def test_a_failed_partition_is_named_and_other_targets_runs_stay_out(
        fresh_db: str, instance: dg.DagsterInstance, receiver: Receiver) -> None:
    days = dg.DailyPartitionsDefinition(start_date="2026-01-01")

    @dg.asset(key=asset_key(TARGET, "integrity_validation"), partitions_def=days)
    def integrity_validation(context) -> None:  # unannotated: the module's string annotations would not resolve
        """Fails on one day: a real query for a table that does not exist."""
        with psycopg.connect(fresh_db) as conn:
            conn.execute("SELECT count(*) FROM orders_2026_01_03" if context.partition_key == "2026-01-03" else
                         "SELECT 1")

    @dg.asset(key=asset_key("shop", "load_test"))
    def shop_load_test() -> None:
        raise RuntimeError("shop's own failure")

    sensor = Sensor(instance, [JsonWebhookSink(receiver.url)])
    for day in ("2026-01-02", "2026-01-03"):
        dg.materialize([integrity_validation], instance=instance, partition_key=day, raise_on_error=False)
    dg.materialize([shop_load_test], instance=instance, raise_on_error=False)  # untagged: shop's by its asset key
    sensor.tick()
    assert [b["key"] for b in receiver.alerts()] == ["asset:integrity_validation"]
    assert '(partition 2026-01-03): psycopg.errors.UndefinedTable: relation "orders_2026_01_03" does not exist' in (
        receiver.alerts()[0]["detail"])
    # the cursor keeps incidents only: the successes of what never failed leave no state behind
    state = json.loads(sensor.cursor or "{}")["engine"]["targets"]
    assert set(state) == {"asset:integrity_validation"}

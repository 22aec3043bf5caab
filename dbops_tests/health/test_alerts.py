"""The alert state machine, the targets file and the sinks, with a real HTTP receiver on loopback."""

from __future__ import annotations

import email
import email.policy
import json
import time
from pathlib import Path

import pytest

from dbops.errors import ConfigError
from dbops.health.alerts import FIRING, RESOLVED, AlertEngine, Reading, metric_readings
from dbops.health.notify import alert_tick
from dbops.health.sinks import JsonWebhookSink, LogFileSink, SlackWebhookSink, sinks_from_settings
from dbops.health.targets import Limits, TargetsError, default_limits, load_targets, parse_targets
from dbops.settings import load_settings
from dbops_tests.health.conftest import Receiver, SmtpReceiver

TARGETS = {
    "defaults": {"cooldown": "10m"},
    "metrics": [
        {"metric": "connections_used_ratio", "op": ">", "threshold": 0.8, "for": "2m", "severity": "critical"},
    ],
    "checks": [{"asset": "integrity_validation", "check": "no_integrity_violations", "severity": "critical"}],
}


def test_breach_must_last_before_it_fires_once_then_resolves() -> None:
    engine = AlertEngine(parse_targets(TARGETS))
    t0 = 1_000_000.0
    # a single one-minute spike: never pages
    assert engine.observe(metric_readings(engine.targets, {"connections_used_ratio": 0.95}, t0)) == []
    assert engine.observe(metric_readings(engine.targets, {"connections_used_ratio": 0.10}, t0 + 60)) == []
    # a sustained breach: fires once at the 2-minute mark, not again while it lasts
    fired = []
    for i in range(6):
        fired += engine.observe(metric_readings(engine.targets, {"connections_used_ratio": 0.9}, t0 + 120 + 60 * i))
    assert [a.status for a in fired] == [FIRING]
    assert fired[0].at - fired[0].started_at == 120
    resolved = engine.observe(metric_readings(engine.targets, {"connections_used_ratio": 0.5}, t0 + 600))
    assert [a.status for a in resolved] == [RESOLVED]
    assert resolved[0].incident == fired[0].incident
    # flapping right after: within the 10-minute cooldown, neither firing nor resolved is sent again
    again = []
    for i in range(4):
        again += engine.observe(metric_readings(engine.targets, {"connections_used_ratio": 0.9}, t0 + 660 + 60 * i))
    again += engine.observe(metric_readings(engine.targets, {"connections_used_ratio": 0.1}, t0 + 960))
    assert again == []
    # after the cooldown a new incident pages again
    later = []
    for i in range(4):
        later += engine.observe(metric_readings(engine.targets, {"connections_used_ratio": 0.9}, t0 + 2000 + 60 * i))
    assert [a.status for a in later] == [FIRING]


def test_engine_state_survives_a_json_round_trip() -> None:
    targets = parse_targets(TARGETS)
    engine = AlertEngine(targets)
    engine.observe(metric_readings(targets, {"connections_used_ratio": 0.9}, 0))
    engine = AlertEngine(targets, json.loads(json.dumps(engine.state)))
    assert [a.status for a in engine.observe(metric_readings(targets, {"connections_used_ratio": 0.9}, 200))] == [
        FIRING]


def test_a_sink_that_is_down_does_not_lose_the_alert_for_the_others(receiver: Receiver, tmp_path: Path) -> None:
    dead = Receiver()
    dead.down = True
    closed_port = JsonWebhookSink("http://127.0.0.1:9/refused", name="refused", timeout=1)
    log_file = tmp_path / "alerts.log"
    try:
        sinks = [closed_port, JsonWebhookSink(dead.url, name="dead"), SlackWebhookSink(receiver.url),
                 LogFileSink(log_file)]
        engine = AlertEngine(parse_targets({**TARGETS, "metrics": [{**TARGETS["metrics"][0], "for": 0}]}))
        readings = metric_readings(engine.targets, {"connections_used_ratio": 0.99}, 100.0)
        result = alert_tick(engine, readings, sinks, retries=2, backoff=0.05)
        assert [a.status for a in result.alerts] == [FIRING]
        assert {d.sink for d in result.failed} == {"refused", "dead"}
        assert all(d.attempts == 2 for d in result.failed)
        assert "T0KEN-secret" not in " ".join(d.error for d in result.failed)
        assert len(receiver.alerts()) == 1 and "CRITICAL" in receiver.alerts()[0]["text"]
        assert json.loads(log_file.read_text().splitlines()[0])["status"] == FIRING
        # the dead receiver comes back: it gets the owed alert next tick, the others no duplicate
        dead.down = False
        result = alert_tick(engine, [], sinks, retries=1, backoff=0.01)
        assert len(dead.bodies) == 1 and dead.bodies[0]["status"] == FIRING
        assert len(receiver.alerts()) == 1 and len(log_file.read_text().splitlines()) == 1
        assert [p["sink"] for p in engine.state["pending"]] == ["refused"]
    finally:
        dead.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics: [\n  - metric: x\n    op: '>'\n  threshold: 1\n", "line"),
        ("metrics:\n  - {metric: cache_hit_ratio, op: '<', threshold: high}\n", "threshold 'high' is not a number"),
        ("metrics:\n  - {metric: cache_hit_ratio, op: '=~', threshold: 1}\n", "operator '=~' is unknown"),
        ("metrics:\n  - {metric: up, op: '<', threshold: 1, for: soon}\n", "'soon' is not a duration"),
        ("checks:\n  - {asset: load_test}\n", "needs both 'asset' and 'check'"),
        ("checks:\n  - {asset: a, check: b, severity: urgent}\n", "severity 'urgent' is unknown"),
        ("metric:\n  - {metric: up}\n", "unknown key(s) metric"),
        ("- just a list\n", "must be a mapping"),
    ],
)
def test_a_malformed_targets_file_fails_at_load_time(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "targets.yml"
    path.write_text(text)
    with pytest.raises(TargetsError) as info:
        load_targets(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_the_shipped_targets_file_loads() -> None:
    targets = load_targets()
    assert {"connections_used_ratio", "cache_hit_ratio", "longest_transaction_seconds"} <= targets.metric_names()
    assert ("integrity_validation", "no_integrity_violations") in {(c.asset, c.check) for c in targets.checks}


def test_limits_default_to_todays_thresholds_when_the_section_or_a_key_is_absent(tmp_path: Path) -> None:
    path = tmp_path / "targets.yml"
    path.write_text("metrics:\n  - {metric: up, op: '<', threshold: 1}\n")  # a file from before limits: existed
    assert load_targets(path).limits == default_limits() == Limits()
    assert (default_limits().rto_seconds, default_limits().backup_max_age_hours) == (1800.0, 26.0)
    assert (default_limits().wal_max_segments_behind, default_limits().slow_query_mean_ms) == (2, 50.0)
    assert (default_limits().read_avg_ms, default_limits().read_p99_aim_ms, default_limits().write_tps) == (
        50.0, 20.0, 1000.0)
    assert (default_limits().concurrent_users, default_limits().degradation_ratio) == (10000, 1.5)
    assert (default_limits().integrity_violations, default_limits().critical_findings) == (0, 0)
    path.write_text("limits:\n")
    assert load_targets(path).limits == default_limits()


def test_a_limit_in_the_file_overrides_its_default_and_only_its_own(tmp_path: Path) -> None:
    path = tmp_path / "targets.yml"
    path.write_text("limits:\n  rto_seconds: 600\n  slow_query_mean_ms: 12.5\n  concurrent_users: 500\n")
    limits = load_targets(path).limits
    assert (limits.rto_seconds, limits.slow_query_mean_ms, limits.concurrent_users) == (600.0, 12.5, 500)
    assert isinstance(limits.rto_seconds, float) and isinstance(limits.concurrent_users, int)
    assert limits.backup_max_age_hours == 26.0 and limits.degradation_ratio == 1.5
    with pytest.raises(AttributeError):
        limits.rto_seconds = 1.0  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits:\n  rto_secs: 600\n", "unknown key(s) rto_secs — did you mean rto_seconds?"),
        ("limits:\n  slow_query_mean: 20\n", "did you mean slow_query_mean_ms?"),
        ("limits:\n  rto_seconds: -5\n", "limits.rto_seconds: -5 is negative — use 0 or more"),
        ("limits:\n  write_tps: -0.5\n", "limits.write_tps: -0.5 is negative"),
        ("limits:\n  rto_seconds: 30m\n", "limits.rto_seconds: '30m' is not a number — write e.g. rto_seconds:"),
        ("limits:\n  critical_findings: true\n", "limits.critical_findings: True is not a whole number"),
        ("limits:\n  wal_max_segments_behind: 2.5\n", "limits.wal_max_segments_behind: 2.5 is not a whole number"),
        ("limits:\n  read_avg_ms: .inf\n", "limits.read_avg_ms: inf is not a finite number"),
        ("limits:\n  degradation_ratio: 0.9\n", "limits.degradation_ratio: 0.9 is below 1 — use 1 or more"),
        ("limits:\n  concurrent_users: 0\n", "limits.concurrent_users: 0 is below 1"),
        ("limits: [rto_seconds]\n", "limits must be a mapping"),
        ("limit:\n  rto_seconds: 600\n", "unknown key(s) limit — did you mean limits?"),
    ],
)
def test_a_malformed_limit_fails_at_load_time_naming_file_key_and_fix(tmp_path: Path, text: str,
                                                                     message: str) -> None:
    path = tmp_path / "targets.yml"
    path.write_text(text)
    with pytest.raises(TargetsError) as info:
        load_targets(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_the_shipped_limits_are_todays_and_the_backup_age_metric_agrees() -> None:
    targets = load_targets()
    assert targets.limits == default_limits()
    age = next(t for t in targets.metrics if t.metric == "backup_age_seconds")
    assert age.threshold == targets.limits.backup_max_age_hours * 3600


def test_sinks_from_settings_email_webhook_slack_and_log(receiver: Receiver, smtp_receiver: SmtpReceiver,
                                                    tmp_path: Path) -> None:
    env = {
        "DBOPS_ALERT_SLACK_WEBHOOK": receiver.url,
        "DBOPS_ALERT_WEBHOOK_URL": receiver.url + "/json",
        "DBOPS_ALERT_SMTP_HOST": "127.0.0.1",
        "DBOPS_ALERT_SMTP_PORT": str(smtp_receiver.port),
        "DBOPS_ALERT_SMTP_FROM": "dbops@example.org",
        "DBOPS_ALERT_SMTP_TO": "dba@example.org, oncall@example.org",
        "DBOPS_ALERT_LOG_FILE": str(tmp_path / "a.log"),
    }
    sinks = sinks_from_settings(load_settings(env, tmp_path).target().alerts)
    assert [s.name for s in sinks] == ["slack", "webhook", "email", "logfile"]
    engine = AlertEngine(parse_targets(TARGETS))
    result = alert_tick(engine, [Reading("check:integrity_validation/no_integrity_violations", True, 5.0, 1.0,
                                         "asset check integrity_validation/no_integrity_violations failed")], sinks)
    assert [d.ok for d in result.deliveries] == [True] * 4
    assert sorted(b.get("status", "slack") for b in receiver.alerts()) == ["firing", "slack"]
    assert len(smtp_receiver.messages) == 1
    mail = email.message_from_string(smtp_receiver.messages[0], policy=email.policy.default)
    assert mail["Subject"] == "[dbops CRITICAL] asset check integrity_validation/no_integrity_violations failed"
    assert mail["To"] == "dba@example.org, oncall@example.org"
    with pytest.raises(ConfigError, match="DBOPS_ALERT_SMTP_FROM / DBOPS_ALERT_SMTP_TO"):  # checked up front
        sinks_from_settings(load_settings({"DBOPS_ALERT_SMTP_HOST": "127.0.0.1"}, tmp_path).target().alerts)


def test_a_hanging_sink_times_out_without_delaying_the_others(receiver: Receiver) -> None:
    hanging = Receiver(delay=3.0)
    try:
        engine = AlertEngine(parse_targets({**TARGETS, "metrics": [{**TARGETS["metrics"][0], "for": 0}]}))
        sinks = [JsonWebhookSink(hanging.url, name="hanging", timeout=0.5), JsonWebhookSink(receiver.url)]
        started = time.monotonic()
        result = alert_tick(engine, metric_readings(engine.targets, {"connections_used_ratio": 0.9}, 1.0), sinks,
                            retries=2, backoff=0.1)
        elapsed = time.monotonic() - started
    finally:
        hanging.close()
    assert len(receiver.alerts()) == 1
    assert [d.sink for d in result.failed] == ["hanging"] and "timed out" in result.failed[0].error
    assert elapsed < 2.5, elapsed

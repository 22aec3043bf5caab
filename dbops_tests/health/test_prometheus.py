"""Prometheus side: rules valid and unit-tested by promtool, in step with targets.yml; the exporter scraped over real
HTTP against real PostgreSQL; lifecycle figures read from a Dagster instance; the CLI commands."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from prometheus_client import start_http_server

from dbops.health.cli import alerts_main, metrics_main
from dbops.health.exporter import build_registry
from dbops.health.lifecycle import lifecycle_figures
from dbops.health.rules import main as rules_main
from dbops.health.rules import prometheus_rules, render_rule_tests, render_rules
from dbops.health.targets import load_targets, parse_targets
from dbops.pg.server import free_port
from dbops.programs import run_command
from dbops.settings import load_settings

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def _committed_rules() -> list[dict[str, Any]]:
    return yaml.safe_load((MONITORING / "prometheus-rules.yml").read_text())["groups"][0]["rules"]


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    targets = load_targets(MONITORING / "targets.yml")
    checked = run_command(["promtool", "check", "rules", MONITORING / "prometheus-rules.yml"], timeout=60)
    assert f"SUCCESS: {len(targets.metrics) + len(targets.checks) + 1} rules found" in checked.stdout
    tested = run_command(["promtool", "test", "rules", MONITORING / "prometheus-rules.test.yml"], timeout=120)
    assert "SUCCESS" in tested.stdout + tested.stderr
    tests = yaml.safe_load((MONITORING / "prometheus-rules.test.yml").read_text())["tests"]
    tested_alerts = {case["alertname"] for group in tests for case in group["alert_rule_test"]}
    assert tested_alerts == {rule["alert"] for rule in _committed_rules()}
    fired = {alert["exp_labels"].get("dbops_target", "exporter") for group in tests
             for case in group["alert_rule_test"] for alert in case["exp_alerts"]}
    assert fired == {*targets.by_key(), "exporter"}, "every rule is seen firing in a unit test"


_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(prometheus_duration: str) -> float:
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", prometheus_duration)
    assert "".join(n + u for n, u in parts) == prometheus_duration, prometheus_duration
    return sum(int(n) * _SECONDS[u] for n, u in parts)


def test_rules_use_the_thresholds_of_the_targets_file() -> None:
    targets = load_targets(MONITORING / "targets.yml")
    by_target = {r["labels"]["dbops_target"]: r for r in _committed_rules() if "dbops_target" in r["labels"]}
    for target in targets.metrics:
        rule = by_target.pop(target.key, None)
        assert rule is not None, f"no Prometheus rule for {target.key}"
        metric, op, threshold = rule["expr"].split(" ")
        assert (metric, op) == (f"dbops_{target.metric}", target.op), target.key
        assert float(threshold) == target.threshold, f"{target.key}: {threshold} is not exactly the threshold"
        assert rule["labels"]["severity"] == target.severity
        assert _seconds(rule.get("for", "0s")) == target.for_seconds, target.key
        direction = "High" if target.op in (">", ">=") else "Low"
        words = "".join(w.capitalize() for w in target.metric.split("_"))
        assert rule["alert"] == ("DbopsDatabaseDown" if target.metric == "up" else f"Dbops{words}{direction}")
    for check in targets.checks:
        rule = by_target.pop(check.key, None)
        assert rule is not None, f"no Prometheus rule for {check.key}"
        assert rule["expr"] == f'dbops_asset_check_passed{{asset="{check.asset}",check="{check.check}"}} == 0'
        assert rule["alert"] == "DbopsCheck" + "".join(w.capitalize() for w in check.check.split("_"))
        assert rule["labels"]["severity"] == check.severity
        assert _seconds(rule.get("for", "0s")) == check.for_seconds, check.key
    assert by_target == {}, f"rules without a target: {sorted(by_target)}"
    others = [r["alert"] for r in _committed_rules() if "dbops_target" not in r["labels"]]
    assert others == ["DbopsExporterDown"]
    # the largest threshold is not rounded the way the target key spells it (1.07374e+09)
    slot = next(r for r in _committed_rules() if r["alert"] == "DbopsReplicationSlotRetainedBytesHigh")
    assert slot["expr"] == "dbops_replication_slot_retained_bytes > 1073741824"
    assert slot["labels"]["dbops_target"] == "metric:replication_slot_retained_bytes>1.07374e+09"


def test_the_committed_rules_and_unit_tests_are_generated_from_the_targets_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    targets = load_targets(MONITORING / "targets.yml")
    assert (MONITORING / "prometheus-rules.yml").read_text() == render_rules(targets)
    assert (MONITORING / "prometheus-rules.test.yml").read_text() == render_rule_tests(targets)
    assert rules_main(["--check"]) == 0
    capsys.readouterr()
    # a targets file that changed: --check names the stale file in one line and writes nothing
    changed = tmp_path / "targets.yml"
    changed.write_text((MONITORING / "targets.yml").read_text().replace("threshold: 0.80", "threshold: 0.85"))
    out = tmp_path / "out"
    out.mkdir()
    for name in ("prometheus-rules.yml", "prometheus-rules.test.yml"):
        (out / name).write_text((MONITORING / name).read_text())
    assert rules_main(["--check", "--targets", str(changed), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(out / "prometheus-rules.yml") in err, err
    assert (out / "prometheus-rules.yml").read_text() == (MONITORING / "prometheus-rules.yml").read_text()
    assert rules_main(["--targets", str(changed), "--output-dir", str(out),
                       "--runbook-base", "https://git.example.com/dba/dbops/-/blob/main/docs/runbooks/"]) == 0
    assert rules_main(["--check", "--targets", str(changed), "--output-dir", str(out),
                       "--runbook-base", "https://git.example.com/dba/dbops/-/blob/main/docs/runbooks/"]) == 0
    written = yaml.safe_load((out / "prometheus-rules.yml").read_text())["groups"][0]["rules"]
    conn = next(r for r in written if r["alert"] == "DbopsConnectionsUsedRatioHigh")
    assert conn["expr"] == "dbops_connections_used_ratio > 0.85"
    assert conn["annotations"]["runbook_url"] == \
        "https://git.example.com/dba/dbops/-/blob/main/docs/runbooks/DbopsConnectionsUsedRatioHigh.md"


def test_the_unit_tests_fail_a_rule_that_drifts_from_its_target(tmp_path: Path) -> None:
    """The generated promtool tests judge the rules: a rule off by a little (threshold, rounding, `for`) fails."""
    targets = parse_targets({"metrics": [
        {"metric": "connections_used_ratio", "op": ">", "threshold": 0.8, "for": "2m", "severity": "critical"},
        {"metric": "replication_slot_retained_bytes", "op": ">", "threshold": 1073741824, "for": "5m"},
        {"metric": "autovacuum_workers_busy_ratio", "op": ">=", "threshold": 1, "for": "30m"},
    ], "checks": [{"asset": "logical_backup", "check": "backup_fresh", "severity": "critical"}]})
    (tmp_path / "prometheus-rules.test.yml").write_text(render_rule_tests(targets))

    def promtool_with(change: Callable[[list[dict[str, Any]]], object]) -> str:
        document = prometheus_rules(targets)
        change(document["groups"][0]["rules"])
        (tmp_path / "prometheus-rules.yml").write_text(yaml.safe_dump(document, sort_keys=False))
        done = run_command(["promtool", "test", "rules", tmp_path / "prometheus-rules.test.yml"], timeout=60,
                           check=False)
        return ("SUCCESS\n" if done.returncode == 0 else "FAILED\n") + done.stdout + done.stderr

    def rule(rules: list[dict[str, Any]], name: str) -> dict[str, Any]:
        return next(r for r in rules if r["alert"] == name)

    assert promtool_with(lambda rules: None).startswith("SUCCESS")
    changes: list[tuple[str, Callable[[list[dict[str, Any]]], object]]] = [
        ("DbopsConnectionsUsedRatioHigh", lambda rules: rule(rules, "DbopsConnectionsUsedRatioHigh").update(
            expr="dbops_connections_used_ratio > 0.81")),
        # no `for`: it fires before its time
        ("DbopsConnectionsUsedRatioHigh", lambda rules: rule(rules, "DbopsConnectionsUsedRatioHigh").pop("for")),
        # the threshold as the target key rounds it (1.07374e+09): the planted 1073741824 itself would fire
        ("DbopsReplicationSlotRetainedBytesHigh", lambda rules: rule(
            rules, "DbopsReplicationSlotRetainedBytesHigh").update(
            expr="dbops_replication_slot_retained_bytes > 1.07374e+09")),
        # > where the target says >=
        ("DbopsAutovacuumWorkersBusyRatioHigh", lambda rules: rule(
            rules, "DbopsAutovacuumWorkersBusyRatioHigh").update(expr="dbops_autovacuum_workers_busy_ratio > 1")),
        # a check rule that forgot its asset
        ("DbopsCheckBackupFresh", lambda rules: rule(rules, "DbopsCheckBackupFresh").update(
            expr='dbops_asset_check_passed{check="backup_fresh"} == 0')),
    ]
    for alert, change in changes:
        result = promtool_with(change)
        assert result.startswith("FAILED") and alert in result, (alert, result[:2000])


def test_every_rule_links_a_runbook_that_exists() -> None:
    missing = []
    for rule in _committed_rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbooks/{rule['alert']}.md"
        if not (MONITORING.parent / url).is_file():
            missing.append(url)
    assert not missing, f"runbooks missing: {sorted(set(missing))}"


def test_grafana_dashboard_plots_exported_metrics() -> None:
    import json

    from dbops.health.metrics import METRICS

    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = set(re.findall(r"\b(pg_up|dbops_[a-z_]+)\b", " ".join(exprs)))
    known = {"pg_up", "dbops_backup_age_seconds", "dbops_asset_metadata", "dbops_asset_check_passed",
             "dbops_asset_last_materialization_timestamp_seconds", "dbops_lifecycle_up"}
    known |= {f"dbops_{m}" for m in METRICS}
    assert names and names <= known, names - known
    assert {"dbops_connections_used_ratio", "dbops_cache_hit_ratio", "dbops_backup_age_seconds"} <= names


def test_exporter_serves_health_and_lifecycle_figures_over_http(fresh_db: str) -> None:
    instance = dg.DagsterInstance.ephemeral()

    @dg.asset(key=["dbops", "logical_backup"])  # the default target's, as the component keys it
    def logical_backup() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"size_bytes": 12345, "duration_s": 1.5, "format": "custom"})

    dg.materialize([logical_backup], instance=instance)
    targets = load_targets(MONITORING / "targets.yml")
    registry = build_registry(fresh_db, lambda: lifecycle_figures(instance, targets.checks, target="dbops"))
    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry)
    try:
        scrapes = [urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
                   for _ in range(2)]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        instance.dispose()
    text = scrapes[1]
    assert "pg_up 1.0" in text
    for name in ("dbops_connections_used_ratio", "dbops_cache_hit_ratio", "dbops_commits_per_second",
                 "dbops_wraparound_age", "dbops_database_size_bytes"):
        assert re.search(rf"^{name} [0-9.e+-]+$", text, re.M), name
    assert "dbops_commits_per_second" not in scrapes[0]  # a rate needs two scrapes
    age = float(re.search(r"^dbops_backup_age_seconds (\S+)$", text, re.M)[1])  # type: ignore[index]
    assert 0 <= age < 120
    assert 'dbops_asset_metadata{asset="logical_backup",key="size_bytes"} 12345.0' in text
    assert 'key="format"' not in text


def test_cli_show_and_alerts_test(fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings({"DBOPS_DATABASE_URL": fresh_db, "DBOPS_HOME": str(tmp_path),
                              "DBOPS_ALERT_LOG_FILE": str(tmp_path / "alerts.log")})
    assert metrics_main(["--no-lifecycle", "show"], settings) == 0
    out = capsys.readouterr().out
    assert "pg_up 1.0" in out and "dbops_max_connections" in out
    assert alerts_main(["--no-lifecycle", "test", "--send"], settings) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "connections_used_ratio > 0.8" in out and "sink logfile: delivered" in out
    assert password_free(out, fresh_db)
    assert "test alert" in (tmp_path / "alerts.log").read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text("metrics:\n  - {metric: up, op: '<', threshold: one}\n")
    with pytest.raises(Exception, match="threshold 'one' is not a number"):
        alerts_main(["--no-lifecycle", "test", "--targets", str(bad)], settings)


def password_free(text: str, url: str) -> bool:
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    return not password or password not in text

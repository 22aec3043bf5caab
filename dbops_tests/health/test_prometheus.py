"""Prometheus side: rules valid and unit-tested by promtool, in step with targets.yml; the exporter scraped over real
HTTP against real PostgreSQL; lifecycle figures read from a Dagster instance; the CLI commands."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml
from prometheus_client import start_http_server

from dbops.health.cli import alerts_main, metrics_main
from dbops.health.exporter import build_registry
from dbops.health.lifecycle import lifecycle_figures
from dbops.health.targets import load_targets
from dbops.pg.server import free_port
from dbops.programs import run_command
from dbops.settings import load_settings

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    checked = run_command(["promtool", "check", "rules", MONITORING / "prometheus-rules.yml"], timeout=60)
    assert "SUCCESS" in checked.stdout
    tested = run_command(["promtool", "test", "rules", MONITORING / "prometheus-rules.test.yml"], timeout=60)
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_rules_use_the_thresholds_of_the_targets_file() -> None:
    targets = load_targets(MONITORING / "targets.yml")
    rules = yaml.safe_load((MONITORING / "prometheus-rules.yml").read_text())["groups"][0]["rules"]
    by_target = {r["labels"]["dbops_target"]: r for r in rules if "dbops_target" in r.get("labels", {})}
    for target in targets.metrics:
        rule = by_target.pop(target.key, None)
        assert rule is not None, f"no Prometheus rule for {target.key}"
        assert rule["expr"] == f"dbops_{target.metric} {target.op} {target.threshold:g}"
        assert rule["labels"]["severity"] == target.severity
        seconds = {"s": 1, "m": 60, "h": 3600}
        raw = rule.get("for", "0s")
        assert int(raw[:-1]) * seconds[raw[-1]] == target.for_seconds, target.key
    for severity in ("critical", "warning"):
        rule = by_target.pop(f"checks:{severity}")
        listed = set(re.search(r'check=~"([^"]*)"', rule["expr"])[1].split("|"))  # type: ignore[index]
        assert listed == {c.check for c in targets.checks if c.severity == severity}
    assert by_target == {}, f"rules without a target: {sorted(by_target)}"


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

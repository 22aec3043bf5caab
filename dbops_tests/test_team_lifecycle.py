"""The whole lifecycle, as `make demo` runs it (dbops.demo.run_target), on each team database dbops did not create:
migrate (baseline on migrate, then the team's own migration), catalog and drift, profile and index advice, the load
test on the team's own scripts, logical backup, restore drill, integrity validation (30 daily partitions, the
dimension tables, amcheck) and the security audit. Every run succeeds; every check passes, or is a WARN that says
why; the step x check table is printed (``pytest -s``) for the closing note."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.keys import generate_key
from dbops.components.target import fleet_defs
from dbops.demo import integrity_window, run_target
from dbops.settings import load_settings
from dbops_tests.foreign import ForeignSchema

URL_ENV, KEY_ENV = "TEAM_DATABASE_URL", "TEAM_BACKUP_KEY"
SMALL_LOAD_TEST = {"profile": "own", "ramp": [2, 8], "duration_s": 3, "think_time_s": 0.0, "warmup_s": 1,
                   "capacity_profile": "own", "capacity_users": 2, "capacity_duration_s": 3, "pooler": "direct"}
# Flaws the team databases really have (dbops_tests/foreign), which these WARN checks must report; every other check
# must PASS, except those in MAY_FAIL.
MUST_WARN = {
    "security_audit:no_high_findings": "SEC016: a SECURITY DEFINER function whose search_path does not end in pg_temp",
    "index_advice:no_unindexed_foreign_keys": "foreign keys without a covering index (lending.loans.book_id, ...)",
    "materialized_views:materialized_views_fresh": "nothing checked: the team schemas have no materialized view",
    "log_report:log_errors_under_target": "nothing checked: no server log to read (a server of its own logging to "
                                          "stderr, and no logs.path)",
    "migration_rehearsal:rehearsal_safe": "nothing rehearsed: the first migrate runs before the first backup",
}
# ... and those only one of them has.
MUST_WARN_IN = {
    "telemetry": {"partition_maintenance:default_partition_empty":
                  "nothing checked: iot.readings has no DEFAULT partition (no table has one)"},
}
MAY_FAIL = {
    "load_test:degradation_within_bound": "a 3 s ramp from 2 to 8 users without think time on a shared 2-core machine "
                                          "is no degradation measurement (bench/loadtest.py measures it)",
}


def _config(schema: ForeignSchema, tmp_path: Path) -> Path:
    config = {"home": str(tmp_path / "home"), "targets": {schema.name: {
        "url_env": URL_ENV, "schemas": list(schema.schemas), "migrations": str(schema.migrations),
        "migrate": {"default_schema": schema.default_schema, "baseline_on_migrate": True,
                    "baseline_version": schema.baseline_version, "placeholders": dict(schema.placeholders)},
        "loadtest": {"workloads": str(schema.workloads)},
        "backup": {"key_env": KEY_ENV},
    }}}
    path = tmp_path / "dbops.yaml"
    path.write_text(json.dumps(config))
    return path


def test_the_whole_lifecycle_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    schema, url = foreign_db
    monkeypatch.setenv("DBOPS_CONFIG", str(_config(schema, tmp_path)))
    monkeypatch.setenv(URL_ENV, url)
    monkeypatch.setenv(KEY_ENV, generate_key())
    for name in ("DBOPS_HOME", "DBOPS_DATABASE_URL", "DBOPS_TARGET", "DBOPS_MIGRATIONS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    target = settings.target(schema.name)
    defs = fleet_defs(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        failures = run_target(defs, instance, settings, target, load_test=SMALL_LOAD_TEST)
        out = capsys.readouterr().out
        assert failures == 0, out
        assert "nothing seeded" in out

        materialized = {}
        for key in defs.resolve_asset_graph().get_all_asset_keys():
            if key.path[0] != schema.name:
                continue
            record = instance.get_latest_materialization_event(key)
            materialized[key.path[-1]] = record is not None
        observed_only = {"database_health", "alerts"}  # observed by their sensors, never materialized
        physical = {"base_backup", "wal_archive"}  # an external target's backups are logical
        assert {k for k, done in materialized.items() if not done} == observed_only | physical, materialized

        outcomes: dict[str, str] = {}
        for key in defs.resolve_asset_graph().asset_check_keys:
            if key.asset_key.path[0] != schema.name:
                continue
            records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
            if not records or records[0].event is None:
                continue
            evaluation = records[0].event.dagster_event.event_specific_data  # type: ignore[union-attr]
            name = f"{key.asset_key.path[-1]}:{key.name}"
            severity = evaluation.severity.value if not evaluation.passed else "PASS"
            reason = evaluation.metadata.get("reason")
            detail = reason.value if reason is not None else "" if evaluation.passed else ", ".join(
                f"{k}={v.value}" for k, v in evaluation.metadata.items())
            outcomes[name] = severity + (f" ({str(detail)[:300]})" if detail else "")

    first, last = integrity_window(defs, schema.name)
    with capsys.disabled():
        print(f"\n{schema.name}: integrity {first}..{last}")
        for name, outcome in sorted(outcomes.items()):
            print(f"  {name:60s} {outcome}")
    must_warn = MUST_WARN | MUST_WARN_IN.get(schema.name, {})
    bad = {n: o for n, o in outcomes.items() if not o.startswith("PASS") and n not in MAY_FAIL | must_warn}
    assert bad == {}, outcomes
    assert {n: outcomes.get(n, "")[:4] for n in must_warn} == dict.fromkeys(must_warn, "WARN"), outcomes
    for step in ("schema_migrations:no_pending_migrations", "schema_catalog:no_schema_drift",
                 "restore_drill:drill_data_matches", "restore_drill:drill_rto_under_target",
                 "integrity_validation:no_integrity_violations", "dimension_integrity:no_integrity_violations",
                 "index_integrity:indexes_intact", "security_audit:no_critical_findings",
                 "load_test:no_failed_transactions", "logical_backup:backup_fresh"):
        assert outcomes.get(step, "").startswith("PASS"), (step, outcomes)

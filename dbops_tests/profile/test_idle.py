"""An idle database: no statement ran since the last profile. The hourly query_profile must not crash (it did:
``Param "value" is not a float. Got 0``) and must not pass a check that checked nothing."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.components import profile
from dbops.components.naming import op_name
from dbops.components.resources import DatabaseResource
from dbops.pg.connect import parse_url
from dbops.profile.cli import profile_main
from dbops.settings import load_settings

TARGET = "dbops"


def test_second_profile_of_a_quiet_database(fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DBOPS_MIGRATIONS", str(tmp_path / "migrations"))
    monkeypatch.setenv("DBOPS_DATABASE_URL", fresh_db)
    # dbops' own role is maintenance: its profile and table queries are not the application's traffic
    monkeypatch.setenv("DBOPS_PROFILE_EXCLUDE_ROLES", parse_url(fresh_db).user or "postgres")
    [query_profile, _] = profile.build(TARGET).assets or []
    instance = dg.DagsterInstance.ephemeral()
    resources = {"database": DatabaseResource(url=fresh_db)}
    results = [dg.materialize([query_profile], instance=instance, resources=resources, raise_on_error=False)
               for _ in range(2)]
    for result in results:
        failures = [e.step_failure_data.error.message for e in result.get_step_failure_events()]
        assert result.success, failures
    second = results[1]
    meta = second.asset_materializations_for_node(op_name(TARGET, "query_profile"))[0].metadata
    assert meta["statements"].value == 0 and "dagster/row_count" not in meta
    assert meta["calls"].value == 0
    assert "slowest_10pct_mean_ms" not in meta and "p95_mean_ms" not in meta  # not measured: left out, not 0.0
    assert isinstance(meta["total_time_ms"].value, float) and meta["top_statements"].value.records == []
    assert meta["snapshot"].value.endswith(".pgss.json")  # a path, shown as one
    checks = {e.check_name: e for e in second.get_asset_check_evaluations()}
    slow = checks["slow_queries_under_target"]
    assert not slow.passed and slow.severity == dg.AssetCheckSeverity.WARN
    assert slow.metadata["reason"].value.startswith("nothing checked")
    # the phases were logged as they happened
    logged = [e.user_message for e in instance.all_logs(second.run_id)]
    assert any(m.startswith("profiling: snapshot of pg_stat_statements (delta") for m in logged), logged
    assert any("no statement ran in the period" in m for m in logged)
    assert any(m.startswith("explaining 0 statements") for m in logged)


def test_cli_on_a_quiet_database_says_nothing_checked(fresh_db: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings({"DBOPS_DATABASE_URL": fresh_db, "DBOPS_HOME": str(tmp_path / "home"),
                              "DBOPS_PROFILE_EXCLUDE_ROLES": parse_url(fresh_db).user or "postgres"})
    assert profile_main([], settings) == 3
    out = capsys.readouterr()
    assert "nothing checked: no statement ran" in out.out and "MISSED" not in out.out
    assert "profiling: snapshot of pg_stat_statements" in out.err and "explaining 0 statements" in out.err


def test_no_reads_is_a_warning_not_a_ratio_of_one() -> None:
    from dbops.components.profile.assets import _cache_check

    check = _cache_check(None)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "cache_hit_ratio" not in check.metadata and "no block" in check.metadata["reason"].value
    assert _cache_check(0.5).passed is False and _cache_check(0.995).passed

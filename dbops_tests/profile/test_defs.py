"""The performance group materializes against the planted database; checks report slow queries and FKs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.components import profile
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import DatabaseResource
from dbops_tests.profile.conftest import run_workload

TARGET = "dbops"  # no config file: the one embedded target


def test_group_materializes_with_checks(planted_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DBOPS_MIGRATIONS", str(tmp_path / "migrations"))
    # The target is this external database: the embedded server's tooling roles (postgres...) are not left out.
    monkeypatch.setenv("DBOPS_DATABASE_URL", planted_db)
    run_workload(planted_db, range(1, 21))
    defs = profile.build(TARGET)
    query_profile, index_advice = defs.assets or []
    result = dg.materialize(
        [query_profile, index_advice],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"database": DatabaseResource(url=planted_db)},
        run_config={"ops": {op_name(TARGET, "index_advice"): {"config": {"review_dir": str(tmp_path / "review")}}}},
    )
    assert result.success
    profile_md = result.asset_materializations_for_node(op_name(TARGET, "query_profile"))[0].metadata
    assert profile_md["calls"].value >= 20 and profile_md["slowest_10pct_mean_ms"].value > 0
    advice_md = result.asset_materializations_for_node(op_name(TARGET, "index_advice"))[0].metadata
    assert advice_md["verified"].value == 1 and advice_md["best_speedup"].value > 10
    assert advice_md["duplicate_indexes"].value == 1
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"slow_queries_under_target", "cache_hit_ratio", "no_unindexed_foreign_keys"}
    assert {e.asset_key for e in checks.values()} == {asset_key(TARGET, "query_profile"),
                                                      asset_key(TARGET, "index_advice")}
    # the planted database has no foreign key: nothing checked is a WARN saying so, not a pass
    fk = checks["no_unindexed_foreign_keys"]
    assert not fk.passed and fk.severity == dg.AssetCheckSeverity.WARN
    assert "no foreign key" in fk.metadata["reason"].value
    assert "dagster/row_count" not in profile_md and profile_md["statements"].value >= 1
    top = profile_md["top_statements"].value
    assert {c.name for c in top.schema.columns} >= {"rank", "calls", "mean_ms", "query"}
    assert any("shop.visits" in r.data["query"] for r in top.records)
    advice = advice_md["advice"].value
    assert advice.records[0].data["status"] == "verified" and advice.records[0].data["speedup"] > 10
    migration = advice_md["review_migration/visits_customer_id_idx"]
    assert isinstance(migration, dg.PathMetadataValue) and migration.value.endswith(".sql")
    assert (tmp_path / "review" / "V1__add_index_visits_customer_id_idx.sql").is_file()
    assert [a.key.to_user_string() for a in defs.assets or []] == ["dbops/query_profile", "dbops/index_advice"]
    # the slowest 10 % here is the 200k-row INSERT of the fixture: the check must say so
    assert not checks["slow_queries_under_target"].passed

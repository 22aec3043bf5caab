"""The advisor on real PostgreSQL: a planted missing index is named, verified (>10x) and written for review."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.pg.connect import connection
from dbops.profile.advise import advise
from dbops.profile.indexes import index_findings, unindexed_foreign_keys
from dbops.profile.statements import SnapshotStore, StatsNotLoaded, profile
from dbops_tests.conftest import start_test_server, stop_test_server
from dbops_tests.profile.conftest import run_workload


def test_planted_missing_index_is_named_verified_and_written(planted_db: str, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots", "planted")
    with connection(planted_db) as conn:
        profile(conn, store)  # baseline snapshot
    run_workload(planted_db, range(1, 41))
    with connection(planted_db) as conn:
        prof = profile(conn, store)
    assert any("shop.visits" in s.query and s.calls == 40 for s in prof.top), [s.query for s in prof.top]

    report = advise(planted_db, prof, review_dir=tmp_path / "review", migrations_dir=tmp_path / "none")
    assert [a.candidate.describe() for a in report.advice] == ["shop.visits (customer_id)"]
    best = report.verified[0]
    assert best.measurement is not None and best.measurement.speedup > 10, best.measurement
    assert best.measurement.index_bytes > 0
    print(f"\nmeasured: {best.measurement}")
    files = sorted((tmp_path / "review").glob("*.sql"))
    assert [f.name for f in files] == ["V1__add_index_visits_customer_id_idx.sql"]
    text = files[0].read_text()
    assert text.startswith("-- dbops:no-transaction\n")
    expected = 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "visits_customer_id_idx" ON "shop"."visits" ("customer_id");'
    assert expected in text
    with connection(planted_db) as conn:  # never applied to the target
        assert conn.execute("SELECT to_regclass('shop.visits_customer_id_idx')").fetchone()[0] is None

    kinds = {(f.kind, f.index) for f in report.findings}
    assert ("duplicate", "shop.visits_page_again_idx") in kinds
    assert ("unused", "shop.visits_visited_at_idx") in kinds
    assert not [f for f in report.findings if f.kind == "unindexed_fk"]


def test_profile_reports_deltas_and_survives_a_reset(planted_db: str, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "planted")
    with connection(planted_db) as conn:
        profile(conn, store)
    run_workload(planted_db, range(1, 6))
    with connection(planted_db) as conn:
        first = profile(conn, store)
    run_workload(planted_db, range(1, 4))
    with connection(planted_db) as conn:
        second = profile(conn, store)
        conn.execute("SELECT pg_stat_statements_reset()")
    run_workload(planted_db, range(1, 3))
    with connection(planted_db) as conn:
        third = profile(conn, store)

    def calls(p) -> int:  # noqa: ANN001
        return sum(s.calls for s in p.top if "shop.visits" in s.query)

    assert (calls(first), calls(second), calls(third)) == (5, 3, 2)
    assert not second.stats_reset and third.stats_reset
    assert first.slowest_10pct_mean_ms > 0 and first.p95_mean_ms > 0


def test_reference_schema_has_no_false_missing_fk_index(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        assert unindexed_foreign_keys(conn) == []
        conn.execute("CREATE TABLE app.notes (id int PRIMARY KEY, tenant_id bigint REFERENCES app.tenants (id))")
        missing = unindexed_foreign_keys(conn)
        assert [(f.table, f.kind) for f in missing] == [("app.notes", "unindexed_fk")]
        assert not [f for f in index_findings(conn) if f.kind in ("duplicate", "redundant")]


def test_not_loaded_gives_the_setting_to_change() -> None:
    server = start_test_server(shared_preload_libraries="''")
    try:
        with connection(server.url("postgres")) as conn, pytest.raises(StatsNotLoaded) as err:
            profile(conn, None)
        assert "shared_preload_libraries" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        stop_test_server(server)

"""On the seeded reference schema: drop one index the workload needs; the advisor names exactly that index."""

from __future__ import annotations

from pathlib import Path

from dbops.pg.connect import connection
from dbops.profile.advise import advise
from dbops.profile.statements import SnapshotStore, profile
from dbops.seed import seed


def test_seeded_schema_with_a_planted_missing_index(migrated_db: str, tmp_path: Path) -> None:
    seed(migrated_db, 1)
    with connection(migrated_db) as conn:
        conn.execute("DROP INDEX app.order_items_product_idx")
        conn.execute("ANALYZE app.order_items")
        pairs = conn.execute("SELECT DISTINCT tenant_id, product_id FROM app.order_items ORDER BY 1, 2 LIMIT 30")
        pairs = pairs.fetchall()
        store = SnapshotStore(tmp_path, "seeded")
        profile(conn, store)  # the seed's own statements are before this snapshot
        for tenant, product in pairs:  # "which orders contain this product": needs (tenant_id, product_id)
            conn.execute("SELECT order_id, quantity FROM app.order_items WHERE tenant_id = %s AND product_id = %s",
                         (tenant, product)).fetchall()
        conn.execute("SELECT id, status FROM app.orders WHERE tenant_id = %s AND id = %s", (1, 1)).fetchall()
        prof = profile(conn, store)

    report = advise(migrated_db, prof, review_dir=tmp_path / "review")
    assert [a.candidate.describe() for a in report.verified] == ["app.order_items (tenant_id, product_id)"]
    measured = report.verified[0].measurement
    assert measured is not None and measured.speedup > 10, measured
    print(f"\nseeded: {measured}")
    unindexed = [f.detail for f in report.findings if f.kind == "unindexed_fk"]
    assert unindexed == ["foreign key order_items_product_fkey (tenant_id, product_id) has no index"]
    assert report.verified[0].migration is not None and report.verified[0].migration.is_file()

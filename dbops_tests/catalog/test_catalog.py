"""Schema snapshots of the reference schema, their diff, drift against the migrations, and the generated docs."""

from __future__ import annotations

import json

from dbops.catalog.diff import diff
from dbops.catalog.docs import data_dictionary, dbml, mermaid_er
from dbops.catalog.drift import detect_drift
from dbops.catalog.introspect import snapshot
from dbops.pg.connect import connection
from dbops_tests.conftest import MIGRATIONS_DIR, PROJECT_DIR

APP_TABLES = {"app.tenants", "app.users", "app.products", "app.inventory", "app.orders", "app.order_items",
              "app.payments", "app.audit_log", "app.order_keys"}


def test_snapshot_of_the_reference_schema(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        snap = snapshot(conn, ["app"])
    json.dumps(snap)  # storable as is
    assert set(snap["tables"]) == APP_TABLES
    orders = snap["tables"]["app.orders"]
    assert orders["partition_key"] == "RANGE (created_at)" and len(orders["partitions"]) >= 8
    assert orders["force_row_security"] and "tenant_isolation" in orders["policies"]
    assert orders["constraints"]["orders_pkey"]["columns"] == ["tenant_id", "id", "created_at"]
    assert snap["tables"]["app.users"]["triggers"]["users_audit"]["enabled"]
    assert snap["views"]["app.daily_sales"]["kind"] == "materialized view"
    assert "daily_sales_tenant_day_key" in snap["views"]["app.daily_sales"]["indexes"]
    assert "app.ensure_monthly_partitions(from_date date, to_date date)" in snap["functions"]


def test_docs_cover_every_table_and_the_committed_diagram_is_current(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        snap = snapshot(conn, ["app"])
    dictionary, er, schema_dbml = data_dictionary(snap), mermaid_er(snap), dbml(snap)
    for table in APP_TABLES:
        assert f"## `{table}`" in dictionary
        assert f"    {table.replace('.', '_')} {{" in er
        assert f'Table "{table}"' in schema_dbml
    assert 'app_orders ||--o{ app_order_items : "tenant_id,order_id,order_created_at"' in er
    assert 'Ref: "app.order_items".(tenant_id, product_id) > "app.products".(tenant_id, id)' in schema_dbml
    committed = (PROJECT_DIR / "docs" / "data-model.md").read_text()
    block = committed.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block == er, "docs/data-model.md's diagram is stale: regenerate it with dbops.catalog.docs.mermaid_er"


def test_diff_reports_added_removed_and_changed_objects(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        before = snapshot(conn, ["app"])
        conn.execute("CREATE INDEX orders_status_idx ON app.orders (status)")
        conn.execute("ALTER TABLE app.products ADD COLUMN weight_kg numeric(8, 3)")
        conn.execute("ALTER TABLE app.users ALTER COLUMN full_name DROP NOT NULL")
        conn.execute("DROP POLICY tenant_isolation ON app.payments")
        after = snapshot(conn, ["app"])
    changes = {str(c) for c in diff(before, after)}
    assert "added index app.orders.orders_status_idx: CREATE INDEX orders_status_idx ON ONLY app.orders USING btree " \
           "(status)" in changes
    assert "added column app.products.weight_kg: numeric(8,3)" in changes
    assert "changed column app.users.full_name: not_null True -> False" in changes
    assert any(c.startswith("removed policy app.payments.tenant_isolation") for c in changes)
    assert diff(after, after) == []


def test_drift_finds_a_hand_made_index_and_nothing_on_a_clean_database(migrated_db: str) -> None:
    with connection(migrated_db) as conn:  # dbops' own tool extensions (and their views) are not drift
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    clean = detect_drift(migrated_db, MIGRATIONS_DIR)
    last = max(int(p.name[1:].split("__")[0]) for p in MIGRATIONS_DIR.glob("V*.sql"))
    assert clean.changes == [] and clean.expected_version == str(last)
    with connection(migrated_db) as conn:
        conn.execute("CREATE INDEX by_hand_idx ON app.payments (created_at)")
    report = detect_drift(migrated_db, MIGRATIONS_DIR)
    assert report.drifted
    assert report.lines() == [
        "index app.payments.by_hand_idx only in the live database (CREATE INDEX by_hand_idx ON app.payments "
        "USING btree (created_at))"
    ]
    with connection(migrated_db) as conn:  # the scratch database was dropped
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbops_replay_%'").fetchone()[0] == 0

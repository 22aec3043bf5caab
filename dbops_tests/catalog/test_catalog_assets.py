"""A target's catalog group in Dagster: schema_catalog reports changes between runs, no_schema_drift fails on
drift."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dbops.components.catalog.assets import build_schema_catalog
from dbops.components.catalog.checks import build_no_schema_drift
from dbops.components.catalog.resources import CatalogResource
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import DatabaseResource, MigrationsResource
from dbops.pg.connect import connection
from dbops_tests.catalog.test_catalog import APP_TABLES
from dbops_tests.conftest import MIGRATIONS_DIR

TARGET = "dbops"  # no config file: the one embedded target
schema_catalog, no_schema_drift = build_schema_catalog(TARGET), build_no_schema_drift(TARGET)


def run_catalog(url: str, out: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [schema_catalog, no_schema_drift],
        resources={
            "database": DatabaseResource(url=url),
            "migrations": MigrationsResource(locations=str(MIGRATIONS_DIR)),
            "catalog": CatalogResource(output_dir=str(out), schemas=["app"]),
        },
        raise_on_error=False,
    )


def test_catalog_asset_snapshots_documents_and_detects_drift(migrated_db: str, tmp_path: Path) -> None:
    first = run_catalog(migrated_db, tmp_path)
    assert first.success
    meta = first.asset_materializations_for_node(op_name(TARGET, "schema_catalog"))[0].metadata
    assert meta["tables"].value == len(APP_TABLES) and meta["changes"].value == "first snapshot"
    columns = {c.name for c in meta["dagster/column_schema"].schema.columns}
    assert {"app.orders.total", "app.users.password_hash", "app.daily_sales.revenue"} <= columns
    evaluation = first.get_asset_check_evaluations()[0]
    assert evaluation.check_name == "no_schema_drift" and evaluation.passed
    assert evaluation.asset_key == asset_key(TARGET, "schema_catalog")
    folder = tmp_path / migrated_db.rsplit("/", 1)[1]
    assert {p.name for p in folder.iterdir()} >= {"snapshot.json", "data-dictionary.md", "er-diagram.md",
                                                   "schema.dbml"}

    with connection(migrated_db) as conn:
        conn.execute("CREATE INDEX orders_by_hand_idx ON app.orders (currency)")
    second = run_catalog(migrated_db, tmp_path)
    meta = second.asset_materializations_for_node(op_name(TARGET, "schema_catalog"))[0].metadata
    assert meta["changes_added"].value == 1 and "orders_by_hand_idx" in meta["changes"].value
    evaluation = second.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "index app.orders.orders_by_hand_idx only in the live database" in evaluation.metadata["drift"].value
    assert (folder / "snapshot.previous.json").exists()

"""A team database's target in Dagster: schema_migrations honours its migrate settings, and no_schema_drift on the
baselined database compares with the schema the baseline adopted (WARN, with the reason, without that record)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg
import pytest

from dbops.components.catalog.assets import build_schema_catalog
from dbops.components.catalog.checks import build_no_schema_drift
from dbops.components.catalog.resources import CatalogResource
from dbops.components.migrate.assets import build_schema_migrations
from dbops.components.migrate.checks import build_checks
from dbops.components.naming import op_name
from dbops.components.resources import DatabaseResource, MigrationsResource
from dbops_tests.foreign import ForeignSchema
from dbops_tests.migrate.conftest import URL_ENV, write_team_config


def _materialize(schema: ForeignSchema, assets: list) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources={
        "database": DatabaseResource(), "migrations": MigrationsResource(),
        "catalog": CatalogResource(schemas=list(schema.schemas)),
    }, raise_on_error=False)


def test_schema_migrations_and_drift_on_a_baselined_team_database(
        foreign_db: tuple[ForeignSchema, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schema, url = foreign_db
    config = write_team_config(schema, tmp_path, baseline_on_migrate=True)
    monkeypatch.setenv("DBOPS_CONFIG", str(config))
    monkeypatch.setenv(URL_ENV, url)
    monkeypatch.delenv("DBOPS_HOME", raising=False)
    target = schema.name
    migrate = [build_schema_migrations(target), *build_checks(target)]
    catalog = [build_schema_catalog(target), build_no_schema_drift(target)]

    migrated = _materialize(schema, migrate)
    assert migrated.success
    meta = migrated.asset_materializations_for_node(op_name(target, "schema_migrations"))[0].metadata
    assert meta["current_version"].value == schema.next_version and meta["applied_count"].value == 1
    assert meta["baselined_at"].value == schema.baseline_version
    checks = {e.check_name: e for e in migrated.get_asset_check_evaluations()}
    assert checks["migration_history_valid"].passed and checks["no_pending_migrations"].passed
    assert checks["migrations_lint"].metadata["errors"].value == 0
    assert (tmp_path / "home" / "migrate" / target / "baseline.sql").is_file()

    clean = _materialize(schema, catalog).get_asset_check_evaluations()[0]
    assert clean.check_name == "no_schema_drift" and clean.passed, clean.metadata
    assert clean.metadata["baseline"].value == schema.baseline_version

    table = f"{schema.default_schema}.{'members' if target == 'library' else 'devices'}"
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE INDEX by_hand_idx ON {table} (id)")
    drifted = _materialize(schema, catalog).get_asset_check_evaluations()[0]
    assert not drifted.passed and drifted.severity == dg.AssetCheckSeverity.ERROR
    assert f"index {table}.by_hand_idx only in the live database" in drifted.metadata["drift"].value

    (tmp_path / "home" / "migrate" / target / "baseline.json").unlink()  # as if baselined on another machine
    unknown = _materialize(schema, catalog).get_asset_check_evaluations()[0]
    assert not unknown.passed and unknown.severity == dg.AssetCheckSeverity.WARN
    assert "no record of the schema that baseline adopted" in unknown.metadata["reason"].value

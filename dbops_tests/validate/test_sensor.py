"""A migration applied after the last validation makes the sensor request one run over the last 30 validation days;
one applied before it (the first install, validated right after) does not."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from dbops.components import validate
from dbops.components.migrate.assets import build_schema_migrations
from dbops.components.naming import asset_key, def_name, op_name
from dbops.components.resources import DatabaseResource, MigrationsResource
from dbops.components.validate.assets import build as build_assets
from dbops.components.validate.resources import backfill_days, daily_partitions
from dbops.components.validate.sensors import backfill_request
from dbops.errors import ConfigError
from dbops.runner import PARTITION_RANGE_END, PARTITION_RANGE_START
from dbops_tests.conftest import MIGRATIONS_DIR

TARGET = "dbops"


def tick(instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None) -> dg.SensorExecutionData:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return defs.resolve_sensor_def(def_name(TARGET, "revalidate_after_migration")).evaluate_tick(context)


def sensor_defs(fresh_db: str, tmp_path: Path) -> tuple[Path, dict, dg.AssetsDefinition, dg.AssetsDefinition,
                                                        dg.Definitions]:
    """(a copy of the reference migrations, the resources, schema_migrations, integrity_validation, the definitions)."""
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    resources = {
        "database": DatabaseResource(url=fresh_db),
        "migrations": MigrationsResource(locations=str(migrations)),
    }
    schema_migrations = build_schema_migrations(TARGET)
    integrity_validation = build_assets(TARGET)[0]
    defs = dg.Definitions.merge(validate.build(TARGET), dg.Definitions(assets=[schema_migrations], resources=resources))
    return migrations, resources, schema_migrations, integrity_validation, defs


def add_column(migrations: Path) -> None:
    (migrations / "V9999__validation_test_add_column.sql").write_text(
        "ALTER TABLE app.orders ADD COLUMN coupon text;\n", encoding="utf-8"
    )


def assert_backfill(request: dg.RunRequest) -> None:
    assert request.asset_selection == [
        asset_key(TARGET, "integrity_validation"),
        asset_key(TARGET, "dimension_integrity"),
    ]
    first, last = request.tags[PARTITION_RANGE_START], request.tags[PARTITION_RANGE_END]
    keys = daily_partitions(TARGET).get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert len(keys) == 30
    assert keys[-1] == yesterday.isoformat() and keys[0] == (yesterday - timedelta(days=29)).isoformat()
    assert request.tags["dbops/reason"] == "schema_migrations" and request.tags["dbops/target"] == TARGET


def test_first_install_validated_afterwards_is_not_a_change(fresh_db: str, tmp_path: Path) -> None:
    """The demo: migrate applies V1..V16, then the validation runs, then the UI opens (the sensor's first tick): no
    backfill. A migration applied after that validation: one run request."""
    migrations, resources, schema_migrations, integrity_validation, defs = sensor_defs(fresh_db, tmp_path)
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with dg.instance_for_test() as instance:
        installed = dg.materialize([schema_migrations], instance=instance, resources=resources)
        applied = installed.asset_materializations_for_node(op_name(TARGET, "schema_migrations"))[0]
        assert applied.metadata["applied_count"].value > 10
        assert dg.materialize([integrity_validation], instance=instance, resources=resources,
                              partition_key=yesterday).success
        first = tick(instance, defs, None)
        assert not first.run_requests and first.cursor
        assert "before the last integrity validation" in (first.skip_message or "")
        assert f"{applied.metadata['applied_count'].value} migration(s) applied" in (first.skip_message or "")
        again = tick(instance, defs, first.cursor)
        assert not again.run_requests and again.skip_message == "no new schema_migrations materialization"

        add_column(migrations)
        assert dg.materialize([schema_migrations], instance=instance, resources=resources).success
        result = tick(instance, defs, again.cursor)
        assert len(result.run_requests) == 1 and result.cursor != again.cursor
        assert_backfill(result.run_requests[0])
        # Its cursor moved on: the same migration does not request a second backfill.
        assert not tick(instance, defs, result.cursor).run_requests


def test_migration_adding_a_column_requests_backfill(fresh_db: str, tmp_path: Path) -> None:
    """Never validated: the applied schema is a change to validate; applying nothing is not."""
    migrations, resources, schema_migrations, _, defs = sensor_defs(fresh_db, tmp_path)
    with dg.instance_for_test() as instance:
        assert not tick(instance, defs, None).run_requests  # no migration materialization yet
        assert dg.materialize([schema_migrations], instance=instance, resources=resources).success
        first = tick(instance, defs, None)
        cursor = first.cursor
        assert cursor and len(first.run_requests or []) == 1  # nothing validated yet: the schema counts as a change

        # Nothing pending: the migration asset runs, applies nothing, and no backfill is requested.
        assert dg.materialize([schema_migrations], instance=instance, resources=resources).success
        idle = tick(instance, defs, cursor)
        assert not idle.run_requests and idle.cursor != cursor
        assert idle.skip_message == "migrations ran but applied nothing"
        cursor = idle.cursor
        assert not tick(instance, defs, cursor).run_requests

        add_column(migrations)
        assert dg.materialize([schema_migrations], instance=instance, resources=resources).success
        result = tick(instance, defs, cursor)

    assert len(result.run_requests) == 1
    assert_backfill(result.run_requests[0])


def test_backfill_days_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_VALIDATION_BACKFILL_DAYS", "7")
    request = backfill_request(TARGET, backfill_days(TARGET))
    assert request is not None
    ranged = dg.PartitionKeyRange(request.tags[PARTITION_RANGE_START], request.tags[PARTITION_RANGE_END])
    assert len(daily_partitions(TARGET).get_partition_keys_in_range(ranged)) == 7
    monkeypatch.setenv("DBOPS_VALIDATION_BACKFILL_DAYS", "zero")
    with pytest.raises(ConfigError, match="DBOPS_VALIDATION_BACKFILL_DAYS: .*got 'zero'"):
        backfill_days(TARGET)

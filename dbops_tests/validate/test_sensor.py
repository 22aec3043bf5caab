"""A migration that changes the schema makes the sensor request one run over the last 30 validation days."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from dbops.components import validate
from dbops.components.migrate.assets import build_schema_migrations
from dbops.components.naming import asset_key, def_name
from dbops.components.resources import DatabaseResource, MigrationsResource
from dbops.components.validate.resources import backfill_days, daily_partitions
from dbops.components.validate.sensors import backfill_request
from dbops.errors import ConfigError
from dbops.runner import PARTITION_RANGE_END, PARTITION_RANGE_START
from dbops_tests.conftest import MIGRATIONS_DIR

TARGET = "dbops"


def tick(instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None) -> dg.SensorExecutionData:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return defs.resolve_sensor_def(def_name(TARGET, "revalidate_after_migration")).evaluate_tick(context)


def test_migration_adding_a_column_requests_backfill(fresh_db: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    resources = {
        "database": DatabaseResource(url=fresh_db),
        "migrations": MigrationsResource(locations=str(migrations)),
    }
    schema_migrations = build_schema_migrations(TARGET)
    defs = dg.Definitions.merge(validate.build(TARGET), dg.Definitions(assets=[schema_migrations], resources=resources))

    with dg.instance_for_test() as instance:
        assert dg.materialize([schema_migrations], instance=instance, resources=resources).success
        first = tick(instance, defs, None)
        cursor = first.cursor
        assert cursor and len(first.run_requests or []) == 1  # the initial schema counts as a change

        # Nothing pending: the migration asset runs, applies nothing, and no backfill is requested.
        assert dg.materialize([schema_migrations], instance=instance, resources=resources).success
        idle = tick(instance, defs, cursor)
        assert not idle.run_requests and idle.cursor != cursor
        cursor = idle.cursor
        assert not tick(instance, defs, cursor).run_requests

        (migrations / "V9999__validation_test_add_column.sql").write_text(
            "ALTER TABLE app.orders ADD COLUMN coupon text;\n", encoding="utf-8"
        )
        assert dg.materialize([schema_migrations], instance=instance, resources=resources).success
        result = tick(instance, defs, cursor)

    assert len(result.run_requests) == 1
    request = result.run_requests[0]
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


def test_backfill_days_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_VALIDATION_BACKFILL_DAYS", "7")
    request = backfill_request(TARGET, backfill_days(TARGET))
    assert request is not None
    ranged = dg.PartitionKeyRange(request.tags[PARTITION_RANGE_START], request.tags[PARTITION_RANGE_END])
    assert len(daily_partitions(TARGET).get_partition_keys_in_range(ranged)) == 7
    monkeypatch.setenv("DBOPS_VALIDATION_BACKFILL_DAYS", "zero")
    with pytest.raises(ConfigError, match="DBOPS_VALIDATION_BACKFILL_DAYS: .*got 'zero'"):
        backfill_days(TARGET)

"""Re-validate recent data after a schema change: a migration can add a constraint NOT VALID, change a type or a
default, and yesterday's rows deserve the same scrutiny as tomorrow's."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from dbops.defs.validate.assets import dimension_integrity, integrity_validation
from dbops.defs.validate.resources import DAILY, backfill_days
from dbops.runner import partition_range_tags

SCHEMA_MIGRATIONS = dg.AssetKey("schema_migrations")


def applied_count(record: dg.EventLogRecord) -> int:
    """How many migrations a ``schema_migrations`` materialization applied (0: nothing changed)."""
    materialization = record.asset_materialization
    value = materialization.metadata.get("applied_count") if materialization else None
    raw = getattr(value, "value", value)
    return int(raw) if isinstance(raw, (int, float)) else 0


def backfill_request(days: int, current_time: float | None = None) -> dg.RunRequest | None:
    """One run over the last ``days`` daily partitions (integrity_validation's BackfillPolicy.single_run) and the
    dimension tables.

    A ranged run, by Dagster's public partition-range tags: requesting a *backfill* from a sensor takes an
    AssetGraphSubset, which Dagster 1.13 keeps private (a public ``RunRequest.for_asset_partition_range`` is proposed
    in dagster-io/dagster#34096). The outcome is the same single run, launched by the sensor instead of the backfill
    daemon.
    """
    now = datetime.fromtimestamp(current_time, UTC) if current_time else None
    keys = DAILY.get_partition_keys(current_time=now)[-days:]
    if not keys:
        return None
    return dg.RunRequest(
        asset_selection=[integrity_validation.key, dimension_integrity.key],
        tags={**partition_range_tags(keys[0], keys[-1]), "dbops/reason": "schema_migrations",
              "dbops/partitions": f"{keys[0]}...{keys[-1]}"},
    )


@dg.sensor(
    asset_selection=[integrity_validation, dimension_integrity],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After schema_migrations applies a migration, backfills integrity_validation over the last "
    "DBOPS_VALIDATION_BACKFILL_DAYS days (30 by default) and re-validates the dimension tables.",
)
def revalidate_after_migration(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor) if context.cursor else None
    if after is None:
        # First evaluation: start from the newest materialization, do not replay history.
        latest = context.instance.fetch_materializations(SCHEMA_MIGRATIONS, limit=1)
        cursor = str(latest.records[0].storage_id) if latest.records else "0"
        if not latest.records or applied_count(latest.records[0]) == 0:
            return dg.SensorResult(skip_reason="no schema change yet", cursor=cursor)
        records = latest.records
    else:
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SCHEMA_MIGRATIONS, after_storage_id=after), limit=100, ascending=True
        )
        records = result.records
        if not records:
            return dg.SkipReason("no new schema_migrations materialization")
        cursor = str(records[-1].storage_id)
    applied = sum(applied_count(r) for r in records)
    if applied == 0:
        return dg.SensorResult(skip_reason="migrations ran but applied nothing", cursor=cursor)
    request = backfill_request(backfill_days())
    if request is None:
        return dg.SensorResult(skip_reason="no partitions to validate yet", cursor=cursor)
    context.log.info(f"{applied} migration(s) applied: backfilling the last {backfill_days()} partitions")
    return dg.SensorResult(run_requests=[request], cursor=cursor)

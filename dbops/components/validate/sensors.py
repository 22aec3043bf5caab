"""Re-validate recent data after a schema change: a migration can add a constraint NOT VALID, change a type or a
default, and yesterday's rows deserve the same scrutiny as tomorrow's."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from dbops.components.naming import asset_key, def_name
from dbops.components.validate.resources import backfill_days, daily_partitions
from dbops.runner import partition_range_tags


def applied_count(record: dg.EventLogRecord) -> int:
    """How many migrations a ``schema_migrations`` materialization applied (0: nothing changed)."""
    materialization = record.asset_materialization
    value = materialization.metadata.get("applied_count") if materialization else None
    raw = getattr(value, "value", value)
    return int(raw) if isinstance(raw, (int, float)) else 0


def backfill_request(target: str, days: int, current_time: float | None = None) -> dg.RunRequest | None:
    """One run over ``target``'s last ``days`` daily partitions (integrity_validation's BackfillPolicy.single_run)
    and its dimension tables.

    A ranged run, by Dagster's public partition-range tags: requesting a *backfill* from a sensor takes an
    AssetGraphSubset, which Dagster 1.13 keeps private (a public ``RunRequest.for_asset_partition_range`` is proposed
    in dagster-io/dagster#34096). The outcome is the same single run, launched by the sensor instead of the backfill
    daemon.
    """
    now = datetime.fromtimestamp(current_time, UTC) if current_time else None
    keys = daily_partitions(target).get_partition_keys(current_time=now)[-days:]
    if not keys:
        return None
    return dg.RunRequest(
        asset_selection=[asset_key(target, "integrity_validation"), asset_key(target, "dimension_integrity")],
        tags={**partition_range_tags(keys[0], keys[-1]), "dbops/reason": "schema_migrations",
              "dbops/target": target, "dbops/partitions": f"{keys[0]}...{keys[-1]}"},
    )


def build_revalidate_after_migration(target: str) -> dg.SensorDefinition:
    migrations = asset_key(target, "schema_migrations")

    @dg.sensor(
        name=def_name(target, "revalidate_after_migration"),
        asset_selection=[asset_key(target, "integrity_validation"), asset_key(target, "dimension_integrity")],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"After {target}/schema_migrations applies a migration, backfills integrity_validation over the "
        "target's last validation.backfill_days days (30 by default) and re-validates the dimension tables.",
    )
    def revalidate_after_migration(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        after = int(context.cursor) if context.cursor else None
        if after is None:
            # First evaluation: start from the newest materialization, do not replay history.
            latest = context.instance.fetch_materializations(migrations, limit=1)
            cursor = str(latest.records[0].storage_id) if latest.records else "0"
            if not latest.records or applied_count(latest.records[0]) == 0:
                return dg.SensorResult(skip_reason="no schema change yet", cursor=cursor)
            records = latest.records
        else:
            result = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=migrations, after_storage_id=after), limit=100, ascending=True
            )
            records = result.records
            if not records:
                return dg.SkipReason("no new schema_migrations materialization")
            cursor = str(records[-1].storage_id)
        applied = sum(applied_count(r) for r in records)
        if applied == 0:
            return dg.SensorResult(skip_reason="migrations ran but applied nothing", cursor=cursor)
        days = backfill_days(target)
        request = backfill_request(target, days)
        if request is None:
            return dg.SensorResult(skip_reason="no partitions to validate yet", cursor=cursor)
        context.log.info(f"{target}: {applied} migration(s) applied: backfilling the last {days} partitions")
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return revalidate_after_migration

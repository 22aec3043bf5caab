"""Re-validate recent data after a schema change: a migration can add a constraint NOT VALID, change a type or a
default, and yesterday's rows deserve the same scrutiny as tomorrow's. Only a migration applied after the last
validation is a change to re-validate for: the first install, validated right after (the demo), is not."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class LastValidation:
    """The latest integrity_validation materialization: when its run started (the schema it saw), and which run."""

    started: float
    run_id: str
    partition: str | None

    def render(self) -> str:
        when = datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds")
        return f"run {self.run_id[:8]} started {when}" + (f", partition {self.partition}" if self.partition else "")


def last_validation(instance: dg.DagsterInstance, target: str) -> LastValidation | None:
    """The latest materialization of ``target``'s integrity_validation, dated by its run's start (a run that started
    before a migration applied validated the old schema, even if it ended after); None: never validated."""
    records = instance.fetch_materializations(asset_key(target, "integrity_validation"), limit=1).records
    if not records:
        return None
    record = records[0]
    run = instance.get_run_record_by_id(record.run_id)
    started = run.start_time if run is not None and run.start_time is not None else record.timestamp
    return LastValidation(started, record.run_id, record.partition_key)


def build_revalidate_after_migration(target: str) -> dg.SensorDefinition:
    migrations = asset_key(target, "schema_migrations")

    @dg.sensor(
        name=def_name(target, "revalidate_after_migration"),
        asset_selection=[asset_key(target, "integrity_validation"), asset_key(target, "dimension_integrity")],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"After {target}/schema_migrations applies a migration newer than the last integrity validation "
        "(its run's start), backfills integrity_validation over the target's last validation.backfill_days days (30 "
        "by default) and re-validates the dimension tables. A first install validated afterwards (the demo) is not "
        "a schema change: the sensor skips, saying why.",
    )
    def revalidate_after_migration(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        after = int(context.cursor) if context.cursor else None
        # Newest first: the newest 100 since the cursor are the ones that can be newer than the last validation.
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=migrations, after_storage_id=after), limit=100
        ).records
        if not records:
            return dg.SkipReason("no new schema_migrations materialization" if after is not None
                                 else "no schema_migrations materialization yet")
        cursor = str(max(r.storage_id for r in records))
        applied = [r for r in records if applied_count(r) > 0]
        if not applied:
            return dg.SensorResult(skip_reason="migrations ran but applied nothing", cursor=cursor)
        validated = last_validation(context.instance, target)
        newer = [r for r in applied if validated is None or r.timestamp > validated.started]
        count = sum(applied_count(r) for r in applied)
        if validated is not None and not newer:
            newest = datetime.fromtimestamp(max(r.timestamp for r in applied), UTC).isoformat(timespec="seconds")
            return dg.SensorResult(
                skip_reason=f"{count} migration(s) applied (the last at {newest}) before the last integrity "
                            f"validation ({validated.render()}): nothing to re-validate",
                cursor=cursor,
            )
        days = backfill_days(target)
        request = backfill_request(target, days)
        if request is None:
            return dg.SensorResult(skip_reason="no partitions to validate yet", cursor=cursor)
        since = f"since the last validation ({validated.render()})" if validated else "and nothing validated yet"
        context.log.info(f"{target}: {sum(applied_count(r) for r in newer)} migration(s) applied {since}: "
                         f"backfilling the last {days} partitions")
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return revalidate_after_migration

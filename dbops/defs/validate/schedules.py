"""Validate yesterday every night, once its rows have stopped changing."""

from __future__ import annotations

import dagster as dg

from dbops.defs.validate.assets import dimension_integrity, integrity_validation

integrity_daily_job = dg.define_asset_job(
    "integrity_daily",
    selection=[integrity_validation],
    description="Validates the newest daily partition of the fact tables.",
)

# 01:30 UTC: the partition for yesterday exists from midnight; the margin lets late writes land.
integrity_daily = dg.build_schedule_from_partitioned_job(
    integrity_daily_job, name="integrity_daily", hour_of_day=1, minute_of_hour=30
)

dimension_integrity_daily = dg.ScheduleDefinition(
    name="dimension_integrity_daily",
    target=[dimension_integrity],
    cron_schedule="45 1 * * *",
    execution_timezone="UTC",
    description="Validates the dimension tables every night.",
)

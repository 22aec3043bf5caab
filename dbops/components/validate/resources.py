"""Which days validation covers: the target's ``validation`` settings (``validation.start_date``, the first daily
partition of ``integrity_validation``; ``validation.backfill_days``, partitions re-validated after a migration
applies something), and what it validates (the target's schemas, time columns, rule files and sensitive columns).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from dbops.components.resources import launch_target
from dbops.validate.run import IntegrityValidator


def backfill_days(target: str) -> int:
    return launch_target(target).validation.backfill_days


def rule_files(target: str) -> tuple[Path | None, Path | None]:
    """(expectations folder, access-control matrix) of ``target``, read at launch; None: the target has none."""
    settings = launch_target(target)
    return settings.validation.expectations, settings.access_control


def validator(target: str, url: str) -> IntegrityValidator:
    """An :class:`IntegrityValidator` of ``target``'s database as its settings at launch say (schemas, time columns,
    rule files, sensitive columns)."""
    return IntegrityValidator.for_target(url, launch_target(target))


def daily_partitions(target: str) -> dg.DailyPartitionsDefinition:
    """``target``'s days, from its ``validation.start_date`` (read when the code location loads: a partitions
    definition is fixed for the life of the location). Days are UTC, the boundaries dbops.validate uses for its range
    predicates; end_offset 0 keeps today (still being written) out: the newest partition is yesterday."""
    validation = launch_target(target).validation
    first = validation.start_date or (datetime.now(UTC).date() - timedelta(days=validation.backfill_days))
    start = first.isoformat()
    return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC", end_offset=0)

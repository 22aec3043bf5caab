"""Which days validation covers: the target's ``validation`` settings (DBOPS_VALIDATION_START_DATE, first daily
partition of ``integrity_validation``; DBOPS_VALIDATION_BACKFILL_DAYS, partitions re-validated after a migration
applies something), and where it finds its rule files and sensitive-column list.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dbops.defs.resources import launch_target


def start_date() -> str:
    """Read when the code location loads: a partitions definition is fixed for the life of the location."""
    return launch_target().validation.start_date.isoformat()


def backfill_days() -> int:
    return launch_target().validation.backfill_days


def rule_files() -> tuple[Path, Path]:
    """(expectations folder, access-control matrix) of the default target, read at launch."""
    target = launch_target()
    return target.validation.expectations, target.access_control


# Days are UTC, the same boundaries dbops.validate uses for its range predicates; end_offset 0 keeps today (still
# being written) out: the newest partition is yesterday.
DAILY = dg.DailyPartitionsDefinition(start_date=start_date(), timezone="UTC", end_offset=0)

"""Where validation finds its rule files and sensitive-column list, and which days it covers.

| variable | meaning | default |
|---|---|---|
| ``DBOPS_VALIDATION_START_DATE`` | first daily partition of ``integrity_validation`` (YYYY-MM-DD) | 2025-01-01 |
| ``DBOPS_VALIDATION_BACKFILL_DAYS`` | partitions re-validated after a migration applies something | 30 |
"""

from __future__ import annotations

import os
from datetime import date

import dagster as dg

from dbops.errors import ConfigError

DEFAULT_START_DATE = "2025-01-01"
DEFAULT_BACKFILL_DAYS = 30


def start_date() -> str:
    """Read when the code location loads: a partitions definition is fixed for the life of the location."""
    raw = os.environ.get("DBOPS_VALIDATION_START_DATE") or DEFAULT_START_DATE
    try:
        date.fromisoformat(raw)
    except ValueError as exc:
        raise ConfigError(
            f"DBOPS_VALIDATION_START_DATE={raw!r} is not a date", "use YYYY-MM-DD, e.g. 2025-01-01"
        ) from exc
    return raw


def backfill_days() -> int:
    raw = os.environ.get("DBOPS_VALIDATION_BACKFILL_DAYS") or str(DEFAULT_BACKFILL_DAYS)
    try:
        days = int(raw)
        if days < 1:
            raise ValueError
    except ValueError as exc:
        raise ConfigError(
            f"DBOPS_VALIDATION_BACKFILL_DAYS={raw!r} is not a positive number of days", "use e.g. 30"
        ) from exc
    return days


# Days are UTC, the same boundaries dbops.validate uses for its range predicates; end_offset 0 keeps today (still
# being written) out: the newest partition is yesterday.
DAILY = dg.DailyPartitionsDefinition(start_date=start_date(), timezone="UTC", end_offset=0)

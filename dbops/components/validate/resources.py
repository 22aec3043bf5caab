"""Which days validation covers: the target's ``validation`` settings (``validation.start_date``, the first daily
partition of ``integrity_validation``; ``validation.backfill_days``, partitions re-validated after a migration
applies something), and what it validates (the target's schemas, time columns, rule files and sensitive columns).
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

from dbops.components.resources import launch_settings, launch_target
from dbops.validate.run import IntegrityValidator
from dbops.validate.start import StartDay, first_partition_day

log = logging.getLogger("dbops.validate")


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


def start_day(target: str) -> StartDay:
    """``target``'s first daily partition: ``validation.start_date``; else the day of its oldest row (cached in
    ``$DBOPS_HOME/validation/<target>.json``); else ``backfill_days`` before today, logged with the reason (the
    database is down, empty or slow: the code location loads all the same)."""
    settings = launch_settings()
    found = first_partition_day(settings.target(target), lambda: settings.target_url(target), settings.home)
    if found.source == "fallback":
        log.warning(f"{target}: integrity_validation {found.render()}")
    elif found.source == "data":
        log.info(f"{target}: integrity_validation {found.render()}")
    return found


def daily_partitions(target: str) -> dg.DailyPartitionsDefinition:
    """``target``'s days from :func:`start_day` (read when the code location loads: a partitions definition is fixed
    for the life of the location). Days are UTC, the boundaries dbops.validate uses for its range predicates;
    end_offset 0 keeps today (still being written) out: the newest partition is yesterday."""
    start = start_day(target).day.isoformat()
    return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC", end_offset=0)

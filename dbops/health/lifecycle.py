"""The latest figures of the other lifecycle steps, read from the Dagster instance's records: what the other steps
recorded, for alerts and Prometheus alike (backup age, drill RTO, load-test latency, audit findings, integrity
violations...).

The one module of a step that reads Dagster: records of the instance (materializations, check evaluations), never
definitions, so `dbops metrics` and the alert sensor read the same figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dagster as dg

from dbops.health.targets import CheckTarget


@dataclass
class LifecycleFigures:
    """Per asset: when it last materialized and its numeric metadata; per check: (passed, when)."""

    materialized_at: dict[str, float] = field(default_factory=dict)
    numbers: dict[str, dict[str, float]] = field(default_factory=dict)
    checks: dict[tuple[str, str], tuple[bool, float]] = field(default_factory=dict)
    backup_age_seconds: float | None = None


LIFECYCLE_ASSETS = ("schema_migrations", "schema_catalog", "query_profile", "index_advice", "load_test",
                    "logical_backup", "base_backup", "restore_drill", "backup_retention", "integrity_validation",
                    "index_integrity", "security_audit")
BACKUP_ASSETS = ("logical_backup", "base_backup")


def _numeric(value: object) -> float | None:
    raw = getattr(value, "value", value)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw)


def asset_key(target: str, asset: str) -> dg.AssetKey:
    """Target ``shop``'s asset ``load_test`` is ``shop/load_test`` (an empty target: the bare name)."""
    return dg.AssetKey([target, asset] if target else [asset])


def check_outcome(instance: dg.DagsterInstance, asset: str, check: str,
                  target: str = "") -> tuple[bool, float] | None:
    """(passed, when) of ``target``'s check's latest completed evaluation; None when it never ran (or its asset is
    absent).

    A record without an evaluation is a check still planned (None: not run yet) or one whose step failed (missed).
    """
    record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(asset_key(target, asset), check))
    if record is None:
        return None
    evaluation = record.evaluation  # a dg.AssetCheckEvaluation
    status = getattr(record.status, "value", record.status)
    if evaluation is None and status == "PLANNED":
        return None
    passed = evaluation.passed if evaluation is not None else status == "SUCCEEDED"
    return bool(passed), float(record.event.timestamp if record.event else record.create_timestamp)


def lifecycle_figures(instance: dg.DagsterInstance, checks: tuple[CheckTarget, ...] = (),
                      now: float | None = None, target: str = "") -> LifecycleFigures:
    """The figures of ``target``'s assets (``<target>/<asset>``)."""
    figures = LifecycleFigures()
    for asset in LIFECYCLE_ASSETS:
        event = instance.get_latest_materialization_event(asset_key(target, asset))
        if event is None or event.asset_materialization is None:
            continue
        figures.materialized_at[asset] = float(event.timestamp)
        numbers = {}
        for key, value in event.asset_materialization.metadata.items():
            number = _numeric(value)
            if number is not None:
                numbers[key] = number
        figures.numbers[asset] = numbers
    backups = [figures.materialized_at[a] for a in BACKUP_ASSETS if a in figures.materialized_at]
    if backups:
        figures.backup_age_seconds = (time.time() if now is None else now) - max(backups)
    for check in checks:
        outcome = check_outcome(instance, check.asset, check.check, target)
        if outcome is not None:
            figures.checks[(check.asset, check.check)] = outcome
    return figures

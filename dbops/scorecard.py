"""The scorecard: each seed target, what the latest run measured, and whether it passed.

Figures are read from the Dagster instance (the latest materialization of the asset that measures them; for the daily
partitioned integrity_validation, the latest materialization of each of its last 30 partitions, summed), never
computed here and never made up: a step that is not built says so, one that has not run yet says so.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from dbops.health.targets import Limits, default_limits
from dbops.text import aligned

OPS: dict[str, Callable[[float, float], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                                    ">=": operator.ge, "==": operator.eq}


@dataclass(frozen=True)
class Target:
    metric: str
    goal: str
    asset: str
    key: str
    op: str
    threshold: float
    unit: str = ""
    check: str | None = None  # read the figure from this asset check's latest evaluation instead
    partitions: int = 0  # a daily partitioned asset: the sum of the figure over its last N daily partitions


def score_targets(limits: Limits) -> list[Target]:
    """The project's targets, their thresholds from a target's ``limits`` (its targets file)."""
    return [
        Target("average read latency under load", f"< {limits.read_avg_ms:g} ms", "load_test", "read_avg_ms", "<",
               limits.read_avg_ms, "ms", check="read_latency_avg_under_target"),
        Target("read latency p99 at max users (aim)", f"< {limits.read_p99_aim_ms:g} ms", "load_test",
               "read_p99_ms_at_max_users", "<", limits.read_p99_aim_ms, "ms"),
        Target("write throughput", f"> {limits.write_tps:,.0f} tx/s", "load_test", "write_tps", ">",
               limits.write_tps, "tx/s", check="write_throughput_over_target"),
        Target("concurrent users through the pooler", f">= {limits.concurrent_users:,}", "load_test", "max_users",
               ">=", limits.concurrent_users, "users"),
        Target("degradation p95 at max users / at 100", f"<= {limits.degradation_ratio:g}x", "load_test",
               "degradation_p95_ratio", "<=", limits.degradation_ratio, "x", check="degradation_within_bound"),
        Target("integrity violations (last 30 daily partitions)", f"{limits.integrity_violations}",
               "integrity_validation", "violations", "<=", limits.integrity_violations, partitions=30),
        Target("security audit critical findings", f"{limits.critical_findings}", "security_audit",
               "findings_critical", "<=", limits.critical_findings),
        Target("restore RTO: logical backup drill", f"< {limits.rto_seconds / 60:g} min", "restore_drill",
               "logical_rto_seconds", "<", limits.rto_seconds, "s"),
        Target("restore RTO: base backup + WAL replay (PITR) drill", f"< {limits.rto_seconds / 60:g} min",
               "restore_drill", "physical_rto_seconds", "<", limits.rto_seconds, "s"),
        Target("pending migrations after migrate", "0", "schema_migrations", "pending_count", "==", 0,
               check="no_pending_migrations"),
    ]


TARGETS: list[Target] = score_targets(default_limits())


@dataclass
class Row:
    target: Target
    measured: str
    status: str  # PASS, FAIL, NOT BUILT, NOT RUN


@dataclass
class Scorecard:
    rows: list[Row]
    target: str = ""  # the database (dbops target) the figures are of

    def render(self) -> str:
        headers = ("target", "goal", "measured", "status")
        data = [(r.target.metric, r.target.goal, r.measured, r.status) for r in self.rows]
        title = f"dbops scorecard: {self.target}" if self.target else "dbops scorecard"
        return "\n".join([title, *aligned(headers, data)])

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "FAIL"]


def _latest_value(instance: dg.DagsterInstance, asset: dg.AssetKey, key: str) -> float | None:
    event = instance.get_latest_materialization_event(asset)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(key)
    inner = getattr(value, "value", value)
    return float(inner) if isinstance(inner, int | float) and not isinstance(inner, bool) else None


def _latest_check_metadata(instance: dg.DagsterInstance, asset: dg.AssetKey, check: str, key: str) -> float | None:
    record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(asset, check))
    if record is None or record.event is None or record.event.dagster_event is None:
        return None
    evaluation = record.event.dagster_event.event_specific_data
    value = getattr(evaluation, "metadata", {}).get(key)
    inner = getattr(value, "value", value)
    return float(inner) if isinstance(inner, int | float) and not isinstance(inner, bool) else None


def _partitions_sum(instance: dg.DagsterInstance, asset: dg.AssetKey, key: str, days: int,
                    today: date | None = None) -> tuple[float, int] | None:
    """(the sum of ``key`` over the latest materialization of each of ``asset``'s last ``days`` daily partitions, up to
    yesterday (UTC), how many partitions had it); None when none had it. A partition whose latest materialization does
    not carry ``key`` (written before dbops recorded figures per partition) is left out, never guessed."""
    yesterday = (today or datetime.now(UTC).date()) - timedelta(days=1)
    keys = [(yesterday - timedelta(days=i)).isoformat() for i in range(days)]
    seen: set[str] = set()
    values: list[float] = []
    cursor = None
    while len(seen) < len(keys):
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset, asset_partitions=keys),
                                                 limit=1000, cursor=cursor)
        for record in result.records:  # newest first: the first of a partition is its latest
            partition = record.partition_key
            if partition is None or partition in seen:
                continue
            seen.add(partition)
            materialization = record.asset_materialization
            value = materialization.metadata.get(key) if materialization else None
            inner = getattr(value, "value", value)
            if isinstance(inner, int | float) and not isinstance(inner, bool):
                values.append(float(inner))
        if not result.has_more:
            break
        cursor = result.cursor
    return (sum(values), len(values)) if values else None


def build_scorecard(instance: dg.DagsterInstance, target: str, defined_assets: set[dg.AssetKey],
                    limits: Limits | None = None) -> Scorecard:
    """``target``'s scorecard: its assets' latest figures against its ``limits`` (``defined_assets``: the code
    location's asset keys, so a step that is not built says so)."""
    rows = []
    for goal in score_targets(limits or default_limits()):
        key = dg.AssetKey([target, goal.asset])
        if key not in defined_assets:
            rows.append(Row(goal, "-", "NOT BUILT"))
            continue
        covered = ""
        if goal.partitions:
            summed = _partitions_sum(instance, key, goal.key, goal.partitions)
            value = summed[0] if summed else None
            covered = f" in {summed[1]} of {goal.partitions} partitions" if summed else ""
        elif goal.check:
            value = _latest_check_metadata(instance, key, goal.check, goal.key)
        else:
            value = _latest_value(instance, key, goal.key)
        if value is None:
            rows.append(Row(goal, "-", "NOT RUN"))
            continue
        ok = OPS[goal.op](value, goal.threshold)
        shown = f"{value:g} {goal.unit}".strip() + covered
        rows.append(Row(goal, shown, "PASS" if ok else "FAIL"))
    return Scorecard(rows, target)

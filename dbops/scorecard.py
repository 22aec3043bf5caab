"""The scorecard: each seed target, what the latest run measured, and whether it passed.

Figures are read from the Dagster instance (the latest materialization of the asset that measures them), never
computed here and never made up: a step that is not built says so, one that has not run yet says so.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from dbops.definitions import defs
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


TARGETS: list[Target] = [
    Target("average read latency under load", "< 50 ms", "load_test", "read_avg_ms", "<", 50, "ms",
           check="read_latency_avg_under_target"),
    Target("read latency p99 at max users (aim)", "< 20 ms", "load_test", "read_p99_ms_at_max_users", "<", 20, "ms"),
    Target("write throughput", "> 1000 tx/s", "load_test", "write_tps", ">", 1000, "tx/s",
           check="write_throughput_over_target"),
    Target("concurrent users through the pooler", ">= 10,000", "load_test", "max_users", ">=", 10000, "users"),
    Target("degradation p95 at max users / at 100", "<= 1.5x", "load_test", "degradation_p95_ratio", "<=", 1.5, "x",
           check="degradation_within_bound"),
    Target("integrity violations (last 30 daily partitions)", "0", "integrity_validation", "violations", "==", 0,
           check="no_integrity_violations"),
    Target("security audit critical findings", "0", "security_audit", "findings_critical", "==", 0),
    Target("restore RTO: logical backup drill", "< 30 min", "restore_drill", "logical_rto_seconds", "<", 1800, "s"),
    Target("restore RTO: base backup + WAL replay (PITR) drill", "< 30 min", "restore_drill", "physical_rto_seconds",
           "<", 1800, "s"),
    Target("pending migrations after migrate", "0", "schema_migrations", "pending_count", "==", 0,
           check="no_pending_migrations"),
]


@dataclass
class Row:
    target: Target
    measured: str
    status: str  # PASS, FAIL, NOT BUILT, NOT RUN


@dataclass
class Scorecard:
    rows: list[Row]

    def render(self) -> str:
        headers = ("target", "goal", "measured", "status")
        data = [(r.target.metric, r.target.goal, r.measured, r.status) for r in self.rows]
        return "\n".join(["dbops scorecard", *aligned(headers, data)])

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "FAIL"]


def _latest_value(instance: dg.DagsterInstance, asset: str, key: str) -> float | None:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(key)
    inner = getattr(value, "value", value)
    return float(inner) if isinstance(inner, int | float) and not isinstance(inner, bool) else None


def _latest_check_metadata(instance: dg.DagsterInstance, asset: str, check: str, key: str) -> float | None:
    record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(dg.AssetKey(asset), check))
    if record is None or record.event is None or record.event.dagster_event is None:
        return None
    evaluation = record.event.dagster_event.event_specific_data
    value = getattr(evaluation, "metadata", {}).get(key)
    inner = getattr(value, "value", value)
    return float(inner) if isinstance(inner, int | float) and not isinstance(inner, bool) else None


def build_scorecard(instance: dg.DagsterInstance, defined_assets: set[str] | None = None) -> Scorecard:
    if defined_assets is None:
        defined_assets = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    rows = []
    for target in TARGETS:
        if target.asset not in defined_assets:
            rows.append(Row(target, "-", "NOT BUILT"))
            continue
        if target.check:
            value = _latest_check_metadata(instance, target.asset, target.check, target.key)
        else:
            value = _latest_value(instance, target.asset, target.key)
        if value is None:
            rows.append(Row(target, "-", "NOT RUN"))
            continue
        ok = OPS[target.op](value, target.threshold)
        shown = f"{value:g} {target.unit}".strip()
        rows.append(Row(target, shown, "PASS" if ok else "FAIL"))
    return Scorecard(rows)

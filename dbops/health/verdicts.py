"""Each metric target of the targets file judged against one health sample: the asset checks of ``database_health``.

A check fails when its alert would fire: the figure is past its threshold and has been for the target's ``for``
(a breach still inside its ``for`` passes, saying since when it is breached). A figure the sample does not hold
(no replica, no pooler configured, archiving off, the database down) is "not measured": a WARN naming why, never a
pass. The breach start of each target is kept between samples (the sensor's cursor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dbops.health.targets import MetricTarget, Targets

# Why a figure can be missing from a sample of a database that answered.
NOT_MEASURED: dict[str, str] = {
    "replication_lag_seconds": "no streaming replica is connected",
    "archive_lag_seconds": "archive_mode is off (or the server is a standby)",
    "replication_slot_retained_bytes": "the server is a standby",
    "checkpoints_timed_ratio": "no checkpoint since the statistics reset",
    "rollback_ratio": "no transaction since the previous sample",
    "backup_age_seconds": "judged by the backups' own backup_fresh checks",
}
_POOLER_REASON = "no pooler configured (health.pooler_url_env)"
_RATE_REASON = "a rate needs a previous sample"
# Figures the health sample never holds: judged elsewhere (no check of database_health).
ELSEWHERE = frozenset({"backup_age_seconds"})


@dataclass(frozen=True)
class Verdict:
    """One metric target judged: ``passed`` False when breached for its ``for``; ``value`` None when not measured."""

    target: MetricTarget
    check_name: str
    value: float | None
    passed: bool
    measured: bool
    breached_since: float | None
    detail: str

    @property
    def severity(self) -> str:
        return self.target.severity if self.measured else "warning"


def check_names(targets: Targets) -> dict[str, str]:
    """target key -> its check's name: ``<metric>_within_target``, or ``<metric>_within_<severity>_target`` when the
    file holds several targets of one figure (``..._2`` after that); figures judged elsewhere are left out."""
    names: dict[str, str] = {}
    per_metric: dict[str, int] = {}
    for t in targets.metrics:
        per_metric[t.metric] = per_metric.get(t.metric, 0) + 1
    taken: set[str] = set()
    for t in targets.metrics:
        if t.metric in ELSEWHERE:
            continue
        name = f"{t.metric}_within_target" if per_metric[t.metric] == 1 else f"{t.metric}_within_{t.severity}_target"
        base, n = name, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        names[t.key] = name
    return names


def not_measured_reason(metric: str, error: str | None = None) -> str:
    if error:
        return f"the database did not answer: {error}"
    if metric.startswith("pooler_"):
        return _POOLER_REASON
    if metric.endswith(("_per_second", "_per_minute")):
        return _RATE_REASON
    return NOT_MEASURED.get(metric, "the sample holds no such figure")


def judge(targets: Targets, metrics: dict[str, float], details: dict[str, str], at: float,
          breaches: dict[str, float] | None = None, error: str | None = None) -> tuple[list[Verdict], dict[str, float]]:
    """Every metric target with a check judged on one sample; returns the verdicts and the breach starts to keep.

    ``error``: the sample's error when the database did not answer (only ``up`` is measured then).
    """
    kept = dict(breaches or {})
    out: list[Verdict] = []
    for key, name in check_names(targets).items():
        target = targets.by_key()[key]
        assert isinstance(target, MetricTarget)
        value = metrics.get(target.metric)
        if value is None:
            if not error:  # a database that is down keeps the breaches it had
                kept.pop(key, None)
            out.append(Verdict(target, name, None, False, False, None,
                               not_measured_reason(target.metric, error if target.metric != "up" else None)))
            continue
        text = target.describe(value)
        if details.get(target.metric) and target.missed(value):
            text += f": {details[target.metric]}"
        if not target.missed(value):
            kept.pop(key, None)
            out.append(Verdict(target, name, value, True, True, None, text))
            continue
        since = kept.setdefault(key, at)
        lasted = at - since
        passed = lasted < target.for_seconds
        if passed:
            text += f" (breached for {lasted:.0f} s; fails after {target.for_seconds:g} s)"
        out.append(Verdict(target, name, value, passed, True, since, text))
    return out, kept


def changed(verdicts: list[Verdict], reported: dict[str, Any]) -> list[Verdict]:
    """The verdicts whose outcome differs from the one last reported (``reported``: check name -> "pass" | "fail" |
    "unmeasured"): a check is recorded when it changes, not every minute."""
    return [v for v in verdicts if reported.get(v.check_name) != outcome(v)]


def outcome(verdict: Verdict) -> str:
    return "unmeasured" if not verdict.measured else "pass" if verdict.passed else "fail"

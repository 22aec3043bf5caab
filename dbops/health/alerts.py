"""When a missed target becomes an alert: the state machine behind "no alert fatigue".

Per target: a breach must last ``for_seconds`` before it fires (a single spike never pages); an incident is
notified once (dedup), and "resolved" once when the figure is back within target; a target that fires again within
``cooldown_seconds`` of its last notification is not re-notified (flapping guard). The whole state is a JSON-able
dict so a Dagster sensor can keep it in its cursor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from dbops.health.targets import CheckTarget, MetricTarget, Targets

FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Reading:
    """One observation of a target: missed or not, when, and what was seen."""

    key: str
    missed: bool
    at: float
    value: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Alert:
    """A notification: an incident started (firing) or ended (resolved)."""

    key: str
    status: str
    severity: str
    summary: str
    detail: str
    at: float
    started_at: float
    target: str = ""  # the dbops target (database) the alert is about

    @property
    def incident(self) -> str:
        return f"{self.target + '/' if self.target else ''}{self.key}@{self.started_at:.0f}"

    def title(self) -> str:
        mark = "RESOLVED" if self.status == RESOLVED else self.severity.upper()
        where = f" {self.target}" if self.target else ""
        return f"[dbops{where} {mark}] {self.summary or self.key}"

    def text(self) -> str:
        when = datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.title()}: {self.detail} ({when})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "incident": self.incident, "title": self.title(), "text": self.text()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Alert:
        return cls(**{k: raw[k] for k in ("key", "status", "severity", "summary", "detail", "at", "started_at")},
                   target=raw.get("target", ""))


def metric_readings(targets: Targets, metrics: dict[str, float], at: float) -> list[Reading]:
    """Readings for every metric target whose figure is present in ``metrics``."""
    out = []
    for target in targets.metrics:
        value = metrics.get(target.metric)
        if value is None:
            continue
        out.append(Reading(target.key, target.missed(value), at, value, target.describe(value)))
    return out


class AlertEngine:
    """Feed it readings in time order; it returns the alerts to send and keeps its state in ``state``."""

    def __init__(self, targets: Targets, state: dict[str, Any] | None = None, target: str = "") -> None:
        self.targets = targets
        self.target = target  # the database the readings are of: named in every alert
        self.state: dict[str, Any] = {"targets": {}, "pending": []}
        if state:
            self.state.update(state)

    def _target(self, key: str) -> MetricTarget | CheckTarget | None:
        return self.targets.by_key().get(key)

    def observe(self, readings: list[Reading]) -> list[Alert]:
        alerts: list[Alert] = []
        for reading in sorted(readings, key=lambda r: r.at):
            target = self._target(reading.key)
            if target is None:
                continue
            st = self.state["targets"].setdefault(reading.key, {"since": None, "firing": False,
                                                                "notified": False, "last_fired": None})
            if reading.missed:
                if st["since"] is None:
                    st["since"] = reading.at
                if not st["firing"] and reading.at - st["since"] >= target.for_seconds:
                    st["firing"] = True
                    last = st["last_fired"]
                    st["notified"] = last is None or reading.at - last >= target.cooldown_seconds
                    if st["notified"]:
                        st["last_fired"] = reading.at
                        alerts.append(self._alert(target, FIRING, reading, st["since"]))
            else:
                if st["firing"] and st["notified"]:
                    alerts.append(self._alert(target, RESOLVED, reading, st["since"] or reading.at))
                st.update(since=None, firing=False, notified=False)
        return alerts

    def _alert(self, target: MetricTarget | CheckTarget, status: str, reading: Reading, since: float) -> Alert:
        summary = target.summary or (
            f"{target.metric} {target.op} {target.threshold:g}" if isinstance(target, MetricTarget)
            else f"asset check {target.asset}/{target.check} failed"
        )
        return Alert(key=target.key, status=status, severity=target.severity, summary=summary,
                     detail=reading.detail, at=reading.at, started_at=since, target=self.target)

    def firing(self) -> list[str]:
        return sorted(k for k, st in self.state["targets"].items() if st.get("firing"))

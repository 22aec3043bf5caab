"""When a missed target becomes an alert: the state machine behind "no alert fatigue".

Per target: a breach must last ``for_seconds`` before it fires (a single spike never pages); an incident is
notified once (dedup), and "resolved" once when the figure is back within target; a target that fires again within
``cooldown_seconds`` of its last notification is not re-notified (flapping guard). The whole state is a JSON-able
dict so a Dagster sensor can keep it in its cursor.

Failed runs, materializations and asset checks (``alerts.failures``) go through the same machine: each
:class:`Outcome` (one run, materialization or check evaluation that finished) is a reading of the incident of its
job, asset or check, which fires at once on a failure and resolves with the next success; cooldown as above (the
targets file's ``defaults.cooldown``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from dbops.health.runbooks import DEFAULT_RUNBOOK_BASE, alert_name, runbook_url
from dbops.health.targets import CheckTarget, MetricTarget, Targets

FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Reading:
    """One observation of a target: missed or not, when, and what was seen.

    A reading of a failure (``summary`` set, its key in no targets file entry) carries its own severity, summary and
    run: the incident is the failing run, materialization or check.
    """

    key: str
    missed: bool
    at: float
    value: float | None = None
    detail: str = ""
    severity: str = ""
    summary: str = ""
    run_id: str = ""


@dataclass(frozen=True)
class FailureRule:
    """The rule of a failure incident: fires on the first failure (no ``for``), the targets file's cooldown."""

    key: str
    severity: str
    summary: str
    cooldown_seconds: float
    for_seconds: float = 0.0


RUN, ASSET, CHECK = "run", "asset", "check"


@dataclass(frozen=True)
class Outcome:
    """One finished run, materialization or asset check evaluation of a target, as the Dagster instance recorded it.

    ``name``: the job (or ``materialize a, b`` for an ad-hoc selection) of a run, the asset's name within the target
    (``load_test``), or ``asset:check`` of a check. ``severity`` is ``warning`` for a check of severity WARN that
    failed, else ``critical``; ``error`` the first line of the error, redacted.
    """

    kind: str
    name: str
    failed: bool
    at: float
    run_id: str
    severity: str = "critical"
    error: str = ""
    partition: str = ""  # the run's partition (or range) of a partitioned asset

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name.replace(':', '/', 1) if self.kind == CHECK else self.name}"

    def summary(self, target: str) -> str:
        where = f"{target}/" if target else ""
        if self.kind == RUN:
            return f"run of {self.name} failed"
        if self.kind == ASSET:
            return f"materialization of {where}{self.name} failed"
        return f"asset check {where}{self.name} failed"

    def detail(self) -> str:
        if not self.failed:
            done = {RUN: "succeeded", ASSET: "materialized", CHECK: "passed"}[self.kind]
            return f"{done} in run {self.run_id}"
        where = f" (partition {self.partition})" if self.partition else ""
        return f"run {self.run_id}{where}: {self.error or 'no error message recorded'}"


def failure_readings(targets: Targets, outcomes: list[Outcome], target: str = "") -> list[Reading]:
    """A reading per outcome; checks the targets file lists are left to their own entry (one incident per check)."""
    listed = {f"{CHECK}:{c.asset}/{c.check}" for c in targets.checks}
    return [Reading(o.key, o.failed, o.at, 1.0 if o.failed else 0.0, o.detail(), o.severity, o.summary(target),
                    o.run_id) for o in outcomes if o.key not in listed]


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
    run_id: str = ""  # the run that failed (or succeeded, resolving it): failures only
    runbook: str = ""  # docs/runbooks/<Alert>.md under the target's alerts.runbook_base

    @property
    def incident(self) -> str:
        return f"{self.target + '/' if self.target else ''}{self.key}@{self.started_at:.0f}"

    def title(self) -> str:
        mark = "RESOLVED" if self.status == RESOLVED else self.severity.upper()
        where = f" {self.target}" if self.target else ""
        return f"[dbops{where} {mark}] {self.summary or self.key}"

    def text(self) -> str:
        when = datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        runbook = f" runbook: {self.runbook}" if self.runbook and self.status != RESOLVED else ""
        return f"{self.title()}: {self.detail} ({when}){runbook}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "incident": self.incident, "title": self.title(), "text": self.text()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Alert:
        return cls(**{k: raw[k] for k in ("key", "status", "severity", "summary", "detail", "at", "started_at")},
                   target=raw.get("target", ""), run_id=raw.get("run_id", ""), runbook=raw.get("runbook", ""))


def metric_readings(targets: Targets, metrics: dict[str, float], at: float,
                    details: dict[str, str] | None = None) -> list[Reading]:
    """Readings for every metric target whose figure is present in ``metrics``; a missed one's detail names what the
    figure points at (``details``: the blocked session and its blocker, the table, the slot)."""
    out = []
    for target in targets.metrics:
        value = metrics.get(target.metric)
        if value is None:
            continue
        missed = target.missed(value)
        detail = target.describe(value)
        if missed and details and details.get(target.metric):
            detail += f": {details[target.metric]}"
        out.append(Reading(target.key, missed, at, value, detail))
    return out


class AlertEngine:
    """Feed it readings in time order; it returns the alerts to send and keeps its state in ``state``."""

    def __init__(self, targets: Targets, state: dict[str, Any] | None = None, target: str = "",
                 runbook_base: str = DEFAULT_RUNBOOK_BASE) -> None:
        self.targets = targets
        self.target = target  # the database the readings are of: named in every alert
        self.runbook_base = runbook_base
        self.state: dict[str, Any] = {"targets": {}, "pending": []}
        if state:
            self.state.update(state)

    def _target(self, reading: Reading) -> MetricTarget | CheckTarget | FailureRule | None:
        target = self.targets.by_key().get(reading.key)
        if target is None and reading.summary:
            return FailureRule(reading.key, reading.severity or "critical", reading.summary,
                               self.targets.failure_cooldown_seconds)
        return target

    def observe(self, readings: list[Reading]) -> list[Alert]:
        alerts: list[Alert] = []
        for reading in sorted(readings, key=lambda r: r.at):
            target = self._target(reading)
            if target is None or (not reading.missed and reading.key not in self.state["targets"]):
                continue  # a success of what never failed: no state (a target's cursor holds its incidents only)
            st = self.state["targets"].setdefault(reading.key, {"since": None, "firing": False,
                                                                "notified": False, "last_fired": None})
            if reading.missed:
                if st["since"] is None:
                    st["since"] = reading.at
                if not st["firing"] and reading.at - st["since"] >= target.for_seconds:
                    st["firing"] = True
                    last = st["last_fired"]
                    st["notified"] = last is None or reading.at - last >= target.cooldown_seconds
                    alert = self._alert(target, FIRING, reading, st["since"])
                    st["incident"] = {"severity": alert.severity, "summary": alert.summary, "run_id": alert.run_id}
                    if st["notified"]:
                        st["last_fired"] = reading.at
                        alerts.append(alert)
            else:
                if st["firing"] and st["notified"]:
                    alerts.append(self._alert(target, RESOLVED, reading, st["since"] or reading.at,
                                              st.get("incident")))
                st.update(since=None, firing=False, notified=False)
                st.pop("incident", None)
        return alerts

    def _alert(self, target: MetricTarget | CheckTarget | FailureRule, status: str, reading: Reading, since: float,
               incident: dict[str, str] | None = None) -> Alert:
        """The alert of ``reading``; a resolution keeps the severity and summary its incident fired with."""
        summary = target.summary or (
            f"{target.metric} {target.op} {target.threshold:g}" if isinstance(target, MetricTarget)
            else f"asset check {target.asset}/{target.check} failed" if isinstance(target, CheckTarget)
            else target.key
        )
        severity = target.severity
        if incident:
            summary, severity = incident.get("summary") or summary, incident.get("severity") or severity
        return Alert(key=target.key, status=status, severity=severity, summary=summary,
                     detail=reading.detail, at=reading.at, started_at=since, target=self.target,
                     run_id=reading.run_id, runbook=runbook_url(alert_name(target.key, self.targets),
                                                                self.runbook_base))

    def firing(self) -> list[str]:
        return sorted(k for k, st in self.state["targets"].items() if st.get("firing"))

    def incidents(self) -> list[dict[str, Any]]:
        """The incidents firing now (notified or held back by cooldown): key, since, severity, summary, run."""
        rows = []
        for key in self.firing():
            st = self.state["targets"][key]
            incident = st.get("incident") or {}
            rows.append({"key": key, "since": st.get("since"), "severity": incident.get("severity", ""),
                         "summary": incident.get("summary", ""), "run_id": incident.get("run_id", ""),
                         "notified": bool(st.get("notified"))})
        return rows

"""One alerting tick: readings in, notifications out, failed deliveries kept for the next tick."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dbops.health.alerts import Alert, AlertEngine, Reading
from dbops.health.sinks import Delivery, Sink, deliver

log = logging.getLogger(__name__)
MAX_PENDING = 200


@dataclass
class TickResult:
    alerts: list[Alert] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.ok]


def alert_tick(engine: AlertEngine, readings: list[Reading], sinks: Sequence[Sink], *, retries: int = 3,
               backoff: float = 0.5, deadline_s: float = 60.0) -> TickResult:
    """Evaluate ``readings``, send new alerts to every sink and retry what failed last tick on the sinks it missed.

    ``engine.state["pending"]`` holds the (alert, sink) pairs still owed, so a sink that was down gets its alerts
    when it comes back, and the sinks that worked are never sent a duplicate.
    """
    result = TickResult()
    by_name = {s.name: s for s in sinks}
    pending: list[dict[str, Any]] = engine.state.get("pending") or []
    owed: dict[str, list[Alert]] = {}
    for item in pending:
        if item["sink"] in by_name:
            owed.setdefault(item["sink"], []).append(Alert.from_dict(item["alert"]))
    for name, alerts in owed.items():  # what a sink missed, again as one message
        result.deliveries += deliver(alerts, [by_name[name]], retries=1, backoff=backoff, deadline_s=deadline_s)
    new_alerts = engine.observe(readings)
    result.alerts = new_alerts
    result.deliveries += deliver(new_alerts, sinks, retries=retries, backoff=backoff, deadline_s=deadline_s)
    still_owed = [{"alert": d.alert.to_dict(), "sink": d.sink} for d in result.deliveries if not d.ok]
    engine.state["pending"] = still_owed[-MAX_PENDING:]
    for d in result.failed:
        log.warning("alert %s (%s) not delivered to %s after %d attempt(s): %s", d.alert.key, d.alert.status,
                    d.sink, d.attempts, d.error)
    return result

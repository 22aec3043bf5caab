"""What one group of health queries returns: figures, the raw counters the next sample turns into rates, and for a
figure that points at something (a table, an index, a session) a short redacted text naming it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Figures:
    metrics: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)  # figure -> who: "app.orders (age 1.9e9)", "pid 42 ..."

    def update(self, other: Figures) -> None:
        self.metrics.update(other.metrics)
        self.counters.update(other.counters)
        self.details.update(other.details)

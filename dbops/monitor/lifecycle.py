"""The latest figures of the other lifecycle steps, as plain data (read from Dagster by dbops.defs.monitoring)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LifecycleFigures:
    """Per asset: when it last materialized and its numeric metadata; per check: (passed, when)."""

    materialized_at: dict[str, float] = field(default_factory=dict)
    numbers: dict[str, dict[str, float]] = field(default_factory=dict)
    checks: dict[tuple[str, str], tuple[bool, float]] = field(default_factory=dict)
    backup_age_seconds: float | None = None

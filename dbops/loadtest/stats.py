"""Per-script figures from pgbench's per-transaction logs (``-l``), aggregated by streaming.

pgbench prints no percentiles, so dbops reads the log files line by line into a histogram whose buckets keep three
significant digits of the latency in microseconds: memory stays bounded (a few thousand buckets) whatever the number
of transactions, and a percentile is off by at most 0.5 %.

Log line fields: client_id transaction_no time script_no time_epoch time_us [schedule_lag] [retries]; ``time`` is
the latency in µs, or ``skipped`` / ``failed`` (``serialization``, ``deadlock``, ``other`` with --failures-detailed).
With a rate schedule (``-R``) ``time`` counts from the scheduled start, so it includes ``schedule_lag``, the delay
before pgbench could send the transaction: that lag is kept apart too, to show whether the load generator itself
fell behind.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


def bucket(latency_us: int) -> int:
    """The latency rounded to three significant digits (the histogram key)."""
    if latency_us < 1000:
        return latency_us
    scale = 10 ** (int(math.log10(latency_us)) - 2)
    return round(latency_us / scale) * scale


@dataclass
class ScriptStats:
    """Figures of one workload script in one pgbench run."""

    name: str
    transactions: int = 0
    failures: int = 0
    skipped: int = 0
    retries: int = 0
    total_us: int = 0
    max_us: int = 0
    histogram: Counter[int] = field(default_factory=Counter)
    lag_histogram: Counter[int] = field(default_factory=Counter)

    def add(self, latency_us: int, retries: int = 0, lag_us: int | None = None) -> None:
        if lag_us is not None:
            self.lag_histogram[bucket(lag_us)] += 1
        self.transactions += 1
        self.total_us += latency_us
        self.max_us = max(self.max_us, latency_us)
        self.retries += retries
        self.histogram[bucket(latency_us)] += 1

    def merge(self, other: ScriptStats) -> None:
        self.transactions += other.transactions
        self.failures += other.failures
        self.skipped += other.skipped
        self.retries += other.retries
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)
        self.histogram.update(other.histogram)  # Counter.update adds the counts
        self.lag_histogram.update(other.lag_histogram)

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..100) in milliseconds; 0 when nothing ran."""
        return _percentile(self.histogram, self.transactions, q, self.max_us)

    def lag_percentile_ms(self, q: float) -> float:
        """Percentile of pgbench's schedule lag (rate-limited runs only; 0 otherwise)."""
        return _percentile(self.lag_histogram, self.lag_histogram.total(), q, 0)

    @property
    def avg_ms(self) -> float:
        return self.total_us / self.transactions / 1000 if self.transactions else 0.0

    def figures(self, seconds: float) -> dict[str, float]:
        """The figures dbops reports, with stable keys (plotted by the Dagster UI)."""
        return {
            "tps": round(self.transactions / seconds, 1) if seconds > 0 else 0.0,
            "transactions": self.transactions,
            "avg_ms": round(self.avg_ms, 3),
            "p50_ms": self.percentile_ms(50),
            "p95_ms": self.percentile_ms(95),
            "p99_ms": self.percentile_ms(99),
            "max_ms": round(self.max_us / 1000, 3),
            "failures": self.failures,
            "skipped": self.skipped,
            "retries": self.retries,
            "lag_p95_ms": self.lag_percentile_ms(95),
        }


def _percentile(histogram: Counter[int], count: int, q: float, fallback_us: int) -> float:
    if not count:
        return 0.0
    rank = max(1, math.ceil(q / 100 * count))
    seen = 0
    for key in sorted(histogram):
        seen += histogram[key]
        if seen >= rank:
            return key / 1000
    return fallback_us / 1000


def parse_log_lines(lines: Iterable[str], names: list[str], stats: dict[str, ScriptStats] | None = None,
                    *, rate_limited: bool = False, max_tries: int = 1) -> dict[str, ScriptStats]:
    """Fold log lines into per-script stats keyed by script name (``names[script_no]``)."""
    stats = stats if stats is not None else {name: ScriptStats(name) for name in names}
    retries_field = 6 + (1 if rate_limited else 0)
    for line in lines:
        fields = line.split()
        if len(fields) < 6:
            continue
        try:
            name = names[int(fields[3])]
        except (ValueError, IndexError):
            continue
        script = stats.setdefault(name, ScriptStats(name))
        time_field = fields[2]
        if time_field == "skipped":
            script.skipped += 1
            continue
        retries = int(fields[retries_field]) if max_tries != 1 and len(fields) > retries_field else 0
        if not time_field.isdigit():
            script.failures += 1
            script.retries += retries
            continue
        lag = int(fields[6]) if rate_limited and len(fields) > 6 and fields[6].isdigit() else None
        script.add(int(time_field), retries, lag)
    return stats


def parse_log_files(paths: Iterable[Path], names: list[str], *, rate_limited: bool = False,
                    max_tries: int = 1) -> dict[str, ScriptStats]:
    """Stream every log file of a run (one per pgbench thread) into per-script stats."""
    stats = {name: ScriptStats(name) for name in names}
    for path in paths:
        with path.open(encoding="ascii", errors="replace") as handle:
            parse_log_lines(handle, names, stats, rate_limited=rate_limited, max_tries=max_tries)
    return stats


def combined(stats: Iterable[ScriptStats], name: str) -> ScriptStats:
    """Several scripts' stats merged (e.g. every read script as "reads")."""
    total = ScriptStats(name)
    for item in stats:
        total.merge(item)
    return total

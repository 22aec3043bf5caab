"""PgBouncer's ``default_pool_size`` and the server's ``max_connections`` from a measured pool-size sweep.

The sweep runs the top user step once per pool size. The recommendation is the smallest pool whose throughput is
within 5 % of the best and whose p95 is at most 1.1x the best p95: a bigger pool only adds server backends
(memory, lock and snapshot contention) for nothing measurable. ``max_connections`` is that pool (one database, one
role here: ``pools`` pools in general) plus headroom for everything that is not the application: dbops' own steps,
monitoring, an administrator's session (PostgreSQL's ``superuser_reserved_connections``, 3 by default, are part of
it; WAL senders are counted apart since PostgreSQL 12).

Saturation, per pool size: ``pool-bound`` when every server connection was busy (``sv_active`` reached the pool
size) while clients queued (``cl_waiting`` > 0); ``cpu-bound`` when the machine's CPUs were at least 90 % busy;
otherwise ``headroom``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TPS_WITHIN = 0.95  # within 5 % of the best throughput
P95_WITHIN = 1.10  # p95 at most 1.1x the best
CPU_BOUND_PCT = 90.0
HEADROOM_CONNECTIONS = 20  # connections kept for everything but the application (see the module doc)


@dataclass(frozen=True)
class PoolFigures:
    """What one pool size measured at the top user step."""

    pool_size: int
    tps: float
    p95_ms: float
    host_cpu_pct: float = 0.0  # the whole machine
    server_cpu_pct: float | None = None  # the PostgreSQL server's processes, of the whole machine
    max_cl_waiting: int = 0
    max_sv_active: int = 0
    max_maxwait_ms: float = 0.0


def saturation(f: PoolFigures) -> str:
    """``pool-bound``, ``cpu-bound``, both, or ``headroom`` (see the module doc)."""
    kinds = []
    if f.max_sv_active >= f.pool_size and f.max_cl_waiting > 0:
        kinds.append("pool-bound")
    if f.host_cpu_pct >= CPU_BOUND_PCT:
        kinds.append("cpu-bound")
    return " and ".join(kinds) or "headroom"


def describe(f: PoolFigures) -> str:
    server = "" if f.server_cpu_pct is None else f", server CPU {f.server_cpu_pct:.0f} %"
    return (f"pool {f.pool_size}: {f.tps:,.1f} tps, p95 {f.p95_ms:.2f} ms, machine CPU {f.host_cpu_pct:.0f} %{server},"
            f" sv_active max {f.max_sv_active}/{f.pool_size}, cl_waiting max {f.max_cl_waiting},"
            f" maxwait {f.max_maxwait_ms:.1f} ms: {saturation(f)}")


def recommend_pool_size(figures: list[PoolFigures], *, pools: int = 1,
                        headroom: int = HEADROOM_CONNECTIONS) -> dict[str, Any]:
    """The recommended ``default_pool_size`` and ``max_connections`` from the sweep's figures, with the reason and
    how close each measured pool size came to saturation."""
    if not figures:
        raise ValueError("no pool size was measured")
    best_tps = max(f.tps for f in figures)
    best_p95 = min(f.p95_ms for f in figures)
    fit = [f for f in figures if f.tps >= TPS_WITHIN * best_tps and f.p95_ms <= P95_WITHIN * best_p95]
    if fit:
        chosen = min(fit, key=lambda f: f.pool_size)
        reason = (f"smallest pool within {100 * (1 - TPS_WITHIN):.0f} % of the best tps ({best_tps:,.1f}) with p95 "
                  f"at most {P95_WITHIN:g}x the best ({best_p95:.2f} ms)")
    else:  # no size has both: the lowest p95 among those close to the best throughput
        close = [f for f in figures if f.tps >= TPS_WITHIN * best_tps]
        chosen = min(close, key=lambda f: (f.p95_ms, f.pool_size))
        reason = (f"no pool size had both tps within {100 * (1 - TPS_WITHIN):.0f} % of the best and p95 within "
                  f"{P95_WITHIN:g}x the best: the lowest p95 among those within 5 % of the best tps")
    return {
        "default_pool_size": chosen.pool_size,
        "max_connections": chosen.pool_size * pools + headroom,
        "reason": reason,
        "max_connections_rule": f"default_pool_size x {pools} pool(s) + {headroom} for maintenance, monitoring and "
                                "administrators",
        "saturation": saturation(chosen),
        "sizes": [{"pool_size": f.pool_size, "tps": f.tps, "p95_ms": f.p95_ms, "host_cpu_pct": f.host_cpu_pct,
                   "server_cpu_pct": f.server_cpu_pct, "max_cl_waiting": f.max_cl_waiting,
                   "max_sv_active": f.max_sv_active, "max_maxwait_ms": f.max_maxwait_ms,
                   "saturation": saturation(f), "text": describe(f)}
                  for f in sorted(figures, key=lambda f: f.pool_size)],
    }

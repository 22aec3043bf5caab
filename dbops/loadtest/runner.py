"""A load test: users in steps (a ramp), each step one pgbench run, through PgBouncer when users are many.

Users have think time: with ``think_time_s`` each of N users sends one transaction every ``think_time_s`` seconds on
average, i.e. pgbench's rate schedule ``-R N/think_time_s`` (Poisson arrivals). Latency is then measured from the
scheduled start, so queueing counts, and idle time does not (a ``\\sleep`` inside the script would be counted).
Without think time the users run a closed loop as fast as they can (the throughput figure).

By Little's law the offered load is N / think time, so the think time decides whether N users fit the machine: with
the mixed profile through PgBouncer on 2 cores, 10,000 users at 5 s (2,000 tps) kept the cores busy and p95 grew 6-10x
over 100 users; at 10 s (1,000 tps, the default: a page view every ~10 s is a realistic web user) p95 stayed within
1.1-1.3x. Every figure is reported with its think time. A warm-up (the first step, discarded) fills the caches and
opens every pooled server connection before anything is measured.

Every step also says what it cost the server, measured (dbops.loadtest.measure): the CPU time of the PostgreSQL
processes per transaction (when the server runs on this machine) and pg_stat_statements' plan and execution time of
the run's statements; through PgBouncer the pool is sampled every second (``SHOW POOLS``: clients waiting, the
longest wait, server connections active). ``rounds`` repeats each step and reports the spread; ``settle`` brings the
database to rest first (VACUUM ANALYZE, autovacuum idle); ``pool_sizes`` runs the top step once per PgBouncer pool
size and recommends ``default_pool_size`` and ``max_connections`` (dbops.loadtest.sizing).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbops.loadtest.limits import FD_MARGIN, raise_fd_limit
from dbops.loadtest.measure import (
    ServerProcesses,
    local_server,
    settle,
    statements_delta,
    statements_snapshot,
    statements_summary,
)
from dbops.loadtest.pgbench import PgbenchRun, Target, run_pgbench
from dbops.loadtest.pgbouncer import PgBouncer, PoolSampler
from dbops.loadtest.replay import ReplayProfile, build_replay
from dbops.loadtest.role import APP_ROLE, loadtest_role
from dbops.loadtest.sizing import PoolFigures, recommend_pool_size
from dbops.loadtest.stats import ScriptStats, combined
from dbops.loadtest.workloads import (
    LOADTEST_CURRENCY,
    READ_SCRIPTS,
    REPLAY_PROFILE,
    LoadTestError,
    Script,
    resolve_profile,
    workload_variables,
)
from dbops.pg.connect import check_url, connection, database_name, parse_url
from dbops.redact import redact_url

DIRECT_HEADROOM = 20  # connections kept free on the server for everyone else
DEFAULT_THINK_TIME_S = 10.0

Progress = Callable[[str], None]

# What each column of LoadTestResult.step_rows means (the Dagster table's schema shows it).
STEP_COLUMNS = {
    "users": "concurrent users (pgbench clients)",
    "think_time": "time between one user's transactions (closed loop: as fast as they can)",
    "offered_tps": "transactions/s asked for: users / think time (or the fixed rate)",
    "tps": "transactions/s served",
    "read_tps": "read transactions/s", "write_tps": "write transactions/s",
    "p50_ms": "median latency of all transactions, from their scheduled start",
    "p95_ms": "95th percentile latency", "p99_ms": "99th percentile latency",
    "read_avg_ms": "mean latency of the reads", "read_p99_ms": "99th percentile latency of the reads",
    "errors": "failed transactions and aborted clients", "retries": "serialization or deadlock retries",
    "transactions": "transactions completed", "pooler": "pgbouncer (its default_pool_size) or direct",
    "host_cpu_pct": "the whole machine's CPU, 100 = every core busy",
    "server_cpu_ms_per_tx": "PostgreSQL's CPU time per transaction (server on this machine only)",
    "rounds": "times the step ran", "error": "why the step stopped early, if it did",
}


def think_time_text(think_time_s: float | None) -> str:
    """How the users behave, said with every users figure: ``think time 10 s`` or ``closed loop``."""
    return f"think time {think_time_s:g} s" if think_time_s else "closed loop"


@dataclass
class LoadTestPlan:
    profile: str = "mixed"
    users: list[int] = field(default_factory=lambda: [100])
    duration_s: int = 30
    think_time_s: float | None = DEFAULT_THINK_TIME_S
    rate: float | None = None
    pooler: str = "auto"
    pool_size: int = 20
    max_tries: int = 3
    warmup_s: int = 0
    cleanup: bool = True
    random_seed: int | None = None
    bin_dir: Path | None = None
    workloads_dir: Path | None = None
    work_dir: Path | None = None
    pgbouncer: Path | None = None  # the pgbouncer program (None: on PATH)
    replay_statements: int = 20  # the replay profile: at most this many top read statements
    exclude_roles: tuple[str, ...] = ()  # the replay profile leaves their statements out (profile.exclude_roles)
    replay_dir: Path | None = None  # where the replay scripts are written and kept (None: a temporary folder)
    rounds: int = 1  # each step run this many times: figures over all of them, the spread between them
    settle: bool = False  # VACUUM ANALYZE and wait for autovacuum to be idle before anything runs
    settle_timeout_s: float = 120.0
    pool_sizes: list[int] | None = None  # PgBouncer pool sizes to sweep at the top step (needs PgBouncer)
    protocol: str | None = None  # pgbench -M; None: prepared (extended through a PgBouncer without support)
    sample_interval_s: float = 1.0  # PgBouncer SHOW POOLS sampling

    def validate(self) -> None:
        if not self.users or any(u < 1 for u in self.users):
            raise LoadTestError(f"users must be positive, got {self.users}", "use e.g. --users 100 or --ramp 100,1000")
        if self.duration_s < 1:
            raise LoadTestError(f"duration must be at least 1 s, got {self.duration_s}", "use e.g. --duration 30")
        if self.pooler not in ("auto", "pgbouncer", "direct"):
            raise LoadTestError(f"unknown pooler {self.pooler!r}", "use auto, pgbouncer or direct")
        if self.think_time_s is not None and self.think_time_s < 0:
            raise LoadTestError("think time cannot be negative", "use 0 for a closed loop")
        if self.rounds < 1:
            raise LoadTestError(f"rounds must be at least 1, got {self.rounds}", "use e.g. --rounds 3")
        if self.pool_sizes is not None and (not self.pool_sizes or any(p < 1 for p in self.pool_sizes)):
            raise LoadTestError(f"pool sizes must be positive, got {self.pool_sizes}", "use e.g. --pool-sizes 10,20,40")
        if self.pool_sizes and self.pooler == "direct":
            raise LoadTestError("a pool-size sweep needs PgBouncer", "use --pooler pgbouncer (or auto)")
        if self.protocol not in (None, "simple", "extended", "prepared"):
            raise LoadTestError(f"unknown protocol {self.protocol!r}", "use simple, extended or prepared")


@dataclass
class StepResult:
    users: int
    rate: float | None
    seconds: float
    scripts: dict[str, dict[str, float]]
    reads: dict[str, float]
    writes: dict[str, float]
    total: dict[str, float]
    aborted_clients: int = 0
    error: str | None = None
    jobs: int = 1
    host_cpu_pct: float = 0.0  # the whole machine, 100 = every core busy (whoever used them)
    pgbench_cpu_pct: float = 0.0  # of one core
    pgbouncer_cpu_pct: float | None = None  # of one core: PgBouncer is single-threaded, 100 = saturated
    rounds: list[dict[str, float]] = field(default_factory=list)  # per round: tps, p95_ms, p99_ms, transactions
    pool: dict[str, Any] | None = None  # PgBouncer's SHOW POOLS / SHOW STATS over the step (None: direct)
    pool_size: int | None = None  # PgBouncer's default_pool_size for the step
    server_cpu_s: float | None = None  # CPU time of the PostgreSQL server's processes (None: not on this machine)
    server_cpu_pct: float | None = None  # of the whole machine (100 = every core)
    statements: dict[str, Any] | None = None  # pg_stat_statements: plan and exec time per transaction and statement
    protocol: str = "prepared"

    @property
    def server_cpu_ms_per_tx(self) -> float | None:
        done = self.total["transactions"]
        return round(1000 * self.server_cpu_s / done, 4) if self.server_cpu_s is not None and done else None

    @property
    def errors(self) -> int:
        return int(self.total["failures"]) + self.aborted_clients

    def pooler(self) -> str:
        return f"pgbouncer (pool {self.pool_size})" if self.pool_size is not None else "direct"

    def row(self, think_time_s: float | None) -> dict[str, Any]:
        """The step as one row (``STEP_COLUMNS``); a figure of a group that ran no transaction is left empty."""
        reads = self.reads if self.reads["transactions"] else None
        writes = self.writes if self.writes["transactions"] else None
        return {
            "users": self.users, "think_time": think_time_text(think_time_s),
            "offered_tps": self.rate, "tps": self.total["tps"],
            "read_tps": reads["tps"] if reads else None, "write_tps": writes["tps"] if writes else None,
            "p50_ms": self.total["p50_ms"], "p95_ms": self.total["p95_ms"], "p99_ms": self.total["p99_ms"],
            "read_avg_ms": reads["avg_ms"] if reads else None, "read_p99_ms": reads["p99_ms"] if reads else None,
            "errors": self.errors, "retries": int(self.total["retries"]),
            "transactions": int(self.total["transactions"]), "pooler": self.pooler(),
            "host_cpu_pct": self.host_cpu_pct, "server_cpu_ms_per_tx": self.server_cpu_ms_per_tx,
            "rounds": len(self.rounds) or 1, "error": self.error,
        }

    def summary(self, think_time_s: float | None) -> str:
        """One line: users with their think time, throughput, percentiles, errors, pooler."""
        t = self.total
        line = (f"{self.users:,} users, {think_time_text(think_time_s)}: {t['tps']:,.1f} tx/s, p50/p95/p99 "
                f"{t['p50_ms']:.2f}/{t['p95_ms']:.2f}/{t['p99_ms']:.2f} ms, {self.errors} errors, {self.pooler()}")
        return line + (f"; {self.error}" if self.error else "")

    def spread(self, key: str) -> dict[str, float] | None:
        """min/median/max of a per-round figure and the relative spread (max - min) / median."""
        values = [r[key] for r in self.rounds if r.get(key) is not None]
        if not values:
            return None
        median = statistics.median(values)
        return {"min": min(values), "median": round(median, 3), "max": max(values),
                "rel_spread": round((max(values) - min(values)) / median, 3) if median else 0.0}


@dataclass
class LoadTestResult:
    profile: str
    think_time_s: float | None
    via: str
    target: str
    steps: list[StepResult] = field(default_factory=list)
    cleaned_rows: int = 0
    seconds: float = 0.0
    replay: ReplayProfile | None = None
    settled: dict[str, Any] | None = None  # how the database was brought to rest (plan.settle)
    server_cpu_reason: str | None = None  # why the server's CPU was not measured
    pool_sweep: list[StepResult] = field(default_factory=list)  # the top step once per pool size
    pool_recommendation: dict[str, Any] | None = None

    @property
    def failures(self) -> int:
        return int(sum(s.total["failures"] + s.aborted_clients for s in self.steps))

    @property
    def degradation(self) -> float | None:
        """p95 at the largest step / p95 at the first step (1.0 = no degradation)."""
        if len(self.steps) < 2 or not self.steps[0].total["p95_ms"]:
            return None
        return round(self.steps[-1].total["p95_ms"] / self.steps[0].total["p95_ms"], 3)

    @property
    def read_avg_ms(self) -> float | None:
        values = [s.reads["avg_ms"] for s in self.steps if s.reads["transactions"]]
        return max(values) if values else None

    @property
    def write_tps(self) -> float | None:
        values = [s.writes["tps"] for s in self.steps if s.writes["transactions"]]
        return max(values) if values else None

    def step_rows(self) -> list[dict[str, Any]]:
        """A row per user step (``STEP_COLUMNS``), each with its think time."""
        return [s.row(self.think_time_s) for s in self.steps]

    def headline(self) -> dict[str, Any]:
        """The few figures worth plotting run over run, at the largest user step that ran without an error
        (``max_users``, at ``think_time_s``); None: not measured, for the caller to leave out."""
        clean = [st for st in self.steps if not st.error]
        top = clean[-1] if clean else None
        return {
            "max_users": top.users if top else None,
            "think_time_s": self.think_time_s,  # None: closed loop
            "read_p99_ms_at_max_users": top.reads["p99_ms"] if top and top.reads["transactions"] else None,
            "p95_ms_at_max_users": top.total["p95_ms"] if top else None,
            "tps_at_max_users": top.total["tps"] if top else None,
            "read_avg_ms": self.read_avg_ms,
            "write_tps": self.write_tps,
            "degradation_p95_ratio": self.degradation,
            "failures": self.failures,
        }

    def summary(self) -> str:
        """One line: the largest clean step with its think time, and the degradation."""
        clean = [st for st in self.steps if not st.error]
        if not clean:
            return f"profile {self.profile}: no step ran without an error"
        text = f"profile {self.profile}: " + clean[-1].summary(self.think_time_s)
        if self.degradation is not None:
            text += f"; p95 {self.degradation:.2f}x the {self.steps[0].users:,}-user step's"
        return text

    def table(self) -> str:
        """The ramp as a markdown table (also readable in a terminal)."""
        think = "closed loop" if not self.think_time_s else f"think time {self.think_time_s:g} s per user"
        lines = [f"profile {self.profile}, {think}, via {self.via}",
                 "",
                 "| users | tps | read tps | write tps | avg ms | p50 ms | p95 ms | p99 ms | max ms | read avg ms"
                 " | failures | retries | txns | lag p95 ms | host cpu % | pgbench cpu % | pgbouncer cpu % |",
                 "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in self.steps:
            t = s.total
            bouncer = "" if s.pgbouncer_cpu_pct is None else f"{s.pgbouncer_cpu_pct:.0f}"
            lines.append(
                f"| {s.users:,} | {t['tps']:,.1f} | {s.reads['tps']:,.1f} | {s.writes['tps']:,.1f} | {t['avg_ms']:.2f}"
                f" | {t['p50_ms']:.2f} | {t['p95_ms']:.2f} | {t['p99_ms']:.2f} | {t['max_ms']:.2f}"
                f" | {s.reads['avg_ms']:.2f} | {int(t['failures']) + s.aborted_clients} | {int(t['retries'])}"
                f" | {int(t['transactions']):,} | {t['lag_p95_ms']:.2f} | {s.host_cpu_pct:.0f}"
                f" | {s.pgbench_cpu_pct:.0f} | {bouncer} |")
        lines += ["", "lag: pgbench's delay before sending (its own load); cpu over the whole step, logins included"]
        lines += ["", "| users | rounds | tps min/median/max | p95 ms min/median/max | server cpu ms/tx | server cpu %"
                      " | plan ms/tx | exec ms/tx | cl_waiting max | maxwait max ms | sv_active max | avg wait µs |",
                  "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in self.steps:
            lines.append(_cost_row(s))
        if self.server_cpu_reason:
            lines.append(f"server cpu not measured: {self.server_cpu_reason}")
        if self.settled is not None:
            st = self.settled
            lines.append(f"settled: {'yes' if st['settled'] else 'NO (timeout)'} (VACUUM ANALYZE "
                         f"{st['vacuum_analyze_s']} s, autovacuum wait {st['autovacuum_wait_s']} s)")
        if self.pool_sweep:
            lines += ["", f"pool sizes at {self.pool_sweep[0].users:,} users", "",
                      "| pool size | tps | p95 ms | p99 ms | host cpu % | server cpu % | server cpu ms/tx"
                      " | cl_waiting max | maxwait max ms | sv_active max |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for s in self.pool_sweep:
                pool = s.pool or {}
                lines.append(f"| {s.pool_size} | {s.total['tps']:,.1f} | {s.total['p95_ms']:.2f}"
                             f" | {s.total['p99_ms']:.2f} | {s.host_cpu_pct:.0f} | {_num(s.server_cpu_pct, '.0f')}"
                             f" | {_num(s.server_cpu_ms_per_tx, '.3f')} | {pool.get('max_cl_waiting', '')}"
                             f" | {pool.get('max_maxwait_ms', '')} | {pool.get('max_sv_active', '')} |")
            if self.pool_recommendation:
                r = self.pool_recommendation
                lines += ["", f"recommended: default_pool_size = {r['default_pool_size']}, max_connections = "
                              f"{r['max_connections']} ({r['reason']}; max_connections = {r['max_connections_rule']})"]
                lines += [f"- {size['text']}" for size in r["sizes"]]
        if self.degradation is not None:
            lines += ["", f"degradation (p95 at {self.steps[-1].users:,} / p95 at {self.steps[0].users:,} users): "
                          f"{self.degradation:.2f}x"]
        for s in self.steps:
            if s.error:
                lines.append(f"step {s.users:,} users: {s.error}")
        if self.replay is not None:  # per statement at the last step
            lines += ["", self.replay.table(self.steps[-1].scripts if self.steps else None)]
        return "\n".join(lines)

    def metadata(self) -> dict[str, float | int | str]:
        """Numeric figures with stable keys (the Dagster UI plots them run over run)."""
        meta: dict[str, float | int | str] = {"failures": self.failures, "cleaned_rows": self.cleaned_rows,
                                              "seconds": round(self.seconds, 1)}
        if self.think_time_s is not None:
            meta["think_time_s"] = self.think_time_s
        if self.degradation is not None:
            meta["degradation_p95_ratio"] = self.degradation
        if self.read_avg_ms is not None:
            meta["read_avg_ms"] = self.read_avg_ms
        if self.write_tps is not None:
            meta["write_tps"] = self.write_tps
        if self.replay is not None:
            meta["replay/statements"] = len(self.replay.statements)
            meta["replay/skipped"] = len(self.replay.skipped)
        for s in self.steps:
            for group, figures in (("all", s.total), ("reads", s.reads), ("writes", s.writes)):
                if not figures["transactions"]:
                    continue
                for key in ("tps", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms", "failures", "retries"):
                    meta[f"users_{s.users}/{group}/{key}"] = figures[key]
            meta[f"users_{s.users}/all/transactions"] = int(s.total["transactions"])
            meta[f"users_{s.users}/all/lag_p95_ms"] = s.total["lag_p95_ms"]
            meta[f"users_{s.users}/host_cpu_pct"] = s.host_cpu_pct
            meta[f"users_{s.users}/pgbench_cpu_pct"] = s.pgbench_cpu_pct
            if s.pgbouncer_cpu_pct is not None:
                meta[f"users_{s.users}/pgbouncer_cpu_pct"] = s.pgbouncer_cpu_pct
            meta.update(_cost_meta(f"users_{s.users}", s))
        if self.settled is not None:
            meta["settled"] = int(self.settled["settled"])
            meta["settle_wait_s"] = self.settled["autovacuum_wait_s"]
        for s in self.pool_sweep:
            meta[f"pool_{s.pool_size}/tps"] = s.total["tps"]
            meta[f"pool_{s.pool_size}/p95_ms"] = s.total["p95_ms"]
            meta.update(_cost_meta(f"pool_{s.pool_size}", s))
        if self.pool_recommendation:
            meta["recommended_default_pool_size"] = self.pool_recommendation["default_pool_size"]
            meta["recommended_max_connections"] = self.pool_recommendation["max_connections"]
        return meta


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _cost_row(s: StepResult) -> str:
    def mmm(key: str, spec: str) -> str:
        spread = s.spread(key)
        if spread is None:
            return ""
        return "/".join(format(spread[k], spec) for k in ("min", "median", "max"))

    pool = s.pool or {}
    figures = s.statements or {}
    return (f"| {s.users:,} | {len(s.rounds)} | {mmm('tps', ',.1f')} | {mmm('p95_ms', '.2f')}"
            f" | {_num(s.server_cpu_ms_per_tx, '.3f')} | {_num(s.server_cpu_pct, '.0f')}"
            f" | {_num(figures.get('plan_ms_per_tx'), '.3f')} | {_num(figures.get('exec_ms_per_tx'), '.3f')}"
            f" | {pool.get('max_cl_waiting', '')} | {pool.get('max_maxwait_ms', '')} | {pool.get('max_sv_active', '')}"
            f" | {pool.get('avg_wait_us', '')} |")


def _cost_meta(prefix: str, s: StepResult) -> dict[str, float | int | str]:
    meta: dict[str, float | int | str] = {f"{prefix}/rounds": len(s.rounds)}
    for key in ("tps", "p95_ms"):
        spread = s.spread(key)
        if spread is not None and len(s.rounds) > 1:
            for k, v in spread.items():
                meta[f"{prefix}/{key}_{k}"] = v
    if s.server_cpu_ms_per_tx is not None:
        meta[f"{prefix}/server_cpu_ms_per_tx"] = s.server_cpu_ms_per_tx
    if s.server_cpu_pct is not None:
        meta[f"{prefix}/server_cpu_pct"] = s.server_cpu_pct
    for key in ("plan_ms_per_tx", "exec_ms_per_tx"):
        value = (s.statements or {}).get(key)
        if value is not None:
            meta[f"{prefix}/{key}"] = value
    for key, value in (s.pool or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            meta[f"{prefix}/pgbouncer/{key}"] = value
    return meta


def _merged(runs: list[PgbenchRun]) -> PgbenchRun:
    """Several rounds of one step as one run: every transaction of every round, times summed."""
    if len(runs) == 1:
        return runs[0]
    scripts: dict[str, ScriptStats] = {}
    for run in runs:
        for name, stats in run.scripts.items():
            scripts.setdefault(name, ScriptStats(name)).merge(stats)
    wall = sum(r.wall_s for r in runs)
    first = runs[0]
    return PgbenchRun(first.clients, sum(r.seconds for r in runs), first.rate, scripts,
                      sum(r.aborted_clients for r in runs), next((r.error for r in runs if r.error), None),
                      first.command, None, None, first.jobs, wall, sum(r.pgbench_cpu_s for r in runs),
                      sum(r.host_busy_pct * r.wall_s for r in runs) / wall if wall else 0.0)


def _round_figures(run: PgbenchRun) -> dict[str, float]:
    total = combined(run.scripts.values(), "all").figures(run.seconds)
    return {k: total[k] for k in ("tps", "p95_ms", "p99_ms", "transactions")}


def _step(run: PgbenchRun, scripts: list[Script], pgbouncer_cpu_s: float | None = None) -> StepResult:
    stats = run.scripts
    reads = combined([v for k, v in stats.items() if k in READ_SCRIPTS or not _is_write(k, scripts)], "reads")
    writes = combined([v for k, v in stats.items() if _is_write(k, scripts)], "writes")
    total = combined(stats.values(), "all")
    return StepResult(
        users=run.clients, rate=run.rate, seconds=run.seconds,
        scripts={k: v.figures(run.seconds) for k, v in stats.items()},
        reads=reads.figures(run.seconds), writes=writes.figures(run.seconds), total=total.figures(run.seconds),
        aborted_clients=run.aborted_clients, error=run.error, jobs=run.jobs,
        host_cpu_pct=round(run.host_busy_pct, 1),
        pgbench_cpu_pct=round(100 * run.pgbench_cpu_s / run.wall_s, 1) if run.wall_s else 0.0,
        pgbouncer_cpu_pct=None if pgbouncer_cpu_s is None or not run.wall_s
        else round(100 * pgbouncer_cpu_s / run.wall_s, 1),
    )


def _rate(plan: LoadTestPlan, users: int) -> float | None:
    """Offered transactions/s: each user one transaction per think time (Little's law), or the plan's fixed rate."""
    return users / plan.think_time_s if plan.think_time_s else plan.rate


def _is_write(name: str, scripts: list[Script]) -> bool:
    return any(s.name == name and s.is_write for s in scripts)


def _server_facts(url: str) -> tuple[int, bool]:
    with connection(url) as conn:
        row: Any = conn.execute(
            "SELECT current_setting('max_connections')::int, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    return int(row[0]), bool(row[1])


def cleanup_rows(url: str) -> int:
    """Delete what the write workload created: orders marked XTS, their items and payments, and the audit rows
    written by load test roles. Nothing else is touched."""
    with connection(url) as conn, conn.transaction():
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if superuser and superuser[0]:
            conn.execute("SET LOCAL session_replication_role = replica")  # no audit rows about the clean-up itself
        deleted = 0
        # Reference schema v2: app.order_keys (V14) holds a row per order, kept by a trigger replica mode skips;
        # audit rows name the application's user in changed_by and the role in db_role (V12).
        v2: Any = conn.execute("SELECT to_regclass('app.order_keys') IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute"
                               " WHERE attrelid = 'app.audit_log'::regclass AND attname = 'db_role'"
                               " AND NOT attisdropped)").fetchone()
        for statement in (
            "DELETE FROM app.payments AS p USING app.orders AS o WHERE o.currency = %(c)s AND p.tenant_id = o.tenant_id"
            " AND p.order_id = o.id AND p.order_created_at = o.created_at",
            "DELETE FROM app.order_items AS i USING app.orders AS o WHERE o.currency = %(c)s"
            " AND i.tenant_id = o.tenant_id AND i.order_id = o.id AND i.order_created_at = o.created_at",
            *(["DELETE FROM app.order_keys AS k USING app.orders AS o WHERE o.currency = %(c)s"
               " AND k.tenant_id = o.tenant_id AND k.order_id = o.id"] if v2[0] else []),
            "DELETE FROM app.orders WHERE currency = %(c)s",
            (r"DELETE FROM app.audit_log WHERE changed_by LIKE 'dbops\_loadtest\_%%'"
             r" OR db_role LIKE 'dbops\_loadtest\_%%'") if v2[1]
            else r"DELETE FROM app.audit_log WHERE changed_by LIKE 'dbops\_loadtest\_%%'",
        ):
            deleted += conn.execute(statement, {"c": LOADTEST_CURRENCY}).rowcount
    return deleted


def run_load_test(url: str, plan: LoadTestPlan, *, production: bool = False, allow_production: bool = False,
                  progress: Progress | None = None) -> LoadTestResult:
    """Run the plan's steps against the database at ``url`` (an admin URL: it creates the run's role).

    ``progress`` is told each phase as it happens, one line each: the warm-up, each user step as it starts and as it
    finishes with its figures (users with their think time, tx/s, p50/p95/p99, errors, pooler), the clean-up."""
    plan.validate()
    check_url(url)
    if production and not allow_production:
        raise LoadTestError(f"{redact_url(url)} is marked production: a load test would slow it and write rows",
                            "run it against a copy, or pass --allow-production (allow_production: true) on purpose")
    with tempfile.TemporaryDirectory(prefix="dbops-replay-", dir=plan.work_dir) as scratch:
        replay = None
        if plan.profile == REPLAY_PROFILE:
            if progress is not None:
                progress("replay: reading the top read statements from pg_stat_statements")
            replay = build_replay(url, plan.replay_dir or Path(scratch), limit=plan.replay_statements,
                                  exclude_roles=plan.exclude_roles)
            scripts = replay.scripts
        else:
            scripts = resolve_profile(plan.profile, plan.workloads_dir)
        result = _run(url, plan, scripts, progress or (lambda message: None))
    result.replay = replay
    return result


@dataclass
class _Context:
    """What every measured step of one run shares."""

    url: str
    plan: LoadTestPlan
    scripts: list[Script]
    variables: dict[str, int]
    common: dict[str, Any]
    role_name: str
    role_password: str
    dbname: str
    server: ServerProcesses | None
    say: Progress


def _measured_step(ctx: _Context, target: Target, users: int, rounds: int, bouncer: PgBouncer | None,
                   label: str = "") -> StepResult:
    """One step, ``rounds`` times: pgbench, with the server's CPU, pg_stat_statements and PgBouncer's pool measured
    around each round."""
    plan = ctx.plan
    rate = _rate(plan, users)
    runs: list[PgbenchRun] = []
    per_round: list[dict[str, float]] = []
    server_cpu = 0.0
    bouncer_cpu = 0.0
    samplers: list[PoolSampler] = []
    before_statements = statements_snapshot(ctx.url, ctx.role_name)
    for number in range(rounds):
        say_round = f" (round {number + 1}/{rounds})" if rounds > 1 else ""
        via = f"pgbouncer (pool {bouncer.pool_size})" if bouncer is not None else "direct"
        ctx.say(f"{label + ': ' if label else ''}{users:,} users, {think_time_text(plan.think_time_s)} for "
                f"{plan.duration_s} s" + (f" ({rate:,.0f} tx/s offered)" if rate else "") + f", {via}{say_round}: "
                "started")
        cpu0 = ctx.server.cpu_seconds() if ctx.server is not None else 0.0
        bouncer0 = bouncer.cpu_seconds() if bouncer is not None else 0.0
        sampler = PoolSampler(bouncer.port, ctx.role_name, ctx.role_password, ctx.dbname,
                              plan.sample_interval_s).start() if bouncer is not None else None
        try:
            run = run_pgbench(target, ctx.scripts, ctx.variables, clients=users, duration=plan.duration_s, rate=rate,
                              **ctx.common)
        finally:
            if sampler is not None:
                samplers.append(sampler.stop())
        if ctx.server is not None:
            server_cpu += ctx.server.cpu_seconds() - cpu0
        if bouncer is not None:
            bouncer_cpu += bouncer.cpu_seconds() - bouncer0
        runs.append(run)
        per_round.append(_round_figures(run))
    after_statements = statements_snapshot(ctx.url, ctx.role_name)
    merged = _merged(runs)
    step = _step(merged, ctx.scripts, bouncer_cpu if bouncer is not None else None)
    step.rounds = per_round
    step.protocol = str(ctx.common["protocol"])
    step.pool_size = bouncer.pool_size if bouncer is not None else None
    if ctx.server is not None:
        step.server_cpu_s = round(server_cpu, 3)
        step.server_cpu_pct = round(100 * server_cpu / (merged.wall_s * (os.cpu_count() or 1)), 1) \
            if merged.wall_s else None
    if samplers:
        step.pool = _pool_summary([s.summary() for s in samplers])
    if after_statements.reason is None:
        step.statements = statements_summary(statements_delta(before_statements, after_statements),
                                             int(step.total["transactions"]), after_statements.track_planning)
    return step


def _pool_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """PgBouncer figures over several rounds: maxima of the maxima, transactions summed, waits weighted."""
    if len(rounds) == 1:
        return rounds[0]
    out: dict[str, Any] = {"samples": sum(r["samples"] for r in rounds)}
    for key in ("max_cl_waiting", "max_maxwait_ms", "max_sv_active", "max_cl_active"):
        out[key] = max(r[key] for r in rounds)
    out["min_sv_idle"] = min(r["min_sv_idle"] for r in rounds)
    out["mean_cl_waiting"] = round(sum(r["mean_cl_waiting"] * r["samples"] for r in rounds)
                                   / max(1, out["samples"]), 1)
    xacts = sum(r.get("xacts", 0) for r in rounds)
    if xacts:
        out["xacts"] = xacts
        out["avg_wait_us"] = round(sum(r.get("avg_wait_us", 0) * r.get("xacts", 0) for r in rounds) / xacts, 1)
        out["avg_xact_us"] = round(sum(r.get("avg_xact_us", 0) * r.get("xacts", 0) for r in rounds) / xacts, 1)
    errors = [e for r in rounds for e in r.get("errors", [])]
    if errors:
        out["errors"] = errors[:3]
    return out


def _start_bouncer(host: str, port: int, dbname: str, role: Any, plan: LoadTestPlan, peak: int,
                   pool_size: int) -> PgBouncer:
    raise_fd_limit(peak + pool_size + FD_MARGIN)  # each process needs its own
    return PgBouncer(host, port, dbname, role.name, role.verifier,
                     max_client_conn=max(peak + 100, 10_100 if peak >= 10_000 else peak + 100),
                     pool_size=pool_size, work_dir=plan.work_dir, program=plan.pgbouncer).start()


def _run(url: str, plan: LoadTestPlan, scripts: list[Script], say: Progress) -> LoadTestResult:
    started = time.monotonic()
    max_connections, _ = _server_facts(url)
    # Only dbops' reference scripts assume the reference schema (app.*), its roles and its seed.
    reference = any(s.reference for s in scripts)
    variables = workload_variables(url) if reference else {}
    member_of: tuple[str, ...] = (APP_ROLE,) if reference else \
        ("pg_read_all_data",) + (("pg_write_all_data",) if any(s.is_write for s in scripts) else ())
    peak = max(plan.users)
    pooled = plan.pooler == "pgbouncer" or (plan.pooler == "auto" and peak > max_connections - DIRECT_HEADROOM) \
        or bool(plan.pool_sizes)
    if plan.pooler == "direct" and peak > max_connections - DIRECT_HEADROOM:
        raise LoadTestError(f"{peak:,} users exceed the server's max_connections ({max_connections})",
                            "use --pooler pgbouncer (or auto) for many users")
    if plan.pool_sizes and max(plan.pool_sizes) > max_connections - DIRECT_HEADROOM:
        raise LoadTestError(f"pool size {max(plan.pool_sizes)} exceeds the server's max_connections "
                            f"({max_connections}) less {DIRECT_HEADROOM} kept free", "sweep smaller pool sizes")
    parts = parse_url(url)
    host, port, dbname = parts.host or "127.0.0.1", parts.port or 5432, database_name(url)
    result = LoadTestResult(plan.profile, plan.think_time_s, "pgbouncer" if pooled else "direct", redact_url(url))
    if not reference and any(s.is_write for s in scripts):
        say("your scripts write: dbops does not delete the rows they create")
    server, result.server_cpu_reason = local_server(url)
    if plan.settle:
        say("settling: VACUUM ANALYZE, then waiting for autovacuum to be idle")
        result.settled = settle(url, timeout_s=plan.settle_timeout_s).as_dict()
        if not result.settled["settled"]:
            say(f"autovacuum still busy after {plan.settle_timeout_s:g} s: measuring anyway (reported)")
    with loadtest_role(url, member_of, grant_connect=not reference) as role:
        bouncer: PgBouncer | None = None
        protocol = plan.protocol or "prepared"
        try:
            if pooled:
                bouncer = _start_bouncer(host, port, dbname, role, plan, peak, plan.pool_size)
                target = Target("127.0.0.1", bouncer.port, dbname, role.name, role.password)
                if not bouncer.supports_prepared and protocol == "prepared":
                    protocol = "extended"
                    say(f"PgBouncer {bouncer.version[0]}.{bouncer.version[1]} has no max_prepared_statements:"
                        " pgbench uses -M extended")
            else:
                target = Target(host, port, dbname, role.name, role.password)
            common: dict[str, Any] = dict(max_tries=plan.max_tries, random_seed=plan.random_seed,
                                          bin_dir=plan.bin_dir, log_dir=plan.work_dir, protocol=protocol)
            ctx = _Context(url, plan, scripts, variables, common, role.name, role.password, dbname, server, say)
            if plan.warmup_s:
                # The first step itself, same path and rate, not recorded: caches, the server pool, pgbench.
                users = plan.users[0]
                say(f"warm-up: {users:,} users, {think_time_text(plan.think_time_s)} for {plan.warmup_s} s "
                    "(discarded): started")
                run_pgbench(target, scripts, variables, clients=users, duration=plan.warmup_s,
                            rate=_rate(plan, users), **common)
                say("warm-up finished")
            steps = f"{len(plan.users)} step" + ("s" if len(plan.users) > 1 else "")
            say(f"load test: profile {plan.profile}, {steps} of {plan.duration_s} s "
                f"({', '.join(f'{u:,}' for u in plan.users)} users) at {think_time_text(plan.think_time_s)}, "
                f"via {result.via}")
            for number, users in enumerate(plan.users, 1):
                label = f"step {number}/{len(plan.users)}"
                step = _measured_step(ctx, target, users, plan.rounds, bouncer, label)
                result.steps.append(step)
                say(f"{label} finished: {step.summary(plan.think_time_s)}")
            for size in plan.pool_sizes or []:
                if bouncer is not None:
                    bouncer.stop()
                    bouncer = None
                say(f"pool size {size}: PgBouncer default_pool_size = {size}")
                bouncer = _start_bouncer(host, port, dbname, role, plan, peak, size)
                target = Target("127.0.0.1", bouncer.port, dbname, role.name, role.password)
                if plan.warmup_s:  # the new pool's server connections and pgbench, not recorded
                    run_pgbench(target, scripts, variables, clients=plan.users[0], duration=min(plan.warmup_s, 5),
                                rate=_rate(plan, plan.users[0]), **common)
                swept = _measured_step(ctx, target, peak, 1, bouncer, f"pool size {size}")
                result.pool_sweep.append(swept)
                say(f"pool size {size} finished: {swept.summary(plan.think_time_s)}")
            if result.pool_sweep:
                result.pool_recommendation = recommend_pool_size([_pool_figures(s) for s in result.pool_sweep])
        finally:
            if bouncer is not None:
                bouncer.stop()
            if plan.cleanup and any(s.is_write and s.reference for s in scripts):
                result.cleaned_rows = cleanup_rows(url)
                say(f"clean-up: deleted the {result.cleaned_rows:,} rows the writes created")
    result.seconds = time.monotonic() - started
    say(f"load test finished in {result.seconds:.0f} s")
    return result


def _pool_figures(s: StepResult) -> PoolFigures:
    pool = s.pool or {}
    return PoolFigures(pool_size=s.pool_size or 0, tps=s.total["tps"], p95_ms=s.total["p95_ms"],
                       host_cpu_pct=s.host_cpu_pct, server_cpu_pct=s.server_cpu_pct,
                       max_cl_waiting=int(pool.get("max_cl_waiting", 0)),
                       max_sv_active=int(pool.get("max_sv_active", 0)),
                       max_maxwait_ms=float(pool.get("max_maxwait_ms", 0.0)))

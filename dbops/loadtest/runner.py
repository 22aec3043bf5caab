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
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbops.loadtest.limits import FD_MARGIN, raise_fd_limit
from dbops.loadtest.pgbench import PgbenchRun, Target, run_pgbench
from dbops.loadtest.pgbouncer import PgBouncer
from dbops.loadtest.replay import ReplayProfile, build_replay
from dbops.loadtest.role import APP_ROLE, loadtest_role
from dbops.loadtest.stats import combined
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

    def validate(self) -> None:
        if not self.users or any(u < 1 for u in self.users):
            raise LoadTestError(f"users must be positive, got {self.users}", "use e.g. --users 100 or --ramp 100,1000")
        if self.duration_s < 1:
            raise LoadTestError(f"duration must be at least 1 s, got {self.duration_s}", "use e.g. --duration 30")
        if self.pooler not in ("auto", "pgbouncer", "direct"):
            raise LoadTestError(f"unknown pooler {self.pooler!r}", "use auto, pgbouncer or direct")
        if self.think_time_s is not None and self.think_time_s < 0:
            raise LoadTestError("think time cannot be negative", "use 0 for a closed loop")


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
        return meta


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
        for statement in (
            "DELETE FROM app.payments AS p USING app.orders AS o WHERE o.currency = %(c)s AND p.tenant_id = o.tenant_id"
            " AND p.order_id = o.id AND p.order_created_at = o.created_at",
            "DELETE FROM app.order_items AS i USING app.orders AS o WHERE o.currency = %(c)s"
            " AND i.tenant_id = o.tenant_id AND i.order_id = o.id AND i.order_created_at = o.created_at",
            "DELETE FROM app.orders WHERE currency = %(c)s",
            r"DELETE FROM app.audit_log WHERE changed_by LIKE 'dbops\_loadtest\_%%'",
        ):
            deleted += conn.execute(statement, {"c": LOADTEST_CURRENCY}).rowcount
    return deleted


def run_load_test(url: str, plan: LoadTestPlan, *, production: bool = False, allow_production: bool = False,
                  log: Any = None) -> LoadTestResult:
    """Run the plan's steps against the database at ``url`` (an admin URL: it creates the run's role)."""
    plan.validate()
    check_url(url)
    if production and not allow_production:
        raise LoadTestError(f"{redact_url(url)} is marked production: a load test would slow it and write rows",
                            "run it against a copy, or pass --allow-production (allow_production: true) on purpose")
    with tempfile.TemporaryDirectory(prefix="dbops-replay-", dir=plan.work_dir) as scratch:
        replay = None
        if plan.profile == REPLAY_PROFILE:
            replay = build_replay(url, plan.replay_dir or Path(scratch), limit=plan.replay_statements,
                                  exclude_roles=plan.exclude_roles)
            scripts = replay.scripts
        else:
            scripts = resolve_profile(plan.profile, plan.workloads_dir)
        result = _run(url, plan, scripts, log or (lambda message: None))
    result.replay = replay
    return result


def _run(url: str, plan: LoadTestPlan, scripts: list[Script], say: Any) -> LoadTestResult:
    started = time.monotonic()
    max_connections, _ = _server_facts(url)
    # Only dbops' reference scripts assume the reference schema (app.*), its roles and its seed.
    reference = any(s.reference for s in scripts)
    variables = workload_variables(url) if reference else {}
    member_of: tuple[str, ...] = (APP_ROLE,) if reference else \
        ("pg_read_all_data",) + (("pg_write_all_data",) if any(s.is_write for s in scripts) else ())
    peak = max(plan.users)
    pooled = plan.pooler == "pgbouncer" or (plan.pooler == "auto" and peak > max_connections - DIRECT_HEADROOM)
    if plan.pooler == "direct" and peak > max_connections - DIRECT_HEADROOM:
        raise LoadTestError(f"{peak:,} users exceed the server's max_connections ({max_connections})",
                            "use --pooler pgbouncer (or auto) for many users")
    parts = parse_url(url)
    host, port, dbname = parts.host or "127.0.0.1", parts.port or 5432, database_name(url)
    result = LoadTestResult(plan.profile, plan.think_time_s, "pgbouncer" if pooled else "direct", redact_url(url))
    if not reference and any(s.is_write for s in scripts):
        say("your scripts write: dbops does not delete the rows they create")
    with loadtest_role(url, member_of, grant_connect=not reference) as role:
        bouncer: PgBouncer | None = None
        protocol = "prepared"
        try:
            if pooled:
                raise_fd_limit(peak + plan.pool_size + FD_MARGIN)  # each process needs its own
                bouncer = PgBouncer(host, port, dbname, role.name, role.verifier,
                                    max_client_conn=max(peak + 100, 10_100 if peak >= 10_000 else peak + 100),
                                    pool_size=plan.pool_size, work_dir=plan.work_dir,
                                    program=plan.pgbouncer).start()
                target = Target("127.0.0.1", bouncer.port, dbname, role.name, role.password)
                if not bouncer.supports_prepared:
                    protocol = "extended"
                    say(f"PgBouncer {bouncer.version[0]}.{bouncer.version[1]} has no max_prepared_statements:"
                        " pgbench uses -M extended")
            else:
                target = Target(host, port, dbname, role.name, role.password)
            common: dict[str, Any] = dict(max_tries=plan.max_tries, random_seed=plan.random_seed,
                                          bin_dir=plan.bin_dir, log_dir=plan.work_dir, protocol=protocol)
            if plan.warmup_s:
                # The first step itself, same path and rate, not recorded: caches, the server pool, pgbench.
                users = plan.users[0]
                say(f"warm-up: {users:,} users for {plan.warmup_s} s (discarded)")
                run_pgbench(target, scripts, variables, clients=users, duration=plan.warmup_s,
                            rate=_rate(plan, users), **common)
            for users in plan.users:
                rate = _rate(plan, users)
                say(f"{users:,} users for {plan.duration_s} s" + (f" at {rate:,.0f} tps" if rate else ""))
                bouncer_cpu = bouncer.cpu_seconds() if bouncer is not None else 0.0
                run = run_pgbench(target, scripts, variables, clients=users, duration=plan.duration_s,
                                  rate=rate, **common)
                used = bouncer.cpu_seconds() - bouncer_cpu if bouncer is not None else None
                result.steps.append(_step(run, scripts, used))
        finally:
            if bouncer is not None:
                bouncer.stop()
            if plan.cleanup and any(s.is_write and s.reference for s in scripts):
                result.cleaned_rows = cleanup_rows(url)
    result.seconds = time.monotonic() - started
    return result

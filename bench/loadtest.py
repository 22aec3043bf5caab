"""Benchmark the load test: raw pgbench vs ``dbops loadtest`` on the same script, plus the reference figures.

On a throw-away PostgreSQL (the embedded 18, server defaults: fsync and synchronous_commit on) seeded at ``--scale``:

* ``place_order``: raw pgbench (nothing added) and the dbops run (``-l`` logs parsed into percentiles) on
  ``sql/workloads/place_order.sql``, same clients, same duration, after a discarded warm-up; ``--rounds`` pairs whose
  order alternates (raw first, then dbops first), every run starting from the same state (the rows it created
  deleted, a checkpoint); ratio = median over the pairs of dbops tps / raw tps (target >= 0.95; aim >= 3,000 tps);
* ``read``: the read profile, closed loop, direct: p99 (aim < 20 ms);
* ``users``: the mixed profile through PgBouncer, a users ramp (default 100 -> 1,000 -> 10,000) with ``--think-time``
  per user (each user one transaction every think time, Little's law: offered tps = users / think time): tps and p95
  at the last step (aim >= 1,000 tps and p95 < 50 ms) and the degradation p95(last) / p95(first) (target <= 1.5);
  every step ``--rounds`` times (min/median/max and relative spread), PgBouncer's pool sampled every second
  (SHOW POOLS / SHOW STATS: clients waiting, longest wait, server connections active);
* ``pool_sizes``: the top step once per PgBouncer ``default_pool_size`` (``--pool-sizes 10,20,40``), with the
  recommended ``default_pool_size`` and ``max_connections`` and how close each size came to saturation;
* ``protocols``: the mixed profile direct at a fixed rate with pgbench ``-M extended`` and ``-M prepared``: the plan
  time prepared statements save (PgBouncer 1.18 has no prepared statements in transaction pooling: through it every
  statement is planned; 1.21+ with max_prepared_statements would run it prepared, measured too when installed).

Every measured part reports the server's CPU per transaction, measured: the user + system time of the PostgreSQL
processes (postmaster and children, /proc via psutil) over the part, divided by its transactions
(``server_cpu_ms_per_tx``), and pg_stat_statements' plan and execution time per transaction (wall time inside the
statements; ``pg_stat_statements.track_planning`` is on in this bench's server). The database is brought to rest
before every timed part (VACUUM ANALYZE after seeding, then no autovacuum worker for a few seconds).

The machine is often shared: before each measured part the script waits (up to ``--quiet-wait`` s) for the CPUs to
be idle, and every part reports how busy the whole machine was while it ran (``host_cpu_pct``), so a figure taken on
a busy machine says so. Prints one JSON document (and writes it with ``--out``).

    .venv/bin/python bench/loadtest.py [--scale 1] [--clients 8] [--duration 10] [--rounds 3] [--ramp 100,1000,10000]
        [--think-time 10] [--ramp-duration 15] [--pool-sizes 10,20,40] [--out bench/loadtest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from dbops.loadtest.measure import local_server, settle  # noqa: E402
from dbops.loadtest.pgbench import Target, pgbench_jobs  # noqa: E402
from dbops.loadtest.pgbouncer import find_pgbouncer, pgbouncer_version  # noqa: E402
from dbops.loadtest.role import loadtest_role  # noqa: E402
from dbops.loadtest.runner import LoadTestPlan, LoadTestResult, StepResult, cleanup_rows, run_load_test  # noqa: E402
from dbops.loadtest.workloads import resolve_profile, workload_variables  # noqa: E402
from dbops.migrate import Migrator  # noqa: E402
from dbops.pg.binaries import find_program  # noqa: E402
from dbops.pg.connect import connection, ensure_database, with_database  # noqa: E402
from dbops.pg.server import EmbeddedServer, free_port  # noqa: E402
from dbops.programs import run_command  # noqa: E402
from dbops.seed import seed  # noqa: E402

TARGETS = {"ratio_dbops_vs_raw": 0.95, "place_order_tps": 3000, "read_p99_ms": 20, "users_tps": 1000,
           "users_p95_ms": 50, "degradation_p95_ratio": 1.5}
QUIET_BUSY_PCT = 10.0
STABLE_WITHIN = 0.10  # place-order rounds within +-10 % of their median
PROTOCOL_CLIENTS = 10  # few connections, many transactions each (a prepared statement is planned ~6x per connection)
PROTOCOL_RATE = 500  # tps: the same offered load for both protocols, well below saturation on 2 cores
SERVER_CPU_LABEL = ("user+system CPU of the PostgreSQL server's processes (postmaster, backends, background workers;"
                    " /proc via psutil) over the step / its transactions")
STATEMENTS_LABEL = ("pg_stat_statements total_plan_time + total_exec_time of the load test role's statements over"
                    " the step / its transactions (wall time inside statements, not CPU)")


def spread(values: list[float]) -> dict[str, float] | None:
    """min/median/max and the relative spread (max - min) / median, plus whether every value is within +-10 %."""
    if not values:
        return None
    median = statistics.median(values)
    return {"min": min(values), "median": round(median, 1), "max": max(values),
            "rel_spread": round((max(values) - min(values)) / median, 3) if median else 0.0,
            "stable_10pct": bool(median) and all(abs(v - median) <= STABLE_WITHIN * median for v in values)}


def settled(url: str, vacuum: bool = False) -> dict[str, Any]:
    """Autovacuum idle for a few seconds (after a VACUUM ANALYZE when ``vacuum``), at most two minutes."""
    return settle(url, vacuum=vacuum, quiet_s=3.0 if vacuum else 2.0, timeout_s=120).as_dict()


def host_busy(seconds: float = 2.0) -> float:
    """Percent of the whole machine's CPU in use over ``seconds``."""
    return round(100.0 - psutil.cpu_times_percent(interval=seconds).idle, 1)


def busy_since(before: Any) -> float:
    """Percent of the whole machine's CPU in use since ``before`` (a psutil.cpu_times())."""
    after = psutil.cpu_times()
    deltas = {f: getattr(after, f) - getattr(before, f) for f in after._fields if f not in ("guest", "guest_nice")}
    total = sum(deltas.values())
    idle = deltas.get("idle", 0.0) + deltas.get("iowait", 0.0)
    return round(100 * (total - idle) / total, 1) if total else 0.0


def wait_quiet(limit_s: float) -> float:
    """Wait until the machine is idle (or ``limit_s`` passed); return how busy it was at the last look."""
    deadline = time.monotonic() + limit_s
    busy = host_busy()
    while busy > QUIET_BUSY_PCT and time.monotonic() < deadline:
        busy = host_busy()
    return busy


def reset_state(url: str) -> None:
    """Every measured run starts alike: the rows the write workload created are gone, and a checkpoint is done
    (so both runs pay the same full-page writes)."""
    cleanup_rows(url)
    with connection(url) as conn:
        conn.execute("VACUUM app.orders, app.order_items, app.payments, app.audit_log")
        conn.execute("CHECKPOINT")


def raw_pgbench(target: Target, script: Path, variables: dict[str, int], clients: int, duration: int) -> float:
    """Plain pgbench, nothing added: the reference tps."""
    argv = [str(find_program("pgbench")), "--no-vacuum", "-h", target.host, "-p", str(target.port), "-U",
            target.user, "-c", str(clients), "-j", str(pgbench_jobs(clients)), "-T", str(duration), "-M", "prepared",
            *[a for k, v in sorted(variables.items()) for a in ("-D", f"{k}={v}")], "-f", f"{script}@1",
            target.dbname]
    out = run_command(argv, password=target.password, timeout=duration + 120, what="pgbench").stdout
    match = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", out, re.M)
    if not match:
        raise RuntimeError(f"no tps in pgbench output: {out[-300:]}")
    return round(float(match[1]), 1)


def dbops_run(url: str, profile: str, clients: int, duration: int, rounds: int = 1) -> LoadTestResult:
    return run_load_test(url, LoadTestPlan(profile=profile, users=[clients], think_time_s=None, duration_s=duration,
                                           warmup_s=0, pooler="direct", rounds=rounds))


def step_figures(s: StepResult) -> dict[str, Any]:
    statements = s.statements or {}
    return {"users": s.users, "offered_tps": s.rate, "tps": s.total["tps"], "transactions": s.total["transactions"],
            "avg_ms": s.total["avg_ms"], "p50_ms": s.total["p50_ms"], "p95_ms": s.total["p95_ms"],
            "p99_ms": s.total["p99_ms"], "max_ms": s.total["max_ms"], "read_avg_ms": s.reads["avg_ms"],
            "read_p99_ms": s.reads["p99_ms"], "write_tps": s.writes["tps"], "lag_p95_ms": s.total["lag_p95_ms"],
            "failures": s.total["failures"] + s.aborted_clients, "pgbench_threads": s.jobs, "protocol": s.protocol,
            "host_cpu_pct": s.host_cpu_pct, "pgbench_cpu_pct": s.pgbench_cpu_pct,
            "pgbouncer_cpu_pct": s.pgbouncer_cpu_pct, "server_cpu_s": s.server_cpu_s,
            "server_cpu_pct": s.server_cpu_pct, "server_cpu_ms_per_tx": s.server_cpu_ms_per_tx,
            "plan_ms_per_tx": statements.get("plan_ms_per_tx"), "exec_ms_per_tx": statements.get("exec_ms_per_tx"),
            "plan_share": statements.get("plan_share"), "statements": statements.get("statements"),
            "pool_size": s.pool_size, "pgbouncer": s.pool,
            "rounds": s.rounds, "tps_spread": s.spread("tps"), "p95_spread": s.spread("p95_ms")}


def steps(result: LoadTestResult) -> list[dict[str, Any]]:
    return [step_figures(s) for s in result.steps]


def place_order(url: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """Raw pgbench vs the dbops run on place_order.sql, alternating which goes first, median of each."""
    variables = workload_variables(url)
    script = resolve_profile("write")[0].path
    raw: list[float] = []
    ours: list[float] = []
    pairs: list[float] = []
    p99: list[float] = []
    cpu_per_tx: list[float] = []
    plan_per_tx: list[float] = []
    busy: list[float] = []
    during: list[float] = []
    with loadtest_role(url) as role:
        target = Target("127.0.0.1", port, "bench", role.name, role.password)
        raw_pgbench(target, script, variables, args.clients, 5)  # warm-up, discarded
        for round_no in range(args.rounds):
            order = ("raw", "dbops") if round_no % 2 == 0 else ("dbops", "raw")
            pair: dict[str, float] = {}
            for which in order:
                reset_state(url)
                settled(url)
                busy.append(wait_quiet(args.quiet_wait))
                before = psutil.cpu_times()
                if which == "raw":
                    pair["raw"] = raw_pgbench(target, script, variables, args.clients, args.duration)
                else:
                    run = dbops_run(url, "write", args.clients, args.duration)
                    pair["dbops"] = run.steps[0].total["tps"]
                    p99.append(run.steps[0].total["p99_ms"])
                    if run.steps[0].server_cpu_ms_per_tx is not None:
                        cpu_per_tx.append(run.steps[0].server_cpu_ms_per_tx)
                    if (run.steps[0].statements or {}).get("plan_ms_per_tx") is not None:
                        plan_per_tx.append(run.steps[0].statements["plan_ms_per_tx"])  # type: ignore[index]
                during.append(busy_since(before))
            raw.append(pair["raw"])
            ours.append(pair["dbops"])
            pairs.append(round(pair["dbops"] / pair["raw"], 3))
    reset_state(url)
    # Each pair ran back to back, so the median of the pair ratios cancels slow drifts of a shared machine.
    return {"clients": args.clients, "duration_s": args.duration, "rounds": args.rounds,
            "raw_pgbench_tps": raw, "dbops_tps": ours, "pair_ratios": pairs, "dbops_p99_ms": p99,
            "raw_median_tps": statistics.median(raw), "dbops_median_tps": statistics.median(ours),
            "raw_tps_spread": spread(raw), "dbops_tps_spread": spread(ours),
            "stable_10pct": bool(spread(ours) and spread(ours)["stable_10pct"]),  # type: ignore[index]
            "server_cpu_ms_per_tx": cpu_per_tx, "plan_ms_per_tx": plan_per_tx,
            "ratio": statistics.median(pairs),
            "ratio_of_medians": round(statistics.median(ours) / statistics.median(raw), 3),
            "host_busy_pct_before_runs": busy, "host_busy_pct_during_runs": during,
            "command": f"pgbench --no-vacuum -M prepared -c {args.clients} -j {pgbench_jobs(args.clients)}"
                       f" -T {args.duration} -f sql/workloads/place_order.sql@1 (-D id ranges)"}


def protocols(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The mixed profile direct at one fixed rate, -M extended then -M prepared: what planning every statement costs
    (the situation through PgBouncer 1.18) and what prepared statements save."""
    out: dict[str, Any] = {"clients": PROTOCOL_CLIENTS, "offered_tps": PROTOCOL_RATE, "via": "direct"}
    for protocol in ("extended", "prepared"):
        reset_state(url)
        settled(url)
        result = run_load_test(url, LoadTestPlan(profile="mixed", users=[PROTOCOL_CLIENTS], think_time_s=None,
                                                 rate=PROTOCOL_RATE, duration_s=args.duration, warmup_s=3,
                                                 pooler="direct", protocol=protocol))
        out[protocol] = step_figures(result.steps[0])
    ext, prep = out["extended"], out["prepared"]
    if ext["server_cpu_ms_per_tx"] and prep["server_cpu_ms_per_tx"]:
        out["server_cpu_ms_per_tx_saved"] = round(ext["server_cpu_ms_per_tx"] - prep["server_cpu_ms_per_tx"], 4)
        out["server_cpu_saved_share"] = round(1 - prep["server_cpu_ms_per_tx"] / ext["server_cpu_ms_per_tx"], 3)
    if ext["plan_ms_per_tx"] is not None and prep["plan_ms_per_tx"] is not None:
        out["plan_ms_per_tx_saved"] = round(ext["plan_ms_per_tx"] - prep["plan_ms_per_tx"], 4)
    bouncer = pgbouncer_version(find_pgbouncer())
    out["through_pgbouncer_prepared"] = {
        "pgbouncer": ".".join(map(str, bouncer)), "supported": bouncer >= (1, 21),
        "note": "PgBouncer 1.21+ with max_prepared_statements keeps -M prepared in transaction pooling"
                if bouncer >= (1, 21) else f"PgBouncer {bouncer[0]}.{bouncer[1]} has no max_prepared_statements "
                                           "(1.21+): through it pgbench runs -M extended, every statement planned"}
    if bouncer >= (1, 21):
        result = run_load_test(url, LoadTestPlan(profile="mixed", users=[PROTOCOL_CLIENTS], think_time_s=None,
                                                 rate=PROTOCOL_RATE, duration_s=args.duration, warmup_s=3,
                                                 pooler="pgbouncer", protocol="prepared"))
        out["through_pgbouncer_prepared"]["figures"] = step_figures(result.steps[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds per raw/dbops run, per read round and per protocol run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="raw/dbops pairs (order alternating), read rounds and rounds of every ramp step")
    parser.add_argument("--ramp", default="100,1000,10000")
    parser.add_argument("--ramp-duration", type=int, default=15, help="seconds per ramp step round")
    parser.add_argument("--think-time", type=float, default=10.0, help="seconds per user between transactions")
    parser.add_argument("--pool-sizes", default="10,20,40",
                        help="PgBouncer default_pool_size sweep at the top ramp step ('' to skip)")
    parser.add_argument("--pool-size", type=int, default=20, help="PgBouncer default_pool_size of the ramp")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="seconds to wait for an idle machine")
    parser.add_argument("--no-track-planning", action="store_true",
                        help="pg_stat_statements.track_planning off (no plan time; its own overhead gone)")
    parser.add_argument("--skip-place-order", action="store_true")
    parser.add_argument("--skip-read", action="store_true")
    parser.add_argument("--skip-protocols", action="store_true")
    parser.add_argument("--skip-ramp", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pool_sizes = [int(v) for v in args.pool_sizes.split(",") if v.strip()] if args.pool_sizes else []

    home = Path(tempfile.mkdtemp(prefix="dbops-bench-loadtest-"))
    track = "off" if args.no_track_planning else "on"
    server = EmbeddedServer(home, free_port(), extra_settings={"pg_stat_statements.track_planning": track})
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_before": [round(v, 2) for v in os.getloadavg()]},
        "scale": args.scale, "targets": TARGETS,
        "command": " ".join(["bench/loadtest.py", *sys.argv[1:]]),
        "settings": {"pg_stat_statements.track_planning": track},
        "measures": {"server_cpu_ms_per_tx": SERVER_CPU_LABEL, "statements_ms_per_tx": STATEMENTS_LABEL},
    }
    started_all = time.monotonic()
    try:
        server.start()
        ensure_database(server.url("postgres"), "bench")
        url = with_database(server.url("postgres"), "bench")
        Migrator(url, PROJECT / "sql" / "migrations").apply()
        with connection(url) as conn:  # the plan/exec figures of every part
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        started = time.monotonic()
        seed(url, args.scale)
        report["seed_s"] = round(time.monotonic() - started, 1)
        report["settle_after_seed"] = settled(url, vacuum=True)
        report["machine"]["postgres"] = server.version()
        report["machine"]["pgbouncer"] = ".".join(map(str, pgbouncer_version(find_pgbouncer())))
        _, report["machine"]["server_cpu_unmeasured"] = local_server(url)

        # 1. raw pgbench vs dbops on place_order.
        if not args.skip_place_order:
            report["place_order"] = place_order(url, server.port, args)
            print(json.dumps({k: v for k, v in report["place_order"].items() if "busy" not in k}), file=sys.stderr,
                  flush=True)

        # 2. reads, closed loop.
        if not args.skip_read:
            dbops_run(url, "read", args.clients, 3)  # warm-up, discarded
            report["read_settle"] = settled(url)
            busy = wait_quiet(args.quiet_wait)
            reads = dbops_run(url, "read", args.clients, args.duration, args.rounds)
            report["read"] = {"clients": args.clients, "host_busy_pct_before": busy, **steps(reads)[0]}
            print(json.dumps({k: report["read"][k] for k in ("tps", "p99_ms", "server_cpu_ms_per_tx")}),
                  file=sys.stderr, flush=True)

        # 3. what planning costs: -M extended vs -M prepared at one rate.
        if not args.skip_protocols:
            report["protocols"] = protocols(url, args)
            print(json.dumps({k: v for k, v in report["protocols"].items() if k not in ("extended", "prepared")}),
                  file=sys.stderr, flush=True)

        # 4. the users ramp through PgBouncer with think time (the first step is also run as a discarded warm-up),
        #    then the pool-size sweep at its top step.
        if not args.skip_ramp:
            ramp = [int(v) for v in args.ramp.split(",")]
            reset_state(url)
            report["ramp_settle"] = settled(url)
            busy = wait_quiet(args.quiet_wait)
            started = time.monotonic()
            users = run_load_test(url, LoadTestPlan(profile="mixed", users=ramp, think_time_s=args.think_time,
                                                    duration_s=args.ramp_duration, warmup_s=5, pooler="pgbouncer",
                                                    pool_size=args.pool_size, rounds=args.rounds,
                                                    pool_sizes=pool_sizes or None),
                                  progress=lambda m: print(m, file=sys.stderr, flush=True))
            report["users"] = {"profile": "mixed", "think_time_s": args.think_time, "via": users.via,
                               "pool_size": args.pool_size, "host_busy_pct_before": busy, "steps": steps(users),
                               "degradation_p95_ratio": users.degradation,
                               "wall_s": round(time.monotonic() - started, 1)}
            if users.pool_sweep:
                report["pool_sizes"] = {"users": ramp[-1], "think_time_s": args.think_time,
                                        "steps": [step_figures(s) for s in users.pool_sweep],
                                        "recommendation": users.pool_recommendation}
            print(users.table(), file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    report["wall_s"] = round(time.monotonic() - started_all, 1)
    report["machine"]["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    report["summary"] = summary(report, args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def summary(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The headline figures (the last ramp step for the users figures)."""
    last = report["users"]["steps"][-1] if "users" in report else None
    place = report.get("place_order")
    read = report.get("read")
    statements = None
    if last and last["exec_ms_per_tx"] is not None:
        statements = round((last["plan_ms_per_tx"] or 0.0) + last["exec_ms_per_tx"], 4)
    pools = report.get("pool_sizes", {}).get("recommendation")
    return {
        "ratio_dbops_vs_raw": place["ratio"] if place else None,
        "place_order_tps": place["dbops_median_tps"] if place else None,
        "place_order_tps_spread": place["dbops_tps_spread"] if place else None,
        "place_order_stable_10pct": place["stable_10pct"] if place else None,
        "read_p99_ms": read["p99_ms"] if read else None,
        "think_time_s": args.think_time if last else None,
        "users": last["users"] if last else None,
        "users_tps": last["tps"] if last else None,
        "users_p95_ms": last["p95_ms"] if last else None,
        "users_p99_ms": last["p99_ms"] if last else None,
        "users_p95_spread": last["p95_spread"] if last else None,
        "degradation_p95_ratio": report["users"]["degradation_p95_ratio"] if last else None,
        "server_cpu_ms_per_tx": last["server_cpu_ms_per_tx"] if last else None,
        "server_cpu_pct": last["server_cpu_pct"] if last else None,
        "statements_ms_per_tx": statements,
        "plan_ms_per_tx": last["plan_ms_per_tx"] if last else None,
        "exec_ms_per_tx": last["exec_ms_per_tx"] if last else None,
        "pgbouncer_max_cl_waiting": (last["pgbouncer"] or {}).get("max_cl_waiting") if last else None,
        "pgbouncer_max_maxwait_ms": (last["pgbouncer"] or {}).get("max_maxwait_ms") if last else None,
        "pgbouncer_max_sv_active": (last["pgbouncer"] or {}).get("max_sv_active") if last else None,
        "recommended_default_pool_size": pools["default_pool_size"] if pools else None,
        "recommended_max_connections": pools["max_connections"] if pools else None,
        "prepared_server_cpu_ms_per_tx_saved": report.get("protocols", {}).get("server_cpu_ms_per_tx_saved"),
        "prepared_plan_ms_per_tx_saved": report.get("protocols", {}).get("plan_ms_per_tx_saved"),
        "cpus": report["machine"]["cpus"],
        "load_avg_before": report["machine"]["load_avg_before"],
        "load_avg_after": report["machine"]["load_avg_after"],
    }


if __name__ == "__main__":
    main()

"""Benchmark the load test: raw pgbench vs ``dbops loadtest`` on the same script, plus the reference figures.

On a throw-away PostgreSQL (the embedded 18, server defaults: fsync and synchronous_commit on) seeded at ``--scale``:

* ``place_order``: raw pgbench (nothing added) and the dbops run (``-l`` logs parsed into percentiles) on
  ``sql/workloads/place_order.sql``, same clients, same duration, after a discarded warm-up; ``--rounds`` pairs whose
  order alternates (raw first, then dbops first), every run starting from the same state (the rows it created
  deleted, a checkpoint); ratio = median over the pairs of dbops tps / raw tps (target >= 0.95; aim >= 3,000 tps);
* ``read``: the read profile, closed loop, direct: p99 (aim < 20 ms);
* ``users``: the mixed profile through PgBouncer, a users ramp (default 100 -> 1,000 -> 10,000) with ``--think-time``
  per user (each user one transaction every think time, Little's law: offered tps = users / think time): tps and p95
  at the last step (aim >= 1,000 tps and p95 < 50 ms) and the degradation p95(last) / p95(first) (target <= 1.5).

The machine is often shared: before each measured part the script waits (up to ``--quiet-wait`` s) for the CPUs to
be idle, and every part reports how busy the whole machine was while it ran (``host_cpu_pct``), so a figure taken on
a busy machine says so. Prints one JSON document (and writes it with ``--out``).

    .venv/bin/python bench/loadtest.py [--scale 1] [--clients 8] [--duration 15] [--rounds 5] [--ramp 100,1000,10000]
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

from dbops.loadtest.pgbench import Target, pgbench_jobs  # noqa: E402
from dbops.loadtest.pgbouncer import find_pgbouncer, pgbouncer_version  # noqa: E402
from dbops.loadtest.role import loadtest_role  # noqa: E402
from dbops.loadtest.runner import LoadTestPlan, LoadTestResult, cleanup_rows, run_load_test  # noqa: E402
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


def dbops_run(url: str, profile: str, clients: int, duration: int) -> LoadTestResult:
    return run_load_test(url, LoadTestPlan(profile=profile, users=[clients], think_time_s=None, duration_s=duration,
                                           warmup_s=0, pooler="direct"))


def steps(result: LoadTestResult) -> list[dict[str, Any]]:
    return [{"users": s.users, "offered_tps": s.rate, "tps": s.total["tps"], "transactions": s.total["transactions"],
             "avg_ms": s.total["avg_ms"], "p50_ms": s.total["p50_ms"], "p95_ms": s.total["p95_ms"],
             "p99_ms": s.total["p99_ms"], "max_ms": s.total["max_ms"], "read_avg_ms": s.reads["avg_ms"],
             "read_p99_ms": s.reads["p99_ms"], "write_tps": s.writes["tps"], "lag_p95_ms": s.total["lag_p95_ms"],
             "failures": s.total["failures"] + s.aborted_clients, "pgbench_threads": s.jobs,
             "host_cpu_pct": s.host_cpu_pct, "pgbench_cpu_pct": s.pgbench_cpu_pct,
             "pgbouncer_cpu_pct": s.pgbouncer_cpu_pct} for s in result.steps]


def place_order(url: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """Raw pgbench vs the dbops run on place_order.sql, alternating which goes first, median of each."""
    variables = workload_variables(url)
    script = resolve_profile("write")[0].path
    raw: list[float] = []
    ours: list[float] = []
    pairs: list[float] = []
    p99: list[float] = []
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
                busy.append(wait_quiet(args.quiet_wait))
                before = psutil.cpu_times()
                if which == "raw":
                    pair["raw"] = raw_pgbench(target, script, variables, args.clients, args.duration)
                else:
                    run = dbops_run(url, "write", args.clients, args.duration)
                    pair["dbops"] = run.steps[0].total["tps"]
                    p99.append(run.steps[0].total["p99_ms"])
                during.append(busy_since(before))
            raw.append(pair["raw"])
            ours.append(pair["dbops"])
            pairs.append(round(pair["dbops"] / pair["raw"], 3))
    reset_state(url)
    # Each pair ran back to back, so the median of the pair ratios cancels slow drifts of a shared machine.
    return {"clients": args.clients, "duration_s": args.duration, "rounds": args.rounds,
            "raw_pgbench_tps": raw, "dbops_tps": ours, "pair_ratios": pairs, "dbops_p99_ms": p99,
            "raw_median_tps": statistics.median(raw), "dbops_median_tps": statistics.median(ours),
            "ratio": statistics.median(pairs),
            "ratio_of_medians": round(statistics.median(ours) / statistics.median(raw), 3),
            "host_busy_pct_before_runs": busy, "host_busy_pct_during_runs": during,
            "command": f"pgbench --no-vacuum -M prepared -c {args.clients} -j {pgbench_jobs(args.clients)}"
                       f" -T {args.duration} -f sql/workloads/place_order.sql@1 (-D id ranges)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=int, default=15, help="seconds per raw/dbops run and for the read run")
    parser.add_argument("--rounds", type=int, default=5, help="raw/dbops pairs, order alternating (median of each)")
    parser.add_argument("--ramp", default="100,1000,10000")
    parser.add_argument("--ramp-duration", type=int, default=20)
    parser.add_argument("--think-time", type=float, default=10.0, help="seconds per user between transactions")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="seconds to wait for an idle machine")
    parser.add_argument("--skip-ramp", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="dbops-bench-loadtest-"))
    server = EmbeddedServer(home, free_port())
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "scale": args.scale, "targets": TARGETS}
    started_all = time.monotonic()
    try:
        server.start()
        ensure_database(server.url("postgres"), "bench")
        url = with_database(server.url("postgres"), "bench")
        Migrator(url, PROJECT / "sql" / "migrations").apply()
        started = time.monotonic()
        seed(url, args.scale)
        with connection(url) as conn:
            conn.execute("VACUUM ANALYZE")
        report["seed_s"] = round(time.monotonic() - started, 1)
        report["machine"]["postgres"] = server.version()
        report["machine"]["pgbouncer"] = ".".join(map(str, pgbouncer_version(find_pgbouncer())))

        # 1. raw pgbench vs dbops on place_order.
        report["place_order"] = place_order(url, server.port, args)
        print(json.dumps(report["place_order"]), file=sys.stderr, flush=True)

        # 2. reads, closed loop.
        dbops_run(url, "read", args.clients, 3)  # warm-up, discarded
        busy = wait_quiet(args.quiet_wait)
        reads = dbops_run(url, "read", args.clients, args.duration)
        report["read"] = {"clients": args.clients, "host_busy_pct_before": busy, **steps(reads)[0]}
        print(json.dumps(report["read"]), file=sys.stderr, flush=True)

        # 3. the users ramp through PgBouncer with think time (the first step is also run as a discarded warm-up).
        if not args.skip_ramp:
            ramp = [int(v) for v in args.ramp.split(",")]
            busy = wait_quiet(args.quiet_wait)
            started = time.monotonic()
            users = run_load_test(url, LoadTestPlan(profile="mixed", users=ramp, think_time_s=args.think_time,
                                                    duration_s=args.ramp_duration, warmup_s=5, pooler="pgbouncer"),
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
            report["users"] = {"profile": "mixed", "think_time_s": args.think_time, "via": users.via,
                               "host_busy_pct_before": busy, "steps": steps(users),
                               "degradation_p95_ratio": users.degradation,
                               "wall_s": round(time.monotonic() - started, 1)}
            print(users.table(), file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    report["wall_s"] = round(time.monotonic() - started_all, 1)
    last = report["users"]["steps"][-1] if "users" in report else None
    report["summary"] = {
        "ratio_dbops_vs_raw": report["place_order"]["ratio"],
        "place_order_tps": report["place_order"]["dbops_median_tps"],
        "read_p99_ms": report["read"]["p99_ms"],
        "think_time_s": args.think_time if last else None,
        "users": last["users"] if last else None,
        "users_tps": last["tps"] if last else None,
        "users_p95_ms": last["p95_ms"] if last else None,
        "degradation_p95_ratio": report["users"]["degradation_p95_ratio"] if last else None,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Benchmark the load test: raw pgbench vs ``dbops loadtest`` on the same script, plus the reference figures.

On a throw-away PostgreSQL (the embedded 18) seeded at ``--scale``:

* ``place_order``: raw pgbench (no per-transaction log, nothing else) and the dbops run (``-l`` logs parsed into
  percentiles) on ``sql/workloads/place_order.sql`` with the same clients and duration, alternated ``--rounds``
  times after a discarded warm-up; ratio = median dbops tps / median raw tps (target >= 0.95; aim >= 3,000 tps);
* ``read``: the read profile closed loop: p99 (aim < 20 ms);
* ``users``: the mixed profile through PgBouncer with think time, a users ramp (default 100 -> 10,000): tps and p95 at
  10,000 users (aim >= 1,000 tps, p95 < 50 ms) and the degradation p95(last) / p95(first).

Prints one JSON document (and writes it with ``--out``).

    .venv/bin/python -m bench.loadtest [--scale 1] [--clients 8] [--duration 20] [--ramp 100,1000,5000,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dbops.loadtest.pgbench import Target, pgbench_jobs
from dbops.loadtest.pgbouncer import find_pgbouncer, pgbouncer_version
from dbops.loadtest.role import loadtest_role
from dbops.loadtest.runner import LoadTestPlan, LoadTestResult, run_load_test
from dbops.loadtest.workloads import resolve_profile, workload_variables
from dbops.migrate import Migrator
from dbops.pg.commands import find_program, run_command
from dbops.pg.connect import ensure_database, with_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops.seed import seed

PROJECT = Path(__file__).resolve().parent.parent
DURABLE: dict[str, str] = {}  # the server's own defaults (fsync, synchronous_commit on)
FAST = {"synchronous_commit": "off"}


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
    return float(match[1])


def steps(result: LoadTestResult) -> list[dict[str, Any]]:
    return [{"users": s.users, "rate": s.rate, "tps": s.total["tps"], "avg_ms": s.total["avg_ms"],
             "p50_ms": s.total["p50_ms"], "p95_ms": s.total["p95_ms"], "p99_ms": s.total["p99_ms"],
             "max_ms": s.total["max_ms"], "read_avg_ms": s.reads["avg_ms"], "write_tps": s.writes["tps"],
             "failures": s.total["failures"] + s.aborted_clients} for s in result.steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--ramp", default="100,1000,5000,10000")
    parser.add_argument("--ramp-duration", type=int, default=30)
    parser.add_argument("--think-time", type=float, default=5.0)
    parser.add_argument("--settings", choices=["durable", "fast"], default="durable",
                        help="durable: server defaults; fast: synchronous_commit=off")
    parser.add_argument("--rounds", type=int, default=3, help="raw/dbops alternations (median of each)")
    parser.add_argument("--skip-ramp", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="dbops-bench-loadtest-"))
    server = EmbeddedServer(home, free_port(), None, DURABLE if args.settings == "durable" else FAST)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "settings": args.settings, "scale": args.scale}
    try:
        server.start()
        ensure_database(server.url("postgres"), "bench")
        url = with_database(server.url("postgres"), "bench")
        Migrator(url, PROJECT / "sql" / "migrations").apply()
        started = time.monotonic()
        seed(url, args.scale)
        report["seed_s"] = round(time.monotonic() - started, 1)
        report["machine"]["postgres"] = server.version()
        report["machine"]["pgbouncer"] = ".".join(map(str, pgbouncer_version(find_pgbouncer())))
        variables = workload_variables(url)
        script = resolve_profile("write")[0].path

        # 1. raw pgbench vs dbops on place_order, alternated, after a discarded warm-up.
        with loadtest_role(url) as role:
            target = Target("127.0.0.1", server.port, "bench", role.name, role.password)
            raw_pgbench(target, script, variables, args.clients, 5)
            raw, ours, p99 = [], [], []
            for _ in range(args.rounds):
                raw.append(raw_pgbench(target, script, variables, args.clients, args.duration))
                run = run_load_test(url, LoadTestPlan(profile="write", users=[args.clients], think_time_s=None,
                                                      duration_s=args.duration, warmup_s=0, pooler="direct"))
                ours.append(run.steps[0].total["tps"])
                p99.append(run.steps[0].total["p99_ms"])
        report["place_order"] = {
            "clients": args.clients, "duration_s": args.duration, "raw_pgbench_tps": raw, "dbops_tps": ours,
            "ratio": round(statistics.median(ours) / statistics.median(raw), 3), "dbops_p99_ms": p99,
            "command": f"pgbench -M prepared -c {args.clients} -T {args.duration} -f place_order.sql",
        }
        print(json.dumps(report["place_order"]), flush=True)

        # 2. reads, closed loop.
        reads = run_load_test(url, LoadTestPlan(profile="read", users=[args.clients], think_time_s=None,
                                                duration_s=args.duration, warmup_s=3, pooler="direct"))
        report["read"] = {"clients": args.clients, **steps(reads)[0]}
        print(json.dumps(report["read"]), flush=True)

        # 3. users ramp through PgBouncer with think time.
        if not args.skip_ramp:
            ramp = [int(v) for v in args.ramp.split(",")]
            started = time.monotonic()
            users = run_load_test(url, LoadTestPlan(profile="mixed", users=ramp, think_time_s=args.think_time,
                                                    duration_s=args.ramp_duration, warmup_s=5, pooler="pgbouncer"),
                                  log=lambda m: print(m, flush=True))
            report["users"] = {"profile": "mixed", "think_time_s": args.think_time, "via": users.via,
                               "steps": steps(users), "degradation_p95_ratio": users.degradation,
                               "wall_s": round(time.monotonic() - started, 1), "table": users.table()}
            print(users.table(), flush=True)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

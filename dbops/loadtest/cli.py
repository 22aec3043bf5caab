"""`dbops loadtest`: run a workload profile with N users (or a ramp) and print the figures table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dbops.embedded import ensure_embedded
from dbops.errors import DbopsError
from dbops.loadtest.replay import NothingToReplay
from dbops.loadtest.runner import DEFAULT_THINK_TIME_S, LoadTestPlan, run_load_test
from dbops.loadtest.workloads import OWN_PROFILE, PROFILES, REPLAY_PROFILE, LoadTestError
from dbops.settings import Settings

EXIT_NOTHING_CHECKED = 3  # the replay profile found nothing to replay: no figure would mean anything


def _ramp(text: str, what: str = "ramp", example: str = "100,1000,5000,10000") -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad {what} {text!r}: use e.g. {example}") from exc
    if not values:
        raise argparse.ArgumentTypeError(f"empty {what}")
    return values


def _sizes(text: str) -> list[int]:
    return _ramp(text, "list", "10,20,40")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbops loadtest", description=__doc__)
    parser.add_argument("--profile", default="mixed",
                        help=f"{', '.join(sorted(PROFILES))} (dbops' reference workloads, schema app), {OWN_PROFILE} "
                             "(every script of the target's loadtest.workloads folder), "
                             f"{REPLAY_PROFILE} (the database's top read statements from pg_stat_statements), "
                             "or scripts: name@10 (in loadtest.workloads) or a.sql@10,b.sql@1 (default mixed)")
    parser.add_argument("--users", type=int, default=100, help="concurrent users = pgbench clients (default 100)")
    parser.add_argument("--ramp", type=_ramp, help="user steps, e.g. 100,1000,5000,10000 (overrides --users)")
    parser.add_argument("--duration", type=int, default=30, help="seconds per step (default 30)")
    parser.add_argument("--think-time", type=float, default=DEFAULT_THINK_TIME_S,
                        help="seconds between a user's transactions (default 10; 0 = closed loop, full speed)")
    parser.add_argument("--rate", type=float, help="total transactions/s for a closed-loop run (pgbench -R)")
    parser.add_argument("--pooler", choices=["auto", "pgbouncer", "direct"], default="auto",
                        help="auto: PgBouncer when users exceed the server's max_connections")
    parser.add_argument("--pool-size", type=int, default=20, help="PgBouncer server connections (default 20)")
    parser.add_argument("--pool-sizes", type=_sizes,
                        help="sweep PgBouncer's default_pool_size at the top step, e.g. 10,20,40: recommends "
                             "default_pool_size and max_connections from the measured tps and p95")
    parser.add_argument("--rounds", type=int, default=1, help="run each step this many times, report the spread")
    parser.add_argument("--settle", action="store_true",
                        help="VACUUM ANALYZE and wait for autovacuum to be idle before anything runs")
    parser.add_argument("--protocol", choices=["simple", "extended", "prepared"],
                        help="pgbench -M (default prepared; extended through a PgBouncer without prepared statements)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up seconds, discarded (default 5)")
    parser.add_argument("--seed", type=int, help="pgbench --random-seed, to repeat a run exactly")
    parser.add_argument("--keep-rows", action="store_true", help="keep the rows the write workload created")
    parser.add_argument("--allow-production", action="store_true",
                        help="run even though DBOPS_PRODUCTION marks the target as production")
    parser.add_argument("--replay-dir", type=Path,
                        help="keep the replay profile's scripts in this folder (private: they hold sampled values)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    return parser


def main(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    plan = LoadTestPlan(
        profile=args.profile, users=args.ramp or [args.users], duration_s=args.duration,
        think_time_s=args.think_time or None, rate=args.rate, pooler=args.pooler, pool_size=args.pool_size,
        warmup_s=args.warmup, cleanup=not args.keep_rows, random_seed=args.seed, bin_dir=settings.pg_bin,
        workloads_dir=settings.target().loadtest.workloads, pgbouncer=settings.pgbouncer,
        replay_statements=settings.target().loadtest.replay_statements,
        exclude_roles=tuple(settings.target().profile.exclude_roles), replay_dir=args.replay_dir,
        rounds=args.rounds, settle=args.settle, pool_sizes=args.pool_sizes, protocol=args.protocol,
    )
    production = settings.target().production
    try:
        if settings.embedded:
            ensure_embedded(settings)
        result = run_load_test(settings.target_url(), plan, production=production,
                               allow_production=args.allow_production,
                               progress=lambda m: print(m, file=sys.stderr, flush=True))
    except NothingToReplay as exc:
        print(f"nothing checked: {exc}", file=sys.stderr)
        return EXIT_NOTHING_CHECKED
    except (DbopsError, LoadTestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        figures: dict[str, object] = dict(result.metadata())
        if result.replay is not None:
            figures["replay"] = result.replay.summary()
        if result.pool_recommendation is not None:
            figures["pool_recommendation"] = result.pool_recommendation
        print(json.dumps(figures, indent=2))
    else:
        print(result.table())
    return 1 if result.failures else 0

"""Benchmark integrity validation: Great Expectations (dbops.validate) against the same checks as hand-written SQL.

Seeds the reference schema on a throw-away PostgreSQL at two sizes (default 1 and 10 million rows in total), then
validates every seeded day of the fact tables plus the dimension tables:

* ``gx``: dbops.validate in a child process (so its peak RSS is its own), one GX batch per table and day;
* ``sql_per_day``: the same checks hand-written, same day batches: one aggregate query per table and day with a
  ``count(*) FILTER (WHERE ...)`` per row rule, plus one ``count(*)`` per multi-row rule (duplicates, orphans);
* ``sql_whole_range``: the same hand-written SQL over the whole seeded range at once (the fastest possible run).

Each timed pass follows a discarded warm-up pass. Prints one JSON document (and writes it with ``--out``).

    .venv/bin/python -m bench.validate [--rows 10000000] [--small-rows 1000000] [--out bench/validate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql

from dbops.migrate import Migrator
from dbops.pg.connect import connection, ensure_database, with_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops.programs import run_command
from dbops.seed import DAYS, seed
from dbops.validate.run import IntegrityValidator, day_bounds, days_between
from dbops.validate.suite import TablePlan, batch_query

PROJECT = Path(__file__).resolve().parent.parent
ROWS_PER_SCALE = 465_000  # orders 100k + items ~250k + payments ~85k + users, products, inventory at scale 1
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'1GB'",
    "work_mem": "'64MB'",
    "maintenance_work_mem": "'512MB'",
    "max_wal_size": "'8GB'",
}


def seeded_days() -> list[date]:
    today = datetime.now(UTC).date()
    return days_between(today - timedelta(days=DAYS), today)


def counts_query(plan: TablePlan, source: str) -> list[sql.Composable]:
    """The hand-written equivalent of ``plan.checks`` over ``source``: one aggregate plus one count per multi-row
    rule."""
    batch = sql.SQL("({}) AS batch").format(sql.SQL(source))  # type: ignore[arg-type]
    filters = [sql.SQL("count(*)")]  # row_count rules and the batch size
    for check in plan.checks:
        if check.predicate:
            filters.append(sql.SQL("count(*) FILTER (WHERE {})").format(sql.SQL(check.predicate)))  # type: ignore[arg-type]
    queries: list[sql.Composable] = [sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(filters), batch)]
    for check in plan.checks:
        if check.rows_query:
            inner = sql.SQL(check.rows_query.format(batch=batch.as_string(None)))  # type: ignore[arg-type]
            queries.append(sql.SQL("SELECT count(*) FROM ({}) AS unexpected").format(inner))
    return queries


def run_sql(url: str, plans: list[TablePlan], days: list[date] | None) -> dict[str, Any]:
    """Hand-written validation: per day when ``days`` is given, else the whole table at once."""
    started = time.monotonic()
    statements = 0
    violations = 0
    with connection(url) as conn:
        for plan in plans:
            if plan.time_column and days:
                sources = [batch_query(plan, *day_bounds(d)) for d in days]
            else:
                sources = [batch_query(plan)]
            for source in sources:
                for query in counts_query(plan, source):
                    row = conn.execute(query).fetchone() or ()
                    statements += 1
                    violations += sum(int(v or 0) for v in row[1:]) if len(row) > 1 else int(row[0] or 0)
    return {"seconds": round(time.monotonic() - started, 2), "statements": statements, "violations": violations}


def worker(url: str) -> None:
    """Child process: validate every seeded day and the dimensions with GX; print timings and peak RSS.

    ``setup_seconds`` (importing GX, planning from the catalog, creating the ephemeral context) is paid once per
    process and reported apart from ``seconds``, the validation itself.
    """
    started = time.monotonic()
    evaluated = failed = 0
    with IntegrityValidator(url) as validator:
        validator._validator()  # noqa: SLF001 - import GX and build the context before the clock starts
        setup = time.monotonic() - started
        started = time.monotonic()
        for report in [*validator.validate_days(seeded_days()), validator.validate_dimensions()]:
            evaluated += report.evaluated
            failed += report.failed
    seconds = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": round(seconds, 2), "setup_seconds": round(setup, 2), "expectations": evaluated,
                      "failed": failed, "peak_rss_mib": round(peak_kib / 1024, 1)}))


def run_gx(url: str) -> dict[str, Any]:
    proc = run_command([sys.executable, "-m", "bench.validate", "--worker"], env={"BENCH_DATABASE_URL": url},
                       cwd=PROJECT, timeout=7200, what="GX validation worker")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table_rows(url: str) -> dict[str, int]:
    with connection(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'app' AND c.relkind = 'r' AND NOT c.relispartition ORDER BY 1"
        ).fetchall()
        parts = conn.execute(
            "SELECT p.relname, sum(c.reltuples)::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = 'app' AND c.relkind IN ('r', 'p') GROUP BY 1"
        ).fetchall()
    return {name: max(int(n), 0) for name, n in [*rows, *parts]}


def measure(server: EmbeddedServer, rows: int) -> dict[str, Any]:
    name = f"bench_validate_{rows}"
    ensure_database(server.url("postgres"), name)
    url = with_database(server.url("postgres"), name)
    Migrator(url, PROJECT / "sql" / "migrations").apply()
    scale = rows / ROWS_PER_SCALE
    started = time.monotonic()
    seed(url, scale)
    with connection(url) as conn:
        conn.execute("VACUUM ANALYZE")
    seed_seconds = time.monotonic() - started
    counts = table_rows(url)
    with IntegrityValidator(url) as validator:
        plans = validator.plans
    days = seeded_days()
    run_sql(url, plans, None)  # warm-up: the data set in shared buffers / page cache for both contenders
    gx = run_gx(url)
    per_day = run_sql(url, plans, days)
    whole = run_sql(url, plans, None)
    return {
        "target_rows": rows,
        "seed_scale": round(scale, 3),
        "seed_seconds": round(seed_seconds, 1),
        "rows": sum(counts.values()),
        "rows_by_table": counts,
        "days": len(days),
        "gx": gx,
        "sql_per_day": per_day,
        "sql_whole_range": whole,
        "ratio_vs_sql_per_day": round(gx["seconds"] / max(per_day["seconds"], 1e-9), 2),
        "ratio_vs_sql_whole_range": round(gx["seconds"] / max(whole["seconds"], 1e-9), 2),
        "ratio_with_setup_vs_sql_whole_range": round(
            (gx["seconds"] + gx["setup_seconds"]) / max(whole["seconds"], 1e-9), 2
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--small-rows", type=int, default=1_000_000, help="second size, to show RSS is bounded")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(os.environ["BENCH_DATABASE_URL"])
        return 0
    home = Path(tempfile.mkdtemp(prefix="dbops-bench-validate-"))
    server = EmbeddedServer(home, free_port(), None, SERVER_SETTINGS)
    server.start()
    try:
        sizes = [s for s in (args.small_rows, args.rows) if s > 0]
        results = [measure(server, rows) for rows in sizes]
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    doc = {
        "benchmark": "integrity validation: GX (dbops.validate) vs hand-written SQL",
        "machine": {"cpus": os.cpu_count()},
        "results": results,
        "peak_rss_mib_by_rows": {r["rows"]: r["gx"]["peak_rss_mib"] for r in results},
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

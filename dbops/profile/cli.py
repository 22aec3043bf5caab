"""`dbops profile` (top statements, plans, table facts) and `dbops advise` (index advice verified on a scratch copy).

Environment: ``DBOPS_REVIEW_DIR`` (where review migrations go, default ``review/migrations``),
``DBOPS_SCRATCH_URL`` (a restored copy to verify on instead of a clone of the target; it holds a password, so it is
read from the environment only).
"""

from __future__ import annotations

import argparse
import sys

from dbops.embedded import ensure_embedded
from dbops.health.targets import load_targets
from dbops.pg.connect import connection, database_name
from dbops.profile.advise import advise
from dbops.profile.plans import explain_top
from dbops.profile.report import advice_table, profile_table, render_text, summary_lines, tables_table
from dbops.profile.review import review_dir
from dbops.profile.statements import SnapshotStore, profile
from dbops.profile.tables import table_facts
from dbops.redact import redact_url
from dbops.settings import Settings

EXIT_NOTHING_CHECKED = 3
IDLE_REASON = "no statement ran since the previous profile (or the statistics reset), so no statement was judged"


def _progress(message: str) -> None:
    """Each phase as it happens, on stderr (the tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def _target(settings: Settings) -> str:
    if settings.embedded:
        ensure_embedded(settings)
    return settings.target_url()


def profile_main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="dbops profile", description="Top statements since the last profile"
                                     " (or the stats reset), their plans' anti-patterns, and table facts.")
    parser.add_argument("--top", type=int, default=20, help="how many statements to show (default 20)")
    parser.add_argument("--since-reset", action="store_true",
                        help="cumulative since the pg_stat_statements reset; do not update the stored snapshot")
    parser.add_argument("--no-plans", action="store_true", help="skip EXPLAIN of the top statements")
    args = parser.parse_args(argv)
    target = settings.target()
    slow_limit = load_targets(target.targets_file).limits.slow_query_mean_ms  # a bad file fails before the profile
    url = _target(settings)
    store = None if args.since_reset else SnapshotStore(settings.home / "profile", database_name(url))
    with connection(url) as conn:
        prof = profile(conn, store, args.top, target.profile.exclude_roles, progress=_progress)
        plans = {} if args.no_plans else explain_top(conn, prof.top, progress=_progress)
        facts = table_facts(conn)
    print(f"query profile of {redact_url(url)}")
    print("\n".join(summary_lines(prof, facts)))
    print()
    print(render_text("top statements by total time", profile_table(prof, plans)))
    print()
    print(render_text("tables", tables_table(facts)))
    if prof.slowest_10pct_mean_ms is None:
        print(f"nothing checked: {IDLE_REASON}")
        return EXIT_NOTHING_CHECKED
    verdict = "met" if prof.slow_queries_under(slow_limit) else "MISSED"
    print(f"slow queries: slowest 10 % mean {prof.slowest_10pct_mean_ms:.3f} ms, target < {slow_limit:g} ms"
          f" (limits.slow_query_mean_ms): {verdict}")
    return 0


def advise_main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="dbops advise", description="Index advice for the top statements since"
                                     " the stats reset, verified by measurement on a scratch copy; migrations for"
                                     " verified advice are written for review, never applied.")
    parser.add_argument("--top", type=int, default=20, help="how many top statements to derive candidates from")
    parser.add_argument("--review-dir", help="where to write migrations (default $DBOPS_REVIEW_DIR or"
                        " review/migrations)")
    parser.add_argument("--no-verify", action="store_true", help="propose only; no scratch copy, no migration")
    parser.add_argument("--allow-scratch-on-production", action="store_true",
                        help="verify on a clone on the target's server although it is production (DBOPS_PRODUCTION)")
    args = parser.parse_args(argv)
    url = _target(settings)
    with connection(url) as conn:
        prof = profile(conn, None, args.top, settings.target().profile.exclude_roles, progress=_progress)
    target = settings.target()
    scratch = target.profile.scratch_url
    verify = not args.no_verify
    if verify and target.production and scratch is None and not args.allow_scratch_on_production:
        print("warning: production target and no DBOPS_SCRATCH_URL (restored copy): candidates are proposed, not "
              "verified; pass --allow-scratch-on-production to clone on the production server", file=sys.stderr)
        verify = False
    report = advise(url, prof, review_dir=review_dir(args.review_dir, target.profile.review_dir),
                    migrations_dir=target.migrations, scratch_url=scratch.resolve() if scratch else None,
                    bin_dir=settings.pg_bin,
                    verify_candidates=verify, staging_root=settings.staging_root,
                    history=(target.migrate.default_schema, target.migrate.table), progress=_progress)
    print(f"index advice for {redact_url(url)}" + (f" (verified on a {report.scratch_method} copy)"
                                                   if report.scratch_method else ""))
    print(render_text("advice, verified first", advice_table(report)))
    return 0


def main(argv: list[str], settings: Settings) -> int:
    """`profile ...` or `advise ...` (the first argument picks the command)."""
    if argv and argv[0] == "advise":
        return advise_main(argv[1:], settings)
    if argv and argv[0] == "profile":
        return profile_main(argv[1:], settings)
    return profile_main(argv, settings)

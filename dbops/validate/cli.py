"""`dbops validate [--from DAY --to DAY] [--indexes [--thorough]]`: integrity validation from a shell.

What is validated comes from the target's settings: its schemas (none: every user schema), the tables validated by
day (`validation.time_columns`, else a range partition key that is a date or timestamp), its rule files
(`validation.expectations`) and its sensitive columns (`access_control`).

Exit status: 0 when every expectation held, 1 on a violation (or an operator error), as CI expects; 3 when something
asked for checked nothing (no tables, no rules, no rows on a day, no indexes): "nothing checked: <reason>".
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta

from dbops.errors import ConfigError
from dbops.pg.connect import connection
from dbops.redact import redact_url
from dbops.settings import Settings
from dbops.validate.amcheck import check_indexes
from dbops.validate.run import IntegrityValidator, days_between

EXIT_NOTHING_CHECKED = 3


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: use YYYY-MM-DD") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbops validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="first", type=parse_day, help="first UTC day of the tables validated by day "
                        "(default: yesterday)")
    parser.add_argument("--to", dest="last", type=parse_day, help="last UTC day, inclusive (default: --from)")
    parser.add_argument("--no-dimensions", action="store_true", help="skip the tables validated as a whole")
    parser.add_argument("--indexes", action="store_true", help="also check every btree index with amcheck")
    parser.add_argument("--thorough", action="store_true", help="amcheck with heapallindexed (reads every table)")
    return parser


def main(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    first = args.first or args.last or yesterday
    last = args.last or first
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}", "swap the two days")
    url = settings.target_url()
    target = settings.target()
    rules = target.validation.expectations or "none: the constraints' own rules"
    print(f"validating {redact_url(url)} from {first} to {last} (rules: {rules})")
    failed = 0
    unchecked: list[str] = []
    def progress(line: str) -> None:
        print(f"  {line}", flush=True)  # each table as it is done: a 30-day range takes a while

    with IntegrityValidator.for_target(url, target) as validator:
        reports = validator.validate_days(days_between(first, last), progress=progress)
        if not args.no_dimensions:
            reports.append(validator.validate_dimensions(progress=progress))
        schemas = validator.schemas
    for report in reports:
        failed += report.failed
        print(report.render())
        if report.nothing_checked:
            unchecked.append(f"{report.scope}: {report.reason}")
    if args.indexes or args.thorough:
        with connection(url) as conn:
            indexes = check_indexes(conn, schemas, thorough=args.thorough)
        mode = "bt_index_check + heapallindexed" if indexes.thorough else "bt_index_check"
        print(f"indexes: {indexes.checked} checked ({mode}), {len(indexes.problems)} corrupt")
        for problem in indexes.problems:
            print(f"  CORRUPT {problem.index} on {problem.table}: {problem.error}")
        for con in indexes.not_valid:
            print(f"  NOT VALID {con.table} {con.name}: {con.definition}")
        failed += len(indexes.problems)
        if indexes.reason:
            unchecked.append(f"indexes: {indexes.reason}")
    if failed:
        print(f"{failed} integrity violation(s)")
        return 1
    if unchecked:
        print("nothing checked: " + "; ".join(unchecked))
        return EXIT_NOTHING_CHECKED
    print("no integrity violations")
    return 0

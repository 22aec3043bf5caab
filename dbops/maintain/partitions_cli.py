"""`dbops partitions status|maintain|move-default [--table T]`: partition maintenance of the (default) target.

``status`` shows each range-partitioned table: its period, how many periods ahead exist, its DEFAULT partition's
rows. ``maintain`` creates the missing partitions as the ``partition_maintenance`` asset does; retention
(``partitions.retention_days``) runs in the asset only, which reads the restore drills from the Dagster instance.
``move-default`` moves the rows of the DEFAULT partitions into partitions of their own, one transaction per table
(docs/partitions.md).

Exit status: 0 when every table is covered ahead and every DEFAULT partition is empty; 1 when one is not (or on an
operator error); 3 when there is nothing to check ("nothing checked: <reason>").
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from dbops.maintain.partitions import Report, maintain, move_defaults, status
from dbops.pg.connect import connection
from dbops.redact import redact_url
from dbops.settings import Settings, TargetSettings

EXIT_NOTHING_CHECKED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbops partitions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="action")
    sub.add_parser("status", help="tables, periods, coverage ahead, DEFAULT partition rows (changes nothing)")
    sub.add_parser("maintain", help="create the partitions ahead; retention when configured")
    move = sub.add_parser("move-default", help="move DEFAULT partition rows into partitions of their own")
    move.add_argument("--table", help="only this table (schema.table)")
    return parser


def backups_of(target: TargetSettings) -> Any:
    """Retention from the shell: refused, naming the way to run it. A backup counts only once a restore drill passed
    on it, and dbops records drills in the Dagster instance, which the asset reads (domain code and this command do
    not: see docs/partitions.md)."""
    def ask(newer_than: datetime) -> tuple[dict[str, Any] | None, str]:
        return None, ("retention needs the restore drills recorded in the Dagster instance: run "
                      f"`dbops run {target.name}/partition_maintenance --target {target.name}`")
    return ask


def verdict(report: Report) -> int:
    print(report.render())
    if not report.tables:
        return EXIT_NOTHING_CHECKED
    behind, full = report.behind(), report.defaults_with_rows()
    for t in behind:
        print(f"{t.qualified}: only {t.ahead} of {t.wanted} {t.period} partitions ahead")
    for t in full:
        print(f"{t.qualified}: DEFAULT partition {t.default.qualified} holds {t.default_rows} rows "  # type: ignore[union-attr]
              f"({t.default_range}) — run `dbops partitions move-default --table {t.qualified}`")
    if behind or full:
        return 1
    if not report.maintained:
        print("nothing checked: no range-partitioned table is maintained (see the reasons above)")
        return EXIT_NOTHING_CHECKED
    return 0


def main(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    target = settings.target()
    url = settings.target_url()
    conf = target.partitions
    print(f"partitions of {redact_url(url)}")
    with connection(url) as conn:
        if args.action == "status":
            return verdict(status(conn, target.schemas, conf))
        if args.action == "maintain":
            report = maintain(conn, target.schemas, conf, backups_of(target))
            code = verdict(report)
            print(f"{len(report.created)} partition(s) created, {len(report.detached)} detached in {report.seconds} s")
            return code
        tables, moved = move_defaults(conn, target.schemas, conf, args.table)
    for m in moved:
        print(f"{m.table}: moved {m.rows} rows out of {m.default} into {', '.join(m.partitions)} in {m.seconds} s"
              + (f"; {m.left} rows with a NULL key stay (they belong to no range)" if m.left else ""))
    if not any(t.maintained and t.default is not None for t in tables):
        print("nothing checked: no maintained table has a DEFAULT partition")
        return EXIT_NOTHING_CHECKED
    if not moved:
        print("every DEFAULT partition is empty: nothing to move")
    return 1 if any(m.left for m in moved) else 0

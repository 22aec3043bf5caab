"""`dbops partitions status|maintain|move-default [--table T]`: partition maintenance of the (default) target.

``status`` shows each range-partitioned table: its period, how many periods ahead exist, its DEFAULT partition's
rows. ``maintain`` creates the missing partitions (and retires old ones when ``partitions.retention_days`` is set and
a verified backup covers them), as the ``partition_maintenance`` asset does. ``move-default`` moves the rows of the
DEFAULT partitions into partitions of their own, one transaction per table (docs/partitions.md).

Exit status: 0 when every table is covered ahead and every DEFAULT partition is empty; 1 when one is not (or on an
operator error); 3 when there is nothing to check ("nothing checked: <reason>").
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from dbops.backup.keys import MasterKey
from dbops.backup.store import store_from_settings
from dbops.errors import DbopsError
from dbops.maintain.partitions import Report, covering_backup, maintain, move_defaults, status
from dbops.pg.connect import connection, database_name
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


def drills(settings: Settings, target: str) -> set[str]:
    """The backups a restore drill passed on, from the Dagster instance that records drills (as `dbops run` opens
    it); imported here only, when retention has partitions due (Dagster takes seconds to import)."""
    import dagster as dg

    from dbops.components.maintain.partitions import drilled_backups
    from dbops.instance import prepare_environment

    prepare_environment(settings)
    with dg.DagsterInstance.get() as instance:
        return drilled_backups(instance, target)


def backups_of(settings: Settings, target: TargetSettings, url: str) -> Any:
    """The question retention asks: the newest verified, drilled backup of this target newer than a moment."""
    def ask(newer_than: datetime) -> tuple[dict[str, Any] | None, str]:
        try:
            store = store_from_settings(target.backup)
            drilled = drills(settings, target.name)
        except DbopsError as exc:
            return None, f"cannot tell which backups were drilled: {exc}"
        return covering_backup(store, lambda: MasterKey.from_settings(target.backup), newer_than, database_name(url),
                               drilled)
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
            report = maintain(conn, target.schemas, conf, backups_of(settings, target, url))
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

"""`dbops migrate apply|plan|info|validate|undo|baseline|repair|lint`: the migration runner from a shell.

With the rehearsal gate on (``rehearsal.enabled``, ``DBOPS_REHEARSAL``, default on), ``apply`` rehearses the pending
files on the latest backup first, exactly as the Dagster job does, and refuses (production untouched, exit 1) when
the rehearsal finds them unsafe; ``plan --rehearse`` runs the rehearsal alone and prints its report.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from dbops.backup.keys import MasterKey
from dbops.backup.store import store_for
from dbops.embedded import ensure_embedded
from dbops.errors import DbopsError
from dbops.migrate.baseline import BaselineRecord
from dbops.migrate.engine import Migrator, migrator_options
from dbops.migrate.files import MigrationError, resolve
from dbops.migrate.lint import DEFAULT_LINT_EXCLUDE
from dbops.migrate.rehearsal import RehearsalReport, Thresholds, rehearse
from dbops.redact import redact_url
from dbops.settings import Settings
from dbops.text import aligned


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return "\n".join(aligned(headers, rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbops migrate", description=__doc__)
    parser.add_argument("action", nargs="?", default="apply",
                        choices=["apply", "plan", "info", "validate", "undo", "baseline", "repair", "lint"])
    parser.add_argument("--locations", type=Path, action="append",
                        help="folder of V<n>__<name>.sql files (default: DBOPS_MIGRATIONS or sql/migrations)")
    parser.add_argument("--target", help="apply up to and including this version")
    parser.add_argument("--out-of-order", action="store_true", help="apply pending versions older than the current")
    parser.add_argument("--version", help="baseline version (baseline only; default: the target's "
                        "migrate.baseline_version)")
    parser.add_argument("--exclude", action="append", default=[], help="squawk rule to skip (repeatable)")
    parser.add_argument("--rehearse", action="store_true",
                        help="plan: rehearse the pending files on a copy restored from the latest backup and print the "
                        "report (exit 1 when unsafe)")
    parser.add_argument("--to", metavar="VERSION",
                        help="undo: undo every applied version above VERSION (default: the latest one only)")
    return parser


def rehearsal(settings: Settings, url: str, locations: list[Path], out_of_order: bool,
              exclude: tuple[str, ...]) -> RehearsalReport:
    """The target's rehearsal of what is pending on ``url``, with the settings the Dagster asset uses."""
    target = settings.target()
    server = target.rehearsal.server_url.resolve() if target.rehearsal.server_url else None
    return rehearse(url, store_for(settings), lambda: MasterKey.from_settings(target.backup), locations,
                    Thresholds.from_settings(target.rehearsal), server_url=server,
                    staging_root=settings.staging_root, exclude_roles=tuple(target.profile.exclude_roles),
                    **{**migrator_options(target), "out_of_order": out_of_order, "lint_exclude": exclude})


def main(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    locations = args.locations or [settings.migrations_dir]
    exclude = DEFAULT_LINT_EXCLUDE + tuple(args.exclude)
    target = settings.target()
    if args.action == "lint":  # no database needed: placeholders take the user and database the URL names
        resolved = resolve(locations)
        files = [m.path for m in resolved.versioned + resolved.repeatable]
        try:
            url = settings.target_url()
        except DbopsError:
            url = ""
        findings = Migrator.for_target(url, target, locations=locations, lint_exclude=exclude).lint(files)
        for finding in findings:
            print(finding)
        print(f"{len(findings)} finding(s) in {len(files)} file(s)")
        return 1 if any(f.level == "error" for f in findings) else 0

    ensure_embedded(settings)
    url = settings.target_url()
    record = BaselineRecord.of(settings.home, target.name, settings.pg_bin)
    migrator = Migrator.for_target(url, target, locations=locations, record=record, out_of_order=args.out_of_order,
                                   lint_exclude=exclude)
    where = redact_url(url)
    if args.action == "apply":
        if target.rehearsal.enabled:
            report = rehearsal(settings, url, locations, args.out_of_order, exclude)
            if report.pending:
                print(report.text())
            if report.problems:
                raise MigrationError(
                    f"migrate refused: the rehearsal on a restored copy found {len(report.problems)} problem(s), "
                    f"nothing was applied to {where}: {report.problems[0]}",
                    "fix the migration (the report above lists every problem), or turn the gate off for this run "
                    "with DBOPS_REHEARSAL=off")
        result = migrator.apply(args.target)
        if result.baselined:
            print(f"baselined {where} at version {result.baselined} (migrate.baseline_on_migrate); the schema it "
                  f"adopted is recorded in {record.sql_path}")
        if result.applied:
            print(table(["version", "description", "script", "ms"],
                        [[m.version or "R", m.description, m.script, m.execution_ms] for m in result.applied]))
        print(f"{len(result.applied)} migration(s) applied to {where} in {result.total_ms} ms; "
              f"current version {result.current_version or '-'}")
    elif args.action == "info":
        print(table(["version", "description", "state", "installed on", "ms", "script"],
                    [[i.version or "R", i.description, i.state,
                      i.installed_on.strftime("%Y-%m-%d %H:%M:%S") if i.installed_on else "", i.execution_time,
                      i.script] for i in migrator.info()]))
    elif args.action == "validate":
        migrator.validate()
        print(f"history of {where} matches the files")
    elif args.action == "plan":
        plan = migrator.plan(args.target)
        if not plan:
            print(f"nothing pending on {where}")
        for item in plan:
            mode = "one transaction" if item.migration.transactional else "no transaction"
            print(f"{item.migration.script} ({mode}): {len(item.findings)} lint finding(s)")
            for finding in item.findings:
                print(f"    line {finding.line}: {finding.level}: {finding.rule}: {finding.message}")
        if args.rehearse and plan:
            report = rehearsal(settings, url, locations, args.out_of_order, exclude)
            print(report.text())
            return 1 if report.problems else 0
    elif args.action == "undo":
        undone = migrator.undo(args.to)
        if undone.undone:
            print(table(["version", "description", "script", "ms"],
                        [[m.version, m.description, m.script, m.execution_ms] for m in undone.undone]))
        print(f"{len(undone.undone)} version(s) undone on {where} in {undone.total_ms} ms; current version "
              f"{undone.current_version or '-'}")
    elif args.action == "baseline":
        version = migrator.baseline(args.version)
        print(f"baselined {where} at version {version} in {migrator.history.name}; the schema it adopted is "
              f"recorded in {record.sql_path}")
    elif args.action == "repair":
        result = migrator.repair()
        print(f"removed {result.removed_failed} failed row(s); realigned {len(result.realigned)} checksum(s)"
              f"{': ' + ', '.join(result.realigned) if result.realigned else ''}; marked {len(result.marked_deleted)}"
              f" missing as deleted{': ' + ', '.join(result.marked_deleted) if result.marked_deleted else ''}")
    return 0

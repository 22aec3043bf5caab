"""`dbops config check|show`: validate the whole configuration up front, print the resolved tree (secrets as ***).

``check`` exits 2 and prints one line per mistake (``dbops.yaml:12: targets.shop.backup.keep_last: must be a
positive integer, got 'x' — set it to e.g. 7``), including what would only fail later: a referenced variable that
is unset, a folder that is missing. ``show`` prints the tree with where each value came from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dbops.settings.load import Problem, SettingsError, check_settings, load_settings
from dbops.settings.model import Settings
from dbops.settings.render import plain, render_text, sources, tree

EXIT_PROBLEMS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbops config", description="Check and show dbops' configuration: "
                                     "defaults < dbops.yaml (DBOPS_CONFIG) < DBOPS_* variables.")
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (("check", "validate everything (unset secret variables and missing folders too); exit 2 "
                                 "with one line per mistake"),
                       ("show", "print the resolved settings and where each value came from")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--file", type=Path, help="configuration file (default: DBOPS_CONFIG, else ./dbops.yaml)")
        cmd.add_argument("--target", help="only this target")
        cmd.add_argument("--json", action="store_true", help="the tree as JSON (values and their sources)")
    return parser


def _report(problems: list[Problem]) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    return EXIT_PROBLEMS


def _print(settings: Settings, args: argparse.Namespace) -> None:
    if args.target is not None:
        settings.target(args.target)  # a clear error for an unknown name
    if args.json:
        nodes = tree(settings, args.target)
        body: dict[str, Any] = {"settings": plain(nodes), "sources": sources(nodes)}
        print(json.dumps(body, indent=2))
    else:
        print(render_text(settings, args.target))


def main(argv: list[str], settings: object = None) -> int:
    """``settings`` (the caller's) is not used: this command loads and judges the configuration itself."""
    args = build_parser().parse_args(argv)
    try:
        loaded = load_settings(config_file=args.file)
    except SettingsError as exc:
        return _report(exc.problems)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.action == "check":
        problems = [p for p in check_settings(loaded) if args.target is None or not p.key.startswith("targets.")
                    or p.key.startswith(f"targets.{args.target}.")]
        if problems:
            return _report(problems)
    _print(loaded, args)
    if args.action == "check":
        names = ", ".join(f"{t.name} ({'embedded' if t.embedded else 'external'})" for t in loaded.targets.values())
        print(f"configuration OK: {len(loaded.targets)} target(s): {names}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

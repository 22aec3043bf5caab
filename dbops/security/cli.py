"""`dbops security audit` and `dbops security harden --plan`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dbops.errors import DbopsError
from dbops.redact import redact
from dbops.security.audit import audit_database
from dbops.security.backups import backup_store_for, key_env
from dbops.security.findings import Severity
from dbops.security.harden import plan, write_plan
from dbops.settings import Settings, load_settings

SEVERITIES = [s.value for s in Severity if s is not Severity.INFO]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbops security", description="Audit and harden the managed PostgreSQL.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--matrix", type=Path, default=None, help="access-control file (sql/access-control.yml)")
    common.add_argument("--require-tls", action="store_true", default=None,
                        help="treat plain TCP as a finding even on loopback")
    audit = sub.add_parser("audit", parents=[common], help="grade the database's security, OWASP-mapped")
    audit.add_argument("--format", choices=["table", "json"], default="table")
    audit.add_argument("--fail-on", choices=SEVERITIES, default="critical",
                       help="exit 1 when a finding is this severe or worse (default: critical)")
    harden = sub.add_parser("harden", parents=[common], help="propose the SQL that fixes the findings")
    harden.add_argument("--plan", action="store_true", help="print the plan (dbops never applies it itself)")
    harden.add_argument("--write", type=Path, default=None, metavar="DIR",
                        help="also write it as the next migration file(s) in DIR, for review")
    return parser


def main(argv: list[str], settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings or load_settings()
        url, target = settings.target_url(), settings.target()
        matrix = args.matrix or target.access_control
        if args.command == "harden" and not args.plan:
            raise DbopsError("harden only plans", "run `dbops security harden --plan` and apply the SQL through a"
                             " reviewed migration (`--write sql/migrations`)")
        report = audit_database(url, matrix, require_tls=args.require_tls, backups=backup_store_for(target.backup),
                                env=key_env(target.backup))
        if args.command == "audit":
            if args.format == "json":
                doc = {"target": report.target, "counts": report.counts(), "tls": report.tls,
                       "findings": [f.as_dict() for f in report.sorted()]}
                print(redact(json.dumps(doc, indent=1)))
            else:
                print(redact(f"security audit of {report.target}: {report.summary()}"))
                print(redact(report.table_markdown()))
            worst = Severity(args.fail_on).rank
            return 1 if any(f.severity.rank <= worst for f in report.findings) else 0
        hardening = plan(report)
        print(redact(hardening.render(report.target)), end="")
        if args.write:
            for path in write_plan(hardening, args.write, report.target):
                print(f"-- wrote {path} (review it, then `dbops migrate apply`)", file=sys.stderr)
        return 0
    except DbopsError as exc:
        print(f"dbops security: {redact(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

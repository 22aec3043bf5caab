"""`dbops security audit` and `dbops security harden --plan`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dbops.errors import DbopsError
from dbops.migrate.numbering import history_versions
from dbops.pg.connect import connection
from dbops.profile.verify import VerificationFailed
from dbops.redact import redact
from dbops.security.audit import audit_database
from dbops.security.backups import backup_store_for, key_env
from dbops.security.findings import AuditReport, Severity
from dbops.security.grants import BaselineStore, baseline_path
from dbops.security.harden import UNDO_MISSING, HardeningPlan, StepCheck, Undo, plan, write_plan
from dbops.security.verify import verify_plan
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
    audit.add_argument("--accept-baseline", action="store_true",
                       help="(a target without an access-control matrix) record the grants as they are now as the"
                       " baseline later audits compare with")
    harden = sub.add_parser("harden", parents=[common], help="propose the SQL that fixes the findings")
    harden.add_argument("--plan", action="store_true", help="print the plan (dbops never applies it itself)")
    harden.add_argument("--write", type=Path, default=None, metavar="DIR",
                        help="also write it as the next migration file(s) in DIR, for review")
    harden.add_argument("--no-verify", action="store_true",
                        help="do not try the plan on a scratch copy first (every step is then shown NOT VERIFIED)")
    harden.add_argument("--allow-scratch-on-production", action="store_true",
                        help="try the plan on a clone on the target's server although it is production")
    return parser


def not_verified(hardening: HardeningPlan, why: str) -> None:
    for step in hardening.steps:
        step.check = StepCheck("not tried", why)
        step.undo = Undo((), UNDO_MISSING, "the undo is computed on a scratch copy, and the plan was not tried on one")
    hardening.notes = [f"not tried on a scratch copy: {why}"]


def baseline_line(report: AuditReport) -> str | None:
    b = report.baseline
    if not b:
        return None
    if b["recorded"]:
        return f"grants baseline recorded in {b['path']} ({b['recorded_at']}): later audits report changes against it"
    return f"grants compared with the baseline {b['path']} of {b['recorded_at']}: {b['changes']} changes"


def main(argv: list[str], settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings or load_settings()
        url, target = settings.target_url(), settings.target()
        matrix = args.matrix or target.access_control
        if args.command == "harden" and not args.plan:
            raise DbopsError("harden only plans", "run `dbops security harden --plan` and apply the SQL through a"
                             " reviewed migration (`--write sql/migrations`)")
        baseline = None if matrix else BaselineStore(baseline_path(settings.home, target.name), target.name)
        report = audit_database(url, matrix, require_tls=args.require_tls, backups=backup_store_for(target.backup),
                                env=key_env(target.backup), schemas=target.schemas, baseline=baseline,
                                accept_baseline=args.command == "audit" and args.accept_baseline)
        if args.command == "audit":
            if args.format == "json":
                doc = {"target": report.target, "counts": report.counts(), "tls": report.tls,
                       "schemas": report.schemas, "baseline": report.baseline,
                       "findings": [f.as_dict() for f in report.sorted()]}
                print(redact(json.dumps(doc, indent=1)))
            else:
                print(redact(f"security audit of {report.target}: {report.summary()}"
                             f" (schemas {', '.join(report.schemas) or 'none'})"))
                if line := baseline_line(report):
                    print(redact(line))
                print(redact(report.table_markdown()))
            worst = Severity(args.fail_on).rank
            return 1 if any(f.severity.rank <= worst for f in report.findings) else 0
        hardening = plan(report)
        if hardening.empty:
            hardening.notes = []
        elif args.no_verify:
            not_verified(hardening, "--no-verify")
        elif target.production and not args.allow_scratch_on_production:
            not_verified(hardening, "production target; pass --allow-scratch-on-production to try it on a clone")
        else:
            try:
                verify_plan(url, hardening, report, matrix, schemas=target.schemas, baseline=baseline,
                            require_tls=args.require_tls, bin_dir=settings.pg_bin,
                            staging_root=settings.staging_root)
            except VerificationFailed as exc:
                why = ("no scratch copy could be made (grant CREATEDB to this role)"
                       if "CREATEDB" in str(exc.fix) else str(exc))
                not_verified(hardening, why)
                print(f"dbops security: warning: {redact(why)}", file=sys.stderr)
        print(redact(hardening.render(report.target)), end="")
        if args.write:
            with connection(url) as conn:
                applied = history_versions(conn, target.migrate.default_schema, target.migrate.table)
            for path in write_plan(hardening, args.write, report.target, applied):
                what = ("its undo: Flyway's undo migration, never run by dbops; keep it to take the plan back"
                        if path.name.startswith("U") else "review it, then `dbops migrate apply`")
                print(f"-- wrote {path} ({what})", file=sys.stderr)
        for step in hardening.broken:
            print(redact(f"dbops security: {step.finding.rule} {step.finding.subject} breaks on the scratch copy"
                         f" and is left out: {step.check.detail if step.check else ''}"), file=sys.stderr)
        for step in hardening.undo_missing():
            print(redact(f"dbops security: {step.finding.rule} {step.finding.subject}: no undo"
                         f" ({step.undo.detail if step.undo else 'not computed'})"), file=sys.stderr)
        return 1 if hardening.broken else 0
    except DbopsError as exc:
        print(f"dbops security: {redact(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

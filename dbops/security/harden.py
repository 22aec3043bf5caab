"""The hardening plan: the SQL that fixes what SQL can fix, as migration files for review — never applied here.

Transactional fixes (grants, ownership, row-level security, triggers) go in one versioned migration; ALTER SYSTEM
cannot run in a transaction, so server settings go in a second file marked ``-- dbops:no-transaction``. Drops that
may break an application (languages, extensions) are written commented out, and what only an operator can do
(pg_hba.conf, certificates, passwords) is listed as comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dbops.errors import DbopsError
from dbops.security.findings import AuditReport, Severity

VERSION = re.compile(r"^V(\d+)__")
REVIEW_FIRST = ("DROP ",)


@dataclass(frozen=True)
class HardeningPlan:
    transactional: list[str]
    settings: list[str]
    manual: list[str]

    @property
    def empty(self) -> bool:
        return not (self.transactional or self.settings)

    def migration_text(self, target: str) -> str:
        lines = [f"-- Security hardening proposed by `dbops security harden --plan` for {target}.",
                 "-- Review every statement before committing this migration; it runs as the migration role.",
                 *self.transactional]
        if self.manual:
            lines += ["", "-- Not fixable in SQL (do these by hand):", *(f"--   {m}" for m in self.manual)]
        return "\n".join(lines) + "\n"

    def settings_text(self, target: str) -> str:
        lines = ["-- dbops:no-transaction",
                 f"-- Server settings proposed by `dbops security harden --plan` for {target}",
                 "-- (ALTER SYSTEM cannot run inside a transaction, so this file runs without one).", *self.settings]
        return "\n".join(lines) + "\n"

    def render(self, target: str) -> str:
        if self.empty and not self.manual:
            return f"-- nothing to harden on {target}\n"
        out = self.migration_text(target)
        if self.settings:
            out += "\n" + self.settings_text(target)
        return out


def plan(report: AuditReport, minimum: Severity = Severity.LOW) -> HardeningPlan:
    """Collect fixes for findings at ``minimum`` severity or worse, most severe first, without duplicates."""
    transactional: list[str] = []
    settings: list[str] = []
    manual: list[str] = []
    for finding in report.sorted():
        if finding.severity.rank > minimum.rank:
            continue
        header = f"-- {finding.rule} {finding.severity.value}: {finding.title} ({finding.subject})"
        if not finding.fix_sql:
            manual.append(f"{finding.rule} {finding.severity.value} {finding.subject}: {finding.remediation}")
            continue
        target = settings if finding.fix_outside_transaction else transactional
        statements = [s for s in finding.fix_sql if s not in target]
        if finding.fix_outside_transaction and "SELECT pg_reload_conf();" in statements:
            statements.remove("SELECT pg_reload_conf();")
        if not statements:
            continue
        target.append(header)
        for statement in statements:
            target.append(f"-- review first: {statement}" if statement.startswith(REVIEW_FIRST) else statement)
    if settings:
        settings.append("SELECT pg_reload_conf();")
    return HardeningPlan(transactional, settings, manual)


def next_version(migrations_dir: Path) -> int:
    versions = [int(m.group(1)) for p in Path(migrations_dir).glob("V*__*.sql") if (m := VERSION.match(p.name))]
    return max(versions, default=0) + 1


def write_plan(hardening: HardeningPlan, migrations_dir: Path, target: str) -> list[Path]:
    """Write the plan as the next migration file(s) in ``migrations_dir``; return their paths."""
    migrations_dir = Path(migrations_dir)
    if not migrations_dir.is_dir():
        raise DbopsError(f"no migrations folder at {migrations_dir}", "pass --write an existing folder")
    if hardening.empty:
        return []
    version = next_version(migrations_dir)
    written = []
    if hardening.transactional:
        path = migrations_dir / f"V{version}__security_hardening.sql"
        path.write_text(hardening.migration_text(target))
        written.append(path)
        version += 1
    if hardening.settings:
        path = migrations_dir / f"V{version}__security_settings.sql"
        path.write_text(hardening.settings_text(target))
        written.append(path)
    return written

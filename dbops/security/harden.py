"""The hardening plan: the SQL that fixes what SQL can fix, as migration files for review — never applied here.

Transactional fixes (grants, ownership, row-level security, triggers) go in one versioned migration; ALTER SYSTEM
cannot run in a transaction, so server settings go in a second file marked ``-- dbops:no-transaction``. Drops that
may break an application (languages, extensions) are written commented out, and what only an operator can do
(pg_hba.conf, certificates, passwords) is listed as comments.

Before it is shown, the plan is tried on a scratch copy (:mod:`dbops.security.verify`); each step then says whether
it was verified, and a step that breaks something there is left out (commented, with the error).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dbops.errors import DbopsError
from dbops.migrate.numbering import folder_versions, next_version
from dbops.security.findings import AuditReport, Finding, Severity

REVIEW_FIRST = ("DROP ",)


@dataclass(frozen=True)
class StepCheck:
    """What the scratch copy said about one step: ``verified``, ``broken`` (an error, or a function that worked
    stops working: the step is left out), ``unresolved`` (applied, still reported) or ``not tried``."""

    status: str
    detail: str

    @property
    def line(self) -> str:
        if self.status == "verified":
            return f"-- verified on a scratch copy: {self.detail}"
        if self.status == "broken":
            return f"-- NOT VERIFIED, left out: {self.detail}"
        return f"-- NOT VERIFIED: {self.detail}"


@dataclass
class PlanStep:
    finding: Finding
    statements: list[str]  # what runs (already deduplicated against earlier steps)
    review_first: list[str]  # DROP ...: written commented out
    outside_transaction: bool
    check: StepCheck | None = None

    @property
    def header(self) -> str:
        f = self.finding
        return f"-- {f.rule} {f.severity.value}: {f.title} ({f.subject})"

    def lines(self) -> list[str]:
        out = [self.header]
        if self.check:
            out.append(self.check.line)
        broken = self.check is not None and self.check.status == "broken"
        out += [f"-- left out: {s}" if broken else s for s in self.statements]
        out += [f"-- review first: {s}" for s in self.review_first]
        return out


@dataclass
class HardeningPlan:
    steps: list[PlanStep]
    manual: list[str]
    # how the plan was verified (the scratch copy, new findings after it), or why it was not
    notes: list[str] = field(default_factory=list)

    @property
    def transactional(self) -> list[str]:
        return [line for step in self.steps if not step.outside_transaction for line in step.lines()]

    @property
    def settings(self) -> list[str]:
        lines = [line for step in self.steps if step.outside_transaction for line in step.lines()]
        return [*lines, "SELECT pg_reload_conf();"] if lines else []

    @property
    def empty(self) -> bool:
        return not self.steps

    @property
    def broken(self) -> list[PlanStep]:
        return [s for s in self.steps if s.check is not None and s.check.status == "broken"]

    def migration_text(self, target: str) -> str:
        lines = [f"-- Security hardening proposed by `dbops security harden --plan` for {target}.",
                 "-- Review every statement before committing this migration; it runs as the migration role.",
                 *(f"-- {note}" for note in self.notes), *self.transactional]
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
    steps: list[PlanStep] = []
    manual: list[str] = []
    seen: set[tuple[bool, str]] = set()
    for finding in report.sorted():
        if finding.severity.rank > minimum.rank:
            continue
        if not finding.fix_sql:
            manual.append(f"{finding.rule} {finding.severity.value} {finding.subject}: {finding.remediation}")
            continue
        outside = finding.fix_outside_transaction
        statements = [s for s in finding.fix_sql if (outside, s) not in seen and s != "SELECT pg_reload_conf();"]
        seen |= {(outside, s) for s in statements}
        if not statements:
            continue
        steps.append(PlanStep(finding, [s for s in statements if not s.startswith(REVIEW_FIRST)],
                              [s for s in statements if s.startswith(REVIEW_FIRST)], outside))
    return HardeningPlan(steps, manual)


def write_plan(hardening: HardeningPlan, migrations_dir: Path, target: str, applied: Iterable[str] = ()) -> list[Path]:
    """Write the plan as the next migration file(s) in ``migrations_dir``, numbered after the highest version of
    ``applied`` (the target's history: applied or baselined) and of the folder's files, in their style (``V022__``
    after ``V021__``, ``V9__`` after ``V8__``); return their paths."""
    migrations_dir = Path(migrations_dir)
    if not migrations_dir.is_dir():
        raise DbopsError(f"no migrations folder at {migrations_dir}", "pass --write an existing folder")
    if hardening.empty:
        return []
    versions = [*applied, *folder_versions(migrations_dir)]
    written = []
    for name, wanted, text in (("security_hardening", hardening.transactional, hardening.migration_text),
                               ("security_settings", hardening.settings, hardening.settings_text)):
        if not wanted:
            continue
        version = next_version(versions)
        path = migrations_dir / f"V{version}__{name}.sql"
        path.write_text(text(target))
        written.append(path)
        versions.append(version)
    return written

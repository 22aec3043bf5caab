"""The hardening plan: the SQL that fixes what SQL can fix, as migration files for review — never applied here.

Transactional fixes (grants, ownership, row-level security, triggers) go in one versioned migration; ALTER SYSTEM
cannot run in a transaction, so server settings go in a second file marked ``-- dbops:no-transaction``. Drops that
may break an application (languages, extensions) are written commented out, and what only an operator can do
(pg_hba.conf, certificates, passwords) is listed as comments.

Before it is shown, the plan is tried on a scratch copy (:mod:`dbops.security.verify`); each step then says what
the copy showed: ``verified`` (applied, re-audited, its finding gone, the functions it touches still run),
``unresolved`` (applied, but the audit still reports it: the step is still offered, marked so, for the reviewer to
decide: it may be half of a fix), ``left out`` (it fails, or a function that ran before stops running: written
commented out, with the error) or ``not verified`` (with why).

Beside each migration goes its Flyway undo migration, ``U<version>__<same description>.sql``: for every step, in
reverse order, the SQL that restores what the step changed, computed on the scratch copy from its catalog before the
step and checked there (apply the step, apply its undo, the catalog is back as it was). A step whose undo cannot be
computed is marked so, in the plan and in the undo file; the drops written for review are never undone (restore
those from a backup).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dbops.errors import DbopsError
from dbops.migrate.numbering import folder_versions, next_version
from dbops.security.findings import AuditReport, Finding, Severity

REVIEW_FIRST = ("DROP ",)
UNDO_CHECKED = "checked"  # restores the catalog as it was before the step, checked on the scratch copy
UNDO_COMPUTED = "computed"  # computed from the catalog, not checked (ALTER SYSTEM cannot run on a copy)
UNDO_MISSING = "missing"  # could not be computed (fully): ``detail`` says why; never silent


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
        if self.status == "unresolved":
            return f"-- NOT VERIFIED, unresolved (offered for review): {self.detail}"
        return f"-- NOT VERIFIED: {self.detail}"


@dataclass(frozen=True)
class Undo:
    """How to take one step back: the statements (to run in this order) and whether they were checked."""

    statements: tuple[str, ...]
    status: str  # UNDO_CHECKED | UNDO_COMPUTED | UNDO_MISSING
    detail: str = ""

    @property
    def line(self) -> str:
        if self.status == UNDO_CHECKED:
            n = len(self.statements)
            return f"-- undo: checked on the scratch copy ({n} statement{'' if n == 1 else 's'})"
        if self.status == UNDO_COMPUTED:
            return f"-- undo: computed, not checked: {self.detail}"
        return f"-- undo: NOT COMPUTED: {self.detail}"


@dataclass
class PlanStep:
    finding: Finding
    statements: list[str]  # what runs (already deduplicated against earlier steps)
    review_first: list[str]  # DROP ...: written commented out
    outside_transaction: bool
    check: StepCheck | None = None
    undo: Undo | None = None

    @property
    def left_out(self) -> bool:
        return self.check is not None and self.check.status == "broken"

    def undo_lines(self) -> list[str]:
        """This step's part of the undo migration."""
        out = [f"-- undo of {self.header[3:]}"]
        if self.left_out:
            return [*out, "-- nothing to undo: the step is left out of the plan"]
        if not self.statements:
            return [*out, "-- nothing to undo: its statements are written commented out, for review"]
        undo = self.undo or Undo((), UNDO_MISSING, "not computed")
        if undo.status == UNDO_MISSING:
            out.append(f"-- NOT UNDONE{': ' + undo.detail if undo.detail else ''}")
            out += [f"-- partial: {s}" for s in undo.statements]
        else:
            out += list(undo.statements) or ["-- nothing to undo: the step changes nothing on the copy"]
        if self.review_first:
            out.append("-- the statements for review (DROP ...) are not undone: restore what they drop from a backup")
        return out

    @property
    def header(self) -> str:
        f = self.finding
        return f"-- {f.rule} {f.severity.value}: {f.title} ({f.subject})"

    def lines(self) -> list[str]:
        out = [self.header]
        if self.check:
            out.append(self.check.line)
        if self.undo and self.statements and not self.left_out:
            out.append(self.undo.line)
        out += [f"-- left out: {s}" if self.left_out else s for s in self.statements]
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

    def undo_transactional(self) -> list[str]:
        return [line for step in reversed(self.steps) if not step.outside_transaction for line in step.undo_lines()]

    def undo_settings(self) -> list[str]:
        lines = [line for step in reversed(self.steps) if step.outside_transaction for line in step.undo_lines()]
        return [*lines, "SELECT pg_reload_conf();"] if lines else []

    def undo_missing(self) -> list[PlanStep]:
        """Steps that run but whose undo could not be computed (fully)."""
        return [s for s in self.steps if s.statements and not s.left_out
                and (s.undo is None or s.undo.status == UNDO_MISSING)]

    @property
    def empty(self) -> bool:
        return not self.steps

    @property
    def broken(self) -> list[PlanStep]:
        return [s for s in self.steps if s.check is not None and s.check.status == "broken"]

    def migration_text(self, target: str, undo_file: str = "") -> str:
        lines = [f"-- Security hardening proposed by `dbops security harden --plan` for {target}.",
                 "-- Review every statement before committing this migration; it runs as the migration role.",
                 *(f"-- {note}" for note in self.notes), *self._undo_note(undo_file), *self.transactional]
        if self.manual:
            lines += ["", "-- Not fixable in SQL (do these by hand):", *(f"--   {m}" for m in self.manual)]
        return "\n".join(lines) + "\n"

    def settings_text(self, target: str, undo_file: str = "") -> str:
        lines = ["-- dbops:no-transaction",
                 f"-- Server settings proposed by `dbops security harden --plan` for {target}",
                 "-- (ALTER SYSTEM cannot run inside a transaction, so this file runs without one).",
                 *self._undo_note(undo_file), *self.settings]
        return "\n".join(lines) + "\n"

    def _undo_note(self, undo_file: str) -> list[str]:
        missing = self.undo_missing()
        where = f"in {undo_file}" if undo_file else "in the undo migration (U<version>__..., written by --write)"
        out = [f"-- undo: {where}, in reverse step order"]
        if missing:
            out.append(f"-- undo NOT COMPUTED for {len(missing)} steps: "
                       + "; ".join(f"{s.finding.rule} {s.finding.subject}" for s in missing))
        return out

    def undo_text(self, target: str, of_file: str = "") -> str:
        lines = [f"-- Undo of the security hardening{' ' + of_file if of_file else ''} for {target}: each step"
                 " taken back, last step first.", *self.undo_transactional()]
        return "\n".join(lines) + "\n"

    def undo_settings_text(self, target: str, of_file: str = "") -> str:
        lines = ["-- dbops:no-transaction",
                 f"-- Undo of the server settings{' ' + of_file if of_file else ''} for {target}, last step first"
                 " (a setting that needs a restart takes effect after one).", *self.undo_settings()]
        return "\n".join(lines) + "\n"

    def render(self, target: str) -> str:
        if self.empty and not self.manual:
            return f"-- nothing to harden on {target}\n"
        out = self.migration_text(target)
        if self.settings:
            out += "\n" + self.settings_text(target)
        if self.transactional:
            out += "\n" + self.undo_text(target)
        if self.settings:
            out += "\n" + self.undo_settings_text(target)
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
    after ``V021__``, ``V9__`` after ``V8__``), each followed by its Flyway undo file (``U022__``, never run by
    dbops); return their paths (V, U, V, U)."""
    migrations_dir = Path(migrations_dir)
    if not migrations_dir.is_dir():
        raise DbopsError(f"no migrations folder at {migrations_dir}", "pass --write an existing folder")
    if hardening.empty:
        return []
    versions = [*applied, *folder_versions(migrations_dir)]
    written = []
    for name, wanted, text, undo in (
            ("security_hardening", hardening.transactional, hardening.migration_text, hardening.undo_text),
            ("security_settings", hardening.settings, hardening.settings_text, hardening.undo_settings_text)):
        if not wanted:
            continue
        version = next_version(versions)
        path = migrations_dir / f"V{version}__{name}.sql"
        undo_path = migrations_dir / f"U{version}__{name}.sql"
        path.write_text(text(target, undo_path.name))
        undo_path.write_text(undo(target, path.name))
        written += [path, undo_path]
        versions.append(version)
    return written

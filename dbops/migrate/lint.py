"""Migration lint with squawk (the squawk-cli wheel): its JSON report parsed into findings, plus dbops's own.

dbops adds, as errors, what `apply` would refuse before running anything: a file PostgreSQL's parser cannot take
whole (``dbops-unparseable``) and transaction control in a transactional file (``dbops-transaction-control``).

dbops sets ``lock_timeout`` and ``statement_timeout`` itself around every migration, so squawk's rules asking each
file to set them are excluded by default (they would fire on every DDL statement and drown the useful findings).

With placeholders (Flyway's ``${...}``), files are linted as they will run: replaced, in a private temporary copy
named like the original; findings name the original file. A placeholder without a value is an error finding
(``dbops-placeholder``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from dbops.errors import CommandFailed
from dbops.migrate.files import read_sql, runs_in_transaction, sql_problems
from dbops.migrate.placeholders import Placeholders, UndefinedPlaceholder
from dbops.programs import run_command

DEFAULT_LINT_EXCLUDE: tuple[str, ...] = ("require-lock-timeout", "require-statement-timeout")


@dataclass(frozen=True)
class LintFinding:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    level: str  # warning | error
    rule: str
    message: str
    help: str | None

    def __str__(self) -> str:
        hint = f" ({self.help})" if self.help else ""
        return f"{self.file}:{self.line}:{self.column}: {self.level}: {self.rule}: {self.message}{hint}"


def squawk_program() -> str:
    """squawk next to this Python (the venv's wheel), else on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.exists():
        return str(beside)
    found = shutil.which("squawk")
    if not found:
        raise CommandFailed("squawk is not installed", "run `make install` to get the squawk-cli wheel")
    return found


def _run_squawk(files: list[Path], exclude: tuple[str, ...], in_transaction: bool) -> list[LintFinding]:
    args = [squawk_program(), "--reporter", "json"]
    if exclude:
        args += ["--exclude", ",".join(exclude)]
    if in_transaction:
        args.append("--assume-in-transaction")
    proc = run_command([*args, *map(str, files)], timeout=120, check=False, what="squawk")
    out = (proc.stdout or "").strip()
    if proc.returncode not in (0, 1) or not out.startswith("["):
        raise CommandFailed(f"squawk failed (exit {proc.returncode}): {(proc.stderr or out).strip()[:300]}",
                            "run `squawk` on the file by hand to see why")
    findings = []
    for item in json.loads(out):
        findings.append(LintFinding(
            file=item.get("file", ""), line=int(item.get("line", 0)) + 1, column=int(item.get("column", 0)) + 1,
            level=str(item.get("level", "warning")).lower(), rule=item.get("rule_name", ""),
            message=item.get("message", ""), help=item.get("help"),
        ))
    return findings


def lint_files(files: list[Path], exclude: tuple[str, ...] = DEFAULT_LINT_EXCLUDE,
               placeholders: Placeholders | None = None) -> list[LintFinding]:
    """Lint migration files; transactional ones are linted as if wrapped in a transaction (as dbops runs them), and
    with ``placeholders`` replaced as they will run."""
    if placeholders is None or not placeholders.enabled:
        return _lint(files, exclude)
    findings: list[LintFinding] = []
    with tempfile.TemporaryDirectory(prefix="dbops-lint-") as tmp:
        originals: dict[str, Path] = {}
        linted: list[Path] = []
        for number, path in enumerate(files):
            text = read_sql(path)
            try:
                replaced = placeholders.replace(path.name, text)
            except UndefinedPlaceholder as exc:
                findings.append(LintFinding(str(path), exc.line, 1, "error", "dbops-placeholder", exc.detail, exc.fix))
                continue
            if replaced == text:
                linted.append(path)
                continue
            copy = Path(tmp) / str(number) / path.name
            copy.parent.mkdir()
            copy.write_text(replaced)
            conf = path.with_name(path.name + ".conf")
            if conf.is_file():
                shutil.copyfile(conf, copy.with_name(conf.name))
            originals[str(copy)] = path
            linted.append(copy)
        for finding in _lint(linted, exclude):
            original = originals.get(finding.file) or originals.get(str(Path(finding.file).resolve()))
            findings.append(replace(finding, file=str(original)) if original else finding)
    return sorted(findings, key=lambda f: (f.file, f.line, f.column, f.rule))


def _lint(files: list[Path], exclude: tuple[str, ...]) -> list[LintFinding]:
    if not files:
        return []
    texts = {f: read_sql(f) for f in files}
    transactional = [f for f in files if runs_in_transaction(f, texts[f])]
    autocommit = [f for f in files if f not in transactional]
    findings: list[LintFinding] = []
    if transactional:
        findings += _run_squawk(transactional, exclude, in_transaction=True)
    if autocommit:
        findings += _run_squawk(autocommit, exclude, in_transaction=False)
    findings += _dbops_findings(texts, transactional, findings)
    return sorted(findings, key=lambda f: (f.file, f.line, f.column, f.rule))


def _dbops_findings(texts: dict[Path, str], transactional: list[Path],
                    squawk: list[LintFinding]) -> list[LintFinding]:
    """What `apply` refuses, as error findings (a parse failure squawk already reported as syntax-error is not
    repeated)."""
    syntax = {Path(f.file).resolve() for f in squawk if f.rule == "syntax-error"}
    out = []
    for path, text in texts.items():
        for problem in sql_problems(text, in_transaction=path in transactional):
            if problem.rule == "unparseable" and path.resolve() in syntax:
                continue
            out.append(LintFinding(file=str(path), line=problem.line, column=1, level="error",
                                   rule=f"dbops-{problem.rule}", message=problem.problem, help=problem.fix))
    return out

"""Findings: what an audit rule reports, graded by severity and mapped to the OWASP Top 10:2025 (and 2021) and the CIS
PostgreSQL 17 Benchmark through the rule's control (dbops/security/catalog.py).

A finding names one subject (a role, a table, a setting, a pg_hba line) so two runs can be compared and a fix can be
proposed per subject. ``remediation`` is SQL when SQL can fix it (``harden --plan`` collects those), else a sentence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"  # not a weakness: something the audit could not check or found nothing to check

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


# OWASP Top 10 (2021) categories used by the rules.
A01_ACCESS = "A01:2021-Broken Access Control"
A02_CRYPTO = "A02:2021-Cryptographic Failures"
A05_MISCONFIG = "A05:2021-Security Misconfiguration"
A07_AUTH = "A07:2021-Identification and Authentication Failures"
A09_LOGGING = "A09:2021-Security Logging and Monitoring Failures"


@dataclass(frozen=True)
class Finding:
    rule: str
    title: str
    severity: Severity
    owasp: str
    subject: str
    evidence: str
    remediation: str
    # SQL statements that fix it (empty when the fix is a file edit or an operator decision)
    fix_sql: tuple[str, ...] = ()
    # True when the fix cannot run inside a transaction (ALTER SYSTEM): the migration must be a no-transaction file
    fix_outside_transaction: bool = False
    # stamped by the audit from the rule's control: ``owasp`` above is then the 2025 category
    owasp_2021: str = ""
    cis: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["severity"] = self.severity.value
        out["fix_sql"] = list(self.fix_sql)
        return out


@dataclass
class AuditReport:
    target: str  # redacted URL
    findings: list[Finding] = field(default_factory=list)
    # the server's TLS settings and whether the audit's own connection was encrypted
    tls: dict[str, Any] = field(default_factory=dict)
    # the schemas the generic rules covered
    schemas: list[str] = field(default_factory=list)
    # without a matrix: the grants baseline (path, recorded now or not, when, how many changes it found)
    baseline: dict[str, Any] = field(default_factory=dict)

    def sorted(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (f.severity.rank, f.rule, f.subject))

    def counts(self) -> dict[str, int]:
        found = Counter(f.severity.value for f in self.findings)
        return {s.value: found.get(s.value, 0) for s in Severity}

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    def table_markdown(self, *, with_remediation: bool = True) -> str:
        header = ["severity", "rule", "OWASP", "CIS", "subject", "title", "evidence"]
        if with_remediation:
            header.append("remediation")
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for f in self.sorted():
            cells = [f.severity.value, f.rule, f.owasp, f.cis, f.subject, f.title, f.evidence]
            if with_remediation:
                cells.append(f.remediation)
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        counts = self.counts()
        return ", ".join(f"{counts[s.value]} {s.value}" for s in Severity)

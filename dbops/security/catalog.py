"""The catalog of audit controls: every rule id the audit can report, with its OWASP Top 10:2025 category, the 2021
one (for those who still report against it) and the CIS PostgreSQL 17 Benchmark recommendation where one applies.

Each rules module registers the controls of its rules with :func:`control`; the audit stamps every finding with its
control's categories, so a rule states its severity, subject, evidence and fix, and the mapping lives here once.
A finding whose rule has no control is a programming error (a test reads every rule's findings).
"""

from __future__ import annotations

from dataclasses import dataclass

# OWASP Top 10:2025
A01 = "A01:2025-Broken Access Control"
A02 = "A02:2025-Security Misconfiguration"
A03 = "A03:2025-Software Supply Chain Failures"
A04 = "A04:2025-Cryptographic Failures"
A05 = "A05:2025-Injection"
A06 = "A06:2025-Insecure Design"
A07 = "A07:2025-Authentication Failures"
A08 = "A08:2025-Software or Data Integrity Failures"
A09 = "A09:2025-Security Logging and Alerting Failures"
A10 = "A10:2025-Mishandling of Exceptional Conditions"
OWASP_2025 = (A01, A02, A03, A04, A05, A06, A07, A08, A09, A10)

# OWASP Top 10:2021
A01_2021 = "A01:2021-Broken Access Control"
A02_2021 = "A02:2021-Cryptographic Failures"
A03_2021 = "A03:2021-Injection"
A04_2021 = "A04:2021-Insecure Design"
A05_2021 = "A05:2021-Security Misconfiguration"
A06_2021 = "A06:2021-Vulnerable and Outdated Components"
A07_2021 = "A07:2021-Identification and Authentication Failures"
A08_2021 = "A08:2021-Software and Data Integrity Failures"
A09_2021 = "A09:2021-Security Logging and Monitoring Failures"
OWASP_2021 = (A01_2021, A02_2021, A03_2021, A04_2021, A05_2021, A06_2021, A07_2021, A08_2021, A09_2021)

# The 2021 category a 2025 one most often corresponds to (a control may name another).
DEFAULT_2021 = {A01: A01_2021, A02: A05_2021, A03: A06_2021, A04: A02_2021, A05: A03_2021, A06: A04_2021,
                A07: A07_2021, A08: A08_2021, A09: A09_2021, A10: A04_2021}


@dataclass(frozen=True)
class Control:
    rule: str  # SECnnn
    title: str  # what the control checks, in a few words
    owasp: str  # the OWASP Top 10:2025 category
    owasp_2021: str
    cis: str = ""  # the CIS PostgreSQL 17 Benchmark recommendation ("4.3"), "" where none applies


CONTROLS: dict[str, Control] = {}


def control(rule: str, title: str, owasp: str, *, cis: str = "", owasp_2021: str = "") -> Control:
    """Register the control of ``rule`` (once)."""
    if rule in CONTROLS:
        raise ValueError(f"control {rule} is registered twice")
    if owasp not in OWASP_2025:
        raise ValueError(f"control {rule}: {owasp!r} is not an OWASP Top 10:2025 category")
    made = Control(rule, title, owasp, owasp_2021 or DEFAULT_2021[owasp], cis)
    if made.owasp_2021 not in OWASP_2021:
        raise ValueError(f"control {rule}: {made.owasp_2021!r} is not an OWASP Top 10:2021 category")
    CONTROLS[rule] = made
    return made

"""Security audit (OWASP-mapped, severity-graded findings) and the hardening plan."""

from dbops.security.audit import audit_database
from dbops.security.findings import AuditReport, Finding, Severity
from dbops.security.matrix import AccessMatrix, load_matrix

__all__ = ["AccessMatrix", "AuditReport", "Finding", "Severity", "audit_database", "load_matrix"]

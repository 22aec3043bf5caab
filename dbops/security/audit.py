"""Run every rule against one database and its cluster; the report is what the CLI prints and the asset records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from dbops.backup.store import Store
from dbops.pg.connect import connection
from dbops.redact import redact, redact_url
from dbops.security.backups import audit_backups
from dbops.security.findings import AuditReport, Finding
from dbops.security.matrix import AccessMatrix, load_matrix
from dbops.security.rules import RULES, AuditContext


def audit_database(
    url: str,
    matrix: AccessMatrix | Path,
    *,
    require_tls: bool | None = None,
    backups: Store | None = None,
    check_backups: bool = True,
    env: Mapping[str, str] | None = None,
) -> AuditReport:
    """Audit the database at ``url`` (connect as a superuser to see roles' passwords and pg_hba.conf).

    ``require_tls`` None means: required when ssl is on or the server listens beyond loopback.
    """
    if not isinstance(matrix, AccessMatrix):
        matrix = load_matrix(matrix)
    report = AuditReport(target=redact_url(url))
    with connection(url) as conn:
        conn.execute("SET statement_timeout = '60s'")
        ctx = AuditContext(conn, matrix, require_tls).load()
        report.tls = tls_state(ctx)
        for rule in RULES:
            report.findings.extend(_clean(f) for f in rule(ctx))
    if check_backups:
        report.findings.extend(_clean(f) for f in audit_backups(backups, env))
    return report


def _clean(finding: Finding) -> Finding:
    """Findings quote catalog text (pg_hba lines, settings): never let a secret through."""

    return replace(finding, evidence=redact(finding.evidence), remediation=redact(finding.remediation),
                   subject=redact(finding.subject))


def tls_state(ctx: AuditContext) -> dict[str, object]:
    """What the server enforces and what this very connection got (pg_stat_ssl)."""
    row = ctx.conn.execute("SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    encrypted, version, cipher = row if row else (False, None, None)
    return {
        "ssl": ctx.settings.get("ssl"),
        "ssl_min_protocol_version": ctx.settings.get("ssl_min_protocol_version"),
        "tls_required": ctx.tls_required,
        "connection_encrypted": bool(encrypted),
        "connection_protocol": version,
        "connection_cipher": cipher,
    }

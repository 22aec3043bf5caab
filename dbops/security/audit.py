"""Run every rule against one database and its cluster; the report is what the CLI prints and the asset records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from dbops.backup.store import Store
from dbops.pg.connect import connection, database_name
from dbops.redact import redact, redact_url
from dbops.security import rules_objects, rules_roles, rules_server, sensitive  # noqa: F401 - their rules join RULES
from dbops.security.backups import audit_backups
from dbops.security.catalog import CONTROLS
from dbops.security.findings import A01_ACCESS, AuditReport, Finding, Severity
from dbops.security.grants import BaselineError, BaselineStore, baseline_summary, compare, take_snapshot
from dbops.security.matrix import AccessMatrix, load_matrix
from dbops.security.rules import RULES, AuditContext


def audit_database(
    url: str,
    matrix: AccessMatrix | Path | None,
    *,
    require_tls: bool | None = None,
    backups: Store | None = None,
    check_backups: bool = True,
    env: Mapping[str, str] | None = None,
    schemas: Sequence[str] = (),
    baseline: BaselineStore | None = None,
    accept_baseline: bool = False,
) -> AuditReport:
    """Audit the database at ``url`` (connect as a superuser to see roles' passwords and pg_hba.conf).

    ``require_tls`` None means: required when ssl is on or the server listens beyond loopback. ``schemas`` are the
    target's (empty: every user schema; ``public`` always). Without a ``matrix`` the grants are compared with the
    ``baseline`` (recorded by the first audit, or again with ``accept_baseline``).
    """
    if matrix is not None and not isinstance(matrix, AccessMatrix):
        matrix = load_matrix(matrix)
    if accept_baseline and matrix is not None:
        raise BaselineError("this target has an access-control matrix, so there is no grants baseline to accept",
                            "declare the grants in the matrix (access_control) instead")
    report = AuditReport(target=redact_url(url))
    with connection(url) as conn:
        conn.execute("SET statement_timeout = '60s'")
        ctx = AuditContext(conn, matrix, require_tls, tuple(schemas)).load()
        report.tls = tls_state(ctx)
        report.schemas = list(ctx.schemas)
        for rule in RULES:
            report.findings.extend(_clean(f) for f in rule(ctx))
        if matrix is None:
            report.findings.extend(_clean(f) for f in _against_baseline(ctx, url, baseline, accept_baseline, report))
        columns = sensitive.sensitive_columns(ctx) if check_backups else []
    if check_backups:
        backup_findings = audit_backups(backups, env)
        # an unencrypted backup of a database holding sensitive columns names the columns at risk (SEC102)
        report.findings.extend(_clean(f) for f in [*backup_findings,
                                                   *sensitive.backup_exposure(columns, backup_findings)])
    return report


def _against_baseline(ctx: AuditContext, url: str, store: BaselineStore | None, accept: bool,
                      report: AuditReport) -> list[Finding]:
    if store is None:
        return [Finding("SEC040", "grants not compared", Severity.INFO, A01_ACCESS, "grants baseline",
                        "no access-control matrix and no grants baseline to compare the grants with",
                        "give the target an access_control matrix, or audit through dbops (which records one)")]
    snap = take_snapshot(ctx.conn, ctx.schemas, store.as_database)
    database = database_name(url)
    if accept or not store.exists():
        recorded = store.save(snap, database, ctx.scope)
        report.baseline = {"path": str(store.path), "recorded": True, "recorded_at": recorded.recorded_at,
                           "changes": 0}
        return [Finding("SEC040", "grants baseline recorded", Severity.INFO, A01_ACCESS, "grants baseline",
                        f"{'re-' if accept else 'first audit: '}recorded {baseline_summary(recorded)} of database"
                        f" {database} in {store.path}; later audits report changes against it",
                        "review the file; record it again after a reviewed change: dbops security audit"
                        " --accept-baseline")]
    baseline = store.load()
    if not store.read_only and baseline.database != database:
        raise BaselineError(f"the grants baseline {store.path} was recorded for database {baseline.database}, not"
                            f" {database}", "record it for this database: dbops security audit --accept-baseline")
    changes = compare(baseline, snap)
    report.baseline = {"path": str(store.path), "recorded": False, "recorded_at": baseline.recorded_at,
                       "changes": sum(1 for f in changes if f.severity is not Severity.INFO)}
    return changes


def _clean(finding: Finding) -> Finding:
    """Findings quote catalog text (pg_hba lines, settings): never let a secret through. Each is stamped with its
    rule's control: OWASP Top 10:2025 and 2021 categories, CIS recommendation."""
    known = CONTROLS.get(finding.rule)
    if known is None:
        raise KeyError(f"rule {finding.rule} has no control in dbops.security.catalog")
    return replace(finding, evidence=redact(finding.evidence), remediation=redact(finding.remediation),
                   subject=redact(finding.subject), owasp=known.owasp, owasp_2021=known.owasp_2021, cis=known.cis)


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

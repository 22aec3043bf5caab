"""``<target>/security_audit``: the findings of the managed database, mapped to OWASP (2025 and 2021) and numbered
after the CIS PostgreSQL 17 Benchmark, with its two gates as checks."""

import time

import dagster as dg

from dbops.components import metadata as mt
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource
from dbops.components.security.resources import SecurityResource
from dbops.redact import redact
from dbops.security.audit import audit_database
from dbops.security.findings import Finding, Severity

_MAX_ROWS_SHOWN = 200
COLUMNS = ["severity", "rule", "owasp", "owasp_2021", "cis", "subject", "title", "evidence", "remediation"]


def findings_table(findings: list[Finding]) -> dg.MetadataValue:
    """The findings (the first :data:`_MAX_ROWS_SHOWN`), one row each, every cell redacted."""
    return mt.table([{"severity": f.severity.value, "rule": f.rule, "owasp": f.owasp, "owasp_2021": f.owasp_2021,
                      "cis": f.cis or None, "subject": redact(f.subject),
                      "title": redact(f.title), "evidence": redact(f.evidence), "remediation": redact(f.remediation)}
                     for f in findings[:_MAX_ROWS_SHOWN]], COLUMNS)


def build_security_audit(target: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(target, "security_audit"),
        group_name="security",
        deps=[asset_key(target, "schema_migrations")],
        pool=pool(target),
        kinds={"postgres"},
        check_specs=[
            dg.AssetCheckSpec("no_critical_findings", asset=asset_key(target, "security_audit"),
                              description="No critical finding (superusers, trust logins, keys beside backups...)."),
            dg.AssetCheckSpec("no_high_findings", asset=asset_key(target, "security_audit"),
                              description="No high finding; warns only, so the fix can go through a reviewed "
                                          "migration."),
        ],
        description="Audits roles, authentication, pg_hba.conf, TLS, grants against the access-control matrix (or, "
        "without one, against the grants baseline the first audit records), "
        "row-level security, SECURITY DEFINER functions, languages and extensions, connection logging, the audit "
        "trail and backup encryption; each finding graded and mapped to the OWASP Top 10 (2021). "
        "`dbops security harden --plan` proposes the fixes.",
    )
    def security_audit(
        context: dg.AssetExecutionContext, database: DatabaseResource, security: SecurityResource
    ) -> dg.MaterializeResult:
        database, security = database.for_target(target), security.for_target(target)
        began = time.monotonic()
        context.log.info(f"auditing {database.display_url}: roles, authentication, TLS, grants, RLS, functions, "
                         "extensions, logging" + (", backups" if security.check_backups else ""))
        report = audit_database(
            database.target_url,
            security.matrix_path,
            require_tls=security.require_tls,
            backups=security.backup_store() if security.check_backups else None,
            check_backups=security.check_backups,
            env=security.backup_key_env() if security.check_backups else None,
            schemas=security.schemas,
            baseline=security.baseline(),
        )
        counts = report.counts()
        context.log.info(f"security audit of {report.target} done in {time.monotonic() - began:.1f} s: "
                         f"{report.summary()}")

        def gate(name: str, severity: Severity, level: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
            hits = [f for f in report.sorted() if f.severity is severity]
            return dg.AssetCheckResult(
                check_name=name,
                passed=not hits,
                severity=level,
                metadata={
                    "count": dg.MetadataValue.int(len(hits)),
                    "findings": findings_table(hits) if hits else dg.MetadataValue.text("none"),
                },
            )

        findings = report.sorted()
        return dg.MaterializeResult(
            metadata={
                **{f"findings_{level}": dg.MetadataValue.int(n) for level, n in counts.items()},
                "findings_total": dg.MetadataValue.int(len(findings)),
                "findings": findings_table(findings) if findings else dg.MetadataValue.text("none"),
                **({"findings_note": dg.MetadataValue.text(f"first {_MAX_ROWS_SHOWN} of {len(findings)} findings")}
                   if len(findings) > _MAX_ROWS_SHOWN else {}),
                "target": dg.MetadataValue.text(report.target),
                "tls": dg.MetadataValue.json({k: v for k, v in report.tls.items()}),
                "schemas": dg.MetadataValue.text(", ".join(report.schemas)),
                **({"grants_baseline": dg.MetadataValue.json(report.baseline)} if report.baseline else {}),
            },
            check_results=[
                gate("no_critical_findings", Severity.CRITICAL, dg.AssetCheckSeverity.ERROR),
                gate("no_high_findings", Severity.HIGH, dg.AssetCheckSeverity.WARN),
            ],
        )

    return security_audit

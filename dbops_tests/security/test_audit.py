"""The audit on real clusters: every planted flaw found with its severity and OWASP category and nothing else; the
hardened reference schema has no critical or high finding; TLS state reported as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.backup.keys import KEY_ENV, MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.manifest import save_manifest
from dbops.backup.store import LocalStore
from dbops.pg.server import EmbeddedServer
from dbops.security import AuditReport, Severity, audit_database, load_matrix
from dbops.security.catalog import A04, A07, A08
from dbops_tests.conftest import PROJECT_DIR
from dbops_tests.security import flaws
from dbops_tests.security.conftest import PG15_BIN, REF_DB

MATRIX = PROJECT_DIR / "sql" / "access-control.yml"
C, H, M, L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW

EXPECTED_WEAK = flaws.expected()


def findings_map(report: AuditReport) -> dict[tuple[str, str], tuple[Severity, str]]:
    out = {}
    for f in report.findings:
        subject = "backup store" if f.rule == "SEC033" else f.subject
        assert (f.rule, subject) not in out, f"duplicate finding {f.rule} {subject}"
        out[(f.rule, subject)] = (f.severity, f.owasp)
    return out


def weak_backups(tmp_path: Path) -> tuple[LocalStore, dict[str, str]]:
    """A store holding an unencrypted backup's manifest, one whose data key is in clear, and, beside them, the master
    key."""
    secret = generate_key()
    env = {KEY_ENV: secret}
    store = LocalStore(tmp_path / "backups")
    manifest = {"format": 1, "id": "plain-1", "kind": "logical", "finished_at": "2026-01-01T00:00:00Z",
                "objects": [], "compression": {"algorithm": "zstd"}}
    save_manifest(store, MasterKey.from_env(env), manifest)
    # SEC032: a manifest that keeps its data key in clear beside the ciphertext
    keyed = {**manifest, "id": "keyed-1", "encryption": {"algorithm": "AES-256-GCM", "data_key": "00" * 32}}
    save_manifest(store, MasterKey.from_env(env), keyed)
    store.write_bytes("keys/master.key", secret.encode())
    return store, env


def test_weakened_cluster_every_flaw_found_and_nothing_else(weak_server: EmbeddedServer, tmp_path: Path) -> None:
    store, env = weak_backups(tmp_path)
    report = audit_database(weak_server.url(REF_DB), MATRIX, backups=store, env=env)
    found = findings_map(report)
    missing = {k: v for k, v in EXPECTED_WEAK.items() if k not in found}
    unexpected = {k: v for k, v in found.items() if k not in EXPECTED_WEAK}
    wrong = {k: (found[k], v) for k, v in EXPECTED_WEAK.items() if k in found and found[k] != v}
    assert (missing, unexpected, wrong) == ({}, {}, {}), report.table_markdown()
    assert report.count(Severity.CRITICAL) == sum(sev is Severity.CRITICAL for sev, _ in EXPECTED_WEAK.values())
    assert len({rule for rule, _ in found}) >= 60  # distinct rules found on the weakened cluster
    # every finding says how to fix it, and fixable ones carry SQL
    assert all(f.remediation for f in report.findings)
    print("\nWEAKENED CLUSTER\n" + report.summary() + "\n" + report.table_markdown(with_remediation=False))


def test_hardened_reference_over_tls_has_no_critical_or_high(tls_server: EmbeddedServer, tmp_path: Path) -> None:
    secret = generate_key()
    store = LocalStore(tmp_path / "backups")
    logical_backup(tls_server.url(REF_DB), store, MasterKey.from_env({KEY_ENV: secret}), bin_dir=PG15_BIN)
    report = audit_database(tls_server.url(REF_DB), MATRIX, backups=store, env={KEY_ENV: secret})
    print("\nHARDENED REFERENCE (PostgreSQL 15, TLS)\n" + report.summary() + "\n" + report.table_markdown())
    assert report.count(Severity.CRITICAL) == 0 and report.count(Severity.HIGH) == 0, report.table_markdown()
    rules = {f.rule for f in report.findings}
    assert not rules & {"SEC005", "SEC006", "SEC007", "SEC008", "SEC030", "SEC031", "SEC033"}, rules
    # what is left is the test cluster's configuration, not the reference schema's, none critical or high:
    assert {(f.rule, f.severity) for f in report.findings} == {
        ("SEC002", L),  # reference login roles waiting for their passwords (set outside version control)
        ("SEC083", M),  # PostgreSQL's default ssl_ciphers admit suites without forward secrecy
        ("SEC087", M), ("SEC088", L), ("SEC090", L),  # log_statement none, a short log_line_prefix, no collector
        ("SEC094", M),  # fsync and full_page_writes off: the test clusters' speed settings (TEST_SETTINGS)
        ("SEC103", M),  # pgaudit not preloaded (test_sensitive preloads it and checks its settings)
    }


def test_hardened_reference_on_embedded_server(plain_server: EmbeddedServer) -> None:
    report = audit_database(plain_server.url(REF_DB), MATRIX)
    print("\nHARDENED REFERENCE (embedded PostgreSQL 18, loopback, no TLS)\n" + report.summary() + "\n"
          + report.table_markdown())
    assert report.count(Severity.CRITICAL) == 0 and report.count(Severity.HIGH) == 0
    found = findings_map(report)
    # TLS off on a loopback-only server is reported, graded medium; no backups is info, not a pass
    assert found[("SEC007", "ssl")] == (M, A04)
    assert found[("SEC030", "backups")] == (Severity.INFO, A08)
    # ... and high when TLS is required: the server and every plain host line are findings
    strict = findings_map(audit_database(plain_server.url(REF_DB), MATRIX, require_tls=True, check_backups=False))
    assert strict[("SEC007", "ssl")] == (H, A04)
    assert {k for k in strict if k[0] == "SEC006"} == {("SEC006", "pg_hba line 3"), ("SEC006", "pg_hba line 4"),
                                                        ("SEC006", "pg_hba line 6")}


def test_matrix_errors_name_the_entry(tmp_path: Path) -> None:
    from dbops.security.matrix import MatrixError

    bad = tmp_path / "ac.yml"
    bad.write_text("roles: {a: {login: true}}\ngrants:\n  - {role: b, object: app.t, privileges: [SELECT]}\n")
    with pytest.raises(MatrixError, match="grant #1: role b is not declared"):
        load_matrix(bad)
    bad.write_text("roles: {a: {login: true}}\ngrants:\n  - {role: a, object: app.t, privileges: [SELEC]}\n")
    with pytest.raises(MatrixError, match="unknown privilege"):
        load_matrix(bad)
    with pytest.raises(MatrixError, match="no access-control file"):
        load_matrix(tmp_path / "missing.yml")


def test_audit_as_unprivileged_auditor_says_what_it_could_not_check(plain_server: EmbeddedServer) -> None:
    from urllib.parse import quote

    from psycopg import sql

    from dbops.pg.connect import connection

    password = "Auditor-Pw-9931"
    with connection(plain_server.url(REF_DB)) as conn:
        conn.execute(sql.SQL("ALTER ROLE dbops_auditor PASSWORD {}").format(sql.Literal(password)))
    url = f"postgresql://dbops_auditor:{quote(password)}@127.0.0.1:{plain_server.port}/{REF_DB}"
    try:
        report = audit_database(url, MATRIX, check_backups=False)
    finally:
        with connection(plain_server.url(REF_DB)) as conn:
            conn.execute("ALTER ROLE dbops_auditor PASSWORD NULL")
    found = findings_map(report)
    assert found[("SEC002", "(not checked)")] == (Severity.INFO, A07)
    assert found[("SEC005", "(not checked)")] == (Severity.INFO, A07)
    assert report.count(Severity.CRITICAL) == 0 and report.count(Severity.HIGH) == 0


def test_audit_reads_the_default_backup_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DBOPS_BACKUP_STORE/DIR the audit looks where the backup steps write: $DBOPS_HOME/backups."""
    from dbops.security.backups import audit_backups, backup_store_for
    from dbops.settings import load_settings

    backup = load_settings({"DBOPS_HOME": str(tmp_path)}, tmp_path).target().backup
    assert backup_store_for(backup) is None
    (tmp_path / "backups").mkdir()
    store = backup_store_for(backup)
    assert isinstance(store, LocalStore) and store.root.resolve() == (tmp_path / "backups").resolve()
    (finding,) = audit_backups(store, env={})
    assert finding.rule == "SEC030" and "no complete backup in" in finding.evidence, finding

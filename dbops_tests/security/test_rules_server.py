"""The server rules (SEC080-SEC099), each planted on a server of its own (Debian's PostgreSQL 15 over TLS, or the
embedded 18): the finding with its severity, OWASP and CIS mapping, evidence naming the object and a fix, and the fix
(its SQL where there is one) making it go; the weakened cluster reports exactly this area's flaws, the hardened
references nothing critical or high."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg import sql

from dbops.pg.binaries import run_as_user
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops.programs import run_command
from dbops.security import rules_server
from dbops.security.audit import _clean
from dbops.security.catalog import A01, A02, A03, A04, A07, A08, A09, CONTROLS
from dbops.security.findings import Finding, Severity
from dbops.security.rules import RULES, AuditContext
from dbops_tests.conftest import start_test_server, stop_test_server
from dbops_tests.security import flaws
from dbops_tests.security.conftest import HARDENED_HBA, PG15_BIN, REF_DB, Certificates, configure, write_owned
from dbops_tests.security.flaws import server as server_flaws

C, H, M, L, INFO = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO
SERVER_RULES = [r for r in RULES if r.__module__ == rules_server.__name__]
Found = dict[tuple[str, str], Finding]


def audit_server_rules(url: str) -> Found:
    """Only this area's rules, stamped by their controls as the audit stamps them."""
    with connection(url) as conn:
        ctx = AuditContext(conn, None).load()
        out: Found = {}
        for check in SERVER_RULES:
            for finding in check(ctx):
                finding = _clean(finding)
                assert (finding.rule, finding.subject) not in out, finding
                out[(finding.rule, finding.subject)] = finding
    return out


def run_sql(url: str, *statements: str) -> None:
    with connection(url) as conn:
        for statement in statements:
            conn.execute(statement)


def settle(url: str, check: Callable[[Found], bool], what: str) -> Found:
    """Audit until ``check`` holds (a reload reaches new sessions shortly after pg_reload_conf returns)."""
    deadline = time.monotonic() + 15
    while True:
        found = audit_server_rules(url)
        if check(found) or time.monotonic() > deadline:
            assert check(found), f"{what}: {sorted(found)}"
            return found
        time.sleep(0.2)


def plant(url: str, **settings: str) -> None:
    with connection(url) as conn:
        for name, value in settings.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")


def wait_setting(url: str, name: str, value: str) -> None:
    """Until new sessions see the reloaded ``name``."""
    deadline = time.monotonic() + 15
    while True:
        with connection(url) as conn:
            now = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()[0]
        if now == value or time.monotonic() > deadline:
            assert now == value, (name, now, value)
            return
        time.sleep(0.2)


def assert_finding(found: Found, rule: str, subject: str, severity: Severity, owasp: str, *mentions: str) -> Finding:
    finding = found.get((rule, subject))
    assert finding is not None, (rule, subject, sorted(found))
    assert (finding.severity, finding.owasp) == (severity, owasp), finding
    assert finding.owasp_2021 == CONTROLS[rule].owasp_2021 and finding.cis == CONTROLS[rule].cis, finding
    for text in (subject.split()[-1], *mentions):
        assert text in finding.evidence, (text, finding.evidence)
    assert finding.remediation, finding
    return finding


def fix_and_settle(url: str, finding: Finding) -> Found:
    assert finding.fix_sql, finding
    assert finding.fix_outside_transaction == any("ALTER SYSTEM" in s for s in finding.fix_sql), finding
    run_sql(url, *finding.fix_sql)
    key = (finding.rule, finding.subject)
    return settle(url, lambda found: key not in found, f"{key} still reported after its fix")


def restart(server: EmbeddedServer) -> None:
    server.stop()
    server.start()


@pytest.fixture
def pg15(certificates: Certificates) -> Iterator[EmbeddedServer]:
    """A PostgreSQL 15 of this test's own, over TLS like the hardened reference."""
    server = start_test_server(PG15_BIN)
    try:
        configure(server, HARDENED_HBA, {"ssl": "on", "ssl_min_protocol_version": "TLSv1.2"}, certificates)
        yield server
    finally:
        stop_test_server(server)


# ---- pg_hba.conf --------------------------------------------------------------------------------------------------
def test_hba_open_ranges_all_roles_and_ident_over_tcp(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    lines = [*HARDENED_HBA,  # lines 1-2 stay clean
             "hostssl all      all        0.0.0.0/0       scram-sha-256",  # 3: SEC081 high
             "hostssl all      all        ::/0            scram-sha-256",  # 4: SEC081 high
             "hostssl all      srv_net    172.16.0.0/12   scram-sha-256",  # 5: SEC081 medium
             "hostssl all      all        10.30.0.0/16    scram-sha-256",  # 6: SEC080
             "hostssl srv_db   srv_user   192.0.2.0/24    ident",          # 7: SEC082
             "host    all      all        0.0.0.0/0       reject",         # 8: reject lines are fine
             "hostssl all      all        127.0.0.1/32    scram-sha-256"]  # 9: loopback is fine
    write_owned(pg15, "pg_hba.conf", "\n".join(lines) + "\n")
    run_sql(url, "SELECT pg_reload_conf()")
    found = settle(url, lambda f: ("SEC082", "pg_hba line 7") in f, "the planted pg_hba lines")
    assert_finding(found, "SEC081", "pg_hba line 3", H, A02, "0.0.0.0/0", "the whole address space")
    assert_finding(found, "SEC081", "pg_hba line 4", H, A02, "::/0")
    assert_finding(found, "SEC081", "pg_hba line 5", M, A02, "172.16.0.0/12", "1,048,576 addresses")
    assert_finding(found, "SEC080", "pg_hba line 6", M, A01, "10.30.0.0/16", "any role")
    assert_finding(found, "SEC082", "pg_hba line 7", H, A07, "ident", "192.0.2.0/24")
    hba = {k for k in found if k[0] in ("SEC080", "SEC081", "SEC082")}
    assert hba == {("SEC081", "pg_hba line 3"), ("SEC081", "pg_hba line 4"), ("SEC081", "pg_hba line 5"),
                   ("SEC080", "pg_hba line 6"), ("SEC082", "pg_hba line 7")}, hba
    assert found[("SEC082", "pg_hba line 7")].cis == "5.4"
    # the fix is a file edit: named databases and roles, narrow ranges, scram instead of ident
    fixed = [*HARDENED_HBA, "hostssl srv_db all 10.30.0.0/16 scram-sha-256",
             "hostssl srv_db srv_user 192.0.2.0/24 scram-sha-256", "host all all 0.0.0.0/0 reject"]
    write_owned(pg15, "pg_hba.conf", "\n".join(fixed) + "\n")
    run_sql(url, "SELECT pg_reload_conf()")
    settle(url, lambda f: not any(k[0] in ("SEC080", "SEC081", "SEC082") for k in f), "pg_hba findings after the fix")


def test_hba_rules_say_what_a_non_superuser_could_not_check(pg15: EmbeddedServer) -> None:
    password = "Srv-Auditor-Pw-4471"
    run_sql(pg15.url(), sql.SQL("CREATE ROLE srv_auditor LOGIN PASSWORD {}").format(sql.Literal(password))
            .as_string(None))
    found = audit_server_rules(f"postgresql://srv_auditor:{quote(password)}@127.0.0.1:{pg15.port}/postgres")
    for rule in ("SEC080", "SEC081", "SEC082", "SEC097"):
        assert found[(rule, "(not checked)")].severity is INFO, sorted(found)
    assert not [f for f in found.values() if f.severity in (C, H)], sorted(found)


# ---- TLS ------------------------------------------------------------------------------------------------------------
def test_tls_weak_cipher_suites_and_client_order(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    # PostgreSQL's default list (HIGH:MEDIUM:+3DES:!aNULL) keeps suites without forward secrecy: medium
    found = audit_server_rules(url)
    default = assert_finding(found, "SEC083", "ssl_ciphers", M, A04, "HIGH:MEDIUM:+3DES:!aNULL", "forward secrecy")
    assert default.cis == "6.10"
    plant(url, ssl_ciphers="ALL:!eNULL", ssl_prefer_server_ciphers="off")
    found = settle(url, lambda f: ("SEC083", "ssl_prefer_server_ciphers") in f, "planted cipher settings")
    weak = assert_finding(found, "SEC083", "ssl_ciphers", H, A04, "ALL:!eNULL", "unauthenticated")
    order = assert_finding(found, "SEC083", "ssl_prefer_server_ciphers", L, A04, "off")
    fix_and_settle(url, order)
    found = fix_and_settle(url, weak)
    assert not [k for k in found if k[0] == "SEC083"], sorted(found)
    # TLS 1.3 only: ssl_ciphers no longer applies
    plant(url, ssl_ciphers="ALL:!eNULL", ssl_min_protocol_version="TLSv1.3")
    wait_setting(url, "ssl_min_protocol_version", "TLSv1.3")
    assert ("SEC083", "ssl_ciphers") not in audit_server_rules(url)


# ---- logging --------------------------------------------------------------------------------------------------------
def test_log_levels_verbosity_and_ddl_logging(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    found = audit_server_rules(url)
    # PostgreSQL's default log_statement (none) is a finding on every server, graded medium
    assert_finding(found, "SEC087", "log_statement", M, A09, "none")
    plant(url, log_min_error_statement="panic", log_min_messages="fatal", log_error_verbosity="terse")
    found = settle(url, lambda f: ("SEC086", "log_error_verbosity") in f, "planted log levels")
    planted = [assert_finding(found, "SEC084", "log_min_error_statement", M, A09, "panic"),
               assert_finding(found, "SEC085", "log_min_messages", M, A09, "fatal"),
               assert_finding(found, "SEC086", "log_error_verbosity", L, A09, "terse"),
               found[("SEC087", "log_statement")]]
    assert [f.cis for f in planted] == ["3.1.15", "3.1.14", "3.1.22", "3.1.25"]
    for finding in planted:
        fix_and_settle(url, finding)
    plant(url, log_min_error_statement="log")  # just above error is still a finding
    settle(url, lambda f: ("SEC084", "log_min_error_statement") in f, "log_min_error_statement = log")


def test_log_line_prefix_names_who_did_what(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    # dbops' own prefix (%m [%p] %q%u@%d) lacks the application and the client address: low
    found = audit_server_rules(url)
    own = assert_finding(found, "SEC088", "log_line_prefix", L, A09, "%m [%p] %q%u@%d", "the application",
                         "the client address")
    assert "the user" not in own.evidence and own.cis == "3.1.24"
    plant(url, log_line_prefix="%t ")
    found = settle(url, lambda f: "'%t '" in getattr(f.get(("SEC088", "log_line_prefix")), "evidence", ""),
                   "log_line_prefix = %t")
    bare = assert_finding(found, "SEC088", "log_line_prefix", M, A09, "the process", "the user", "the database")
    fix_and_settle(url, bare)
    plant(url, log_line_prefix="%t ", log_destination="jsonlog")  # jsonlog carries every field itself
    wait_setting(url, "log_destination", "jsonlog")
    assert ("SEC088", "log_line_prefix") not in audit_server_rules(url)


def test_lock_waits_temp_files_and_checkpoints_logged(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    plant(url, log_lock_waits="off", log_temp_files="-1", log_checkpoints="off")
    found = settle(url, lambda f: ("SEC089", "log_checkpoints") in f, "planted operational logging")
    for name, value in (("log_lock_waits", "off"), ("log_temp_files", "-1"), ("log_checkpoints", "off")):
        fix_and_settle(url, assert_finding(found, "SEC089", name, L, A09, value))


def test_log_capture_needs_the_collector(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    # stderr without the collector (how dbops runs its servers): low
    found = audit_server_rules(url)
    assert_finding(found, "SEC090", "logging_collector", L, A09, "off", "stderr")
    plant(url, log_destination="stderr,csvlog")
    found = settle(url, lambda f: f.get(("SEC090", "logging_collector"), None) is not None
                   and f[("SEC090", "logging_collector")].severity is M, "csvlog without the collector")
    finding = assert_finding(found, "SEC090", "logging_collector", M, A09, "csvlog")
    assert finding.cis == "3.1.2, 3.1.3" and "restart" in finding.remediation
    run_sql(url, *finding.fix_sql)  # logging_collector only changes at a restart: still reported until then
    found = audit_server_rules(url)
    assert ("SEC090", "logging_collector") in found
    restart(pg15)
    found = audit_server_rules(url)
    assert ("SEC090", "logging_collector") not in found, found[("SEC090", "logging_collector")]


def test_log_file_mode_private(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    plant(url, log_file_mode="0644")
    found = settle(url, lambda f: ("SEC091", "log_file_mode") in f, "log_file_mode = 0644")
    finding = assert_finding(found, "SEC091", "log_file_mode", M, A09, "0644", "every OS user")
    fix_and_settle(url, finding)
    plant(url, log_file_mode="0640")  # the owner's group may read: PostgreSQL's group-access mode
    wait_setting(url, "log_file_mode", "0640")
    assert ("SEC091", "log_file_mode") not in audit_server_rules(url)


# ---- listening, slots -----------------------------------------------------------------------------------------------
def test_listen_addresses_and_reserved_slots_waiting_for_a_restart(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    plant(url, listen_addresses="*", superuser_reserved_connections="0")  # not applied: they need a restart
    found = audit_server_rules(url)
    listen = assert_finding(found, "SEC092", "listen_addresses", L, A02, "'*'", "postgresql.auto.conf",
                            "next restart")
    slots = assert_finding(found, "SEC099", "superuser_reserved_connections", L, A02, "0", "next restart")
    assert (listen.cis, slots.cis) == ("5.2", "")
    fix_and_settle(url, listen)
    fix_and_settle(url, slots)
    restart(pg15)  # what is applied now is the fixed configuration
    found = audit_server_rules(url)
    assert not {k for k in found if k[0] in ("SEC092", "SEC099")}, sorted(found)


# ---- software and integrity --------------------------------------------------------------------------------------
def test_outdated_extension_on_the_embedded_server(fresh_db: str) -> None:
    run_sql(fresh_db, "CREATE EXTENSION amcheck VERSION '1.0'")
    found = audit_server_rules(fresh_db)
    finding = assert_finding(found, "SEC093", "extension amcheck", L, A03, "1.0")
    assert finding.fix_sql == ('ALTER EXTENSION "amcheck" UPDATE;',) and not finding.fix_outside_transaction
    run_sql(fresh_db, *finding.fix_sql)
    assert ("SEC093", "extension amcheck") not in audit_server_rules(fresh_db)


def test_crash_safety_and_data_checksums(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    found = audit_server_rules(url)  # every test server runs without fsync and full_page_writes
    fsync = assert_finding(found, "SEC094", "fsync", M, A08, "off", "corrupt")
    pages = assert_finding(found, "SEC094", "full_page_writes", M, A08, "off")
    assert fsync.cis == "1.4, 6.4"
    fix_and_settle(url, fsync)
    fix_and_settle(url, pages)
    checksums = [pg15.program("pg_checksums"), "-D", pg15.data_dir]
    pg15.stop()
    run_command([*checksums, "--disable"], user=run_as_user(), timeout=120)
    pg15.start()
    found = audit_server_rules(url)
    finding = assert_finding(found, "SEC094", "data_checksums", L, A08, "off")
    assert not finding.fix_sql and "pg_checksums --enable" in finding.remediation
    pg15.stop()
    run_command([*checksums, "--enable"], user=run_as_user(), timeout=120)
    pg15.start()
    assert ("SEC094", "data_checksums") not in audit_server_rules(url)


def test_corruption_hiding_and_catalog_switches(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    plant(url, zero_damaged_pages="on", ignore_checksum_failure="on", allow_system_table_mods="on")
    found = settle(url, lambda f: ("SEC095", "allow_system_table_mods") in f, "planted integrity switches")
    for name in ("zero_damaged_pages", "ignore_checksum_failure", "allow_system_table_mods"):
        finding = assert_finding(found, "SEC095", name, H, A08, "on")
        assert finding.cis == "6.5"
        fix_and_settle(url, finding)


def test_preloaded_libraries_and_library_path(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    plant(url, session_preload_libraries="auto_explain", dynamic_library_path="/var/lib/srv-libs:$libdir")
    found = settle(url, lambda f: ("SEC096", "dynamic_library_path") in f, "planted library settings")
    preload = assert_finding(found, "SEC096", "session_preload_libraries", M, A08, "auto_explain")
    path = assert_finding(found, "SEC096", "dynamic_library_path", M, A08, "/var/lib/srv-libs")
    assert path.cis == "8.3"
    fix_and_settle(url, preload)
    fix_and_settle(url, path)


# ---- files on the server's host ----------------------------------------------------------------------------------
def test_data_directory_mode(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    assert not [k for k in audit_server_rules(url) if k[0] == "SEC097"]
    try:
        os.chmod(pg15.data_dir, 0o755)
        found = audit_server_rules(url)
        finding = assert_finding(found, "SEC097", "data directory", M, A01, str(pg15.data_dir), "0755")
        assert finding.cis == "1.4" and "chmod 0700" in finding.remediation and not finding.fix_sql
        os.chmod(pg15.data_dir, 0o777)
        assert audit_server_rules(url)[("SEC097", "data directory")].severity is H
        os.chmod(pg15.data_dir, 0o750)  # group access, as initdb -g makes it
        assert ("SEC097", "data directory") not in audit_server_rules(url)
    finally:
        os.chmod(pg15.data_dir, 0o700)
    assert ("SEC097", "data directory") not in audit_server_rules(url)


def test_unix_socket_open_to_every_os_user(pg15: EmbeddedServer) -> None:
    url = pg15.url()
    socket_dir = Path(pg15.socket_dir)
    assert ("SEC098", "unix_socket_permissions") not in audit_server_rules(url)  # 0777, in a private directory
    os.chmod(pg15.home, 0o711)
    os.chmod(socket_dir, 0o711)
    found = audit_server_rules(url)
    finding = assert_finding(found, "SEC098", "unix_socket_permissions", L, A01, "0777", str(socket_dir))
    run_sql(url, *finding.fix_sql)
    assert ("SEC098", "unix_socket_permissions") in audit_server_rules(url)  # until the restart applies it
    restart(pg15)
    os.chmod(pg15.home, 0o711)  # the restart made the home private again; the socket is 0770 now anyway
    os.chmod(socket_dir, 0o711)
    assert ("SEC098", "unix_socket_permissions") not in audit_server_rules(url)


# ---- the shared clusters --------------------------------------------------------------------------------------------
def test_weakened_cluster_reports_exactly_the_server_flaws(weak_server: EmbeddedServer) -> None:
    found = audit_server_rules(weak_server.url(REF_DB))
    got = {k: (f.severity, f.owasp) for k, f in found.items()}
    assert got == server_flaws.EXPECTED, {"missing": set(server_flaws.EXPECTED) - set(got),
                                          "unexpected": set(got) - set(server_flaws.EXPECTED)}
    assert set(server_flaws.EXPECTED) <= set(flaws.expected())
    assert {rule for rule, _s in server_flaws.EXPECTED} == {f"SEC0{n}" for n in range(80, 100)}


@pytest.mark.parametrize("which", ["tls_server", "plain_server"])
def test_hardened_references_no_critical_or_high(which: str, request: pytest.FixtureRequest) -> None:
    server: EmbeddedServer = request.getfixturevalue(which)
    found = audit_server_rules(server.url(REF_DB))
    print(f"\n{which}: " + "; ".join(f"{f.rule} {f.severity.value} {f.subject}" for f in found.values()))
    assert not [f for f in found.values() if f.severity in (C, H)], found
    # what PostgreSQL's and dbops' defaults leave, at most medium: DDL not logged, no application or client in the
    # log prefix, stderr without the collector, and (test servers only) fsync and full_page_writes off
    assert {k for k, f in found.items() if f.severity is M} <= {
        ("SEC083", "ssl_ciphers"), ("SEC087", "log_statement"), ("SEC094", "fsync"), ("SEC094", "full_page_writes")}


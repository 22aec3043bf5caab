"""The roles rules (SEC050-SEC059) on real servers, PostgreSQL 18 (the session's) and 15 (Debian's) alike: each flaw
is planted on a new database with roles of its own (named per test: roles are cluster-wide), found with its
severity, OWASP 2025/2021 categories and CIS recommendation, its evidence naming the roles, and gone once its
fix_sql is applied. The weakened cluster reports exactly the roles area's flaws; the hardened reference none."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql

from dbops.pg.connect import connection, drop_database
from dbops.pg.server import EmbeddedServer
from dbops.security import AccessMatrix, Finding, Severity, audit_database
from dbops.security.catalog import A01, A01_2021
from dbops.security.matrix import Role
from dbops_tests.conftest import PROJECT_DIR, new_database, start_test_server, stop_test_server
from dbops_tests.security.conftest import PG15_BIN, REF_DB
from dbops_tests.security.flaws import roles as area

MATRIX = PROJECT_DIR / "sql" / "access-control.yml"
ROLE_RULES = {f"SEC05{i}" for i in range(10)}
C, H, M, L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW


@pytest.fixture(scope="module")
def pg15() -> Iterator[EmbeddedServer]:
    server = start_test_server(PG15_BIN)
    try:
        yield server
    finally:
        stop_test_server(server)


@pytest.fixture(params=["pg18", "pg15"])
def target(request: pytest.FixtureRequest, server_url: str, pg15: EmbeddedServer) -> Iterator[Planted]:
    """A new database on PostgreSQL 18 or 15, and the roles a test plants there (dropped afterwards)."""
    base = server_url if request.param == "pg18" else pg15.url("postgres")
    planted = Planted(new_database(base))
    try:
        yield planted
    finally:
        try:
            planted.drop_roles()
        finally:
            drop_database(base, planted.url.rsplit("/", 1)[1])


class Planted:
    def __init__(self, url: str) -> None:
        self.url = url
        self.tag = uuid.uuid4().hex[:6]
        self.roles: list[str] = []
        with connection(url) as conn:
            self.version = int(conn.execute("SHOW server_version_num").fetchone()[0])

    def role(self, base: str) -> str:
        name = f"rl{self.tag}_{base}"
        if name not in self.roles:
            self.roles.append(name)
        return name

    def run(self, template: str, *roles: str) -> None:
        """Run ``template`` with ``{}`` replaced by the quoted names of ``roles`` (this test's, by base name)."""
        with connection(self.url) as conn:
            conn.execute(sql.SQL(template).format(*(sql.Identifier(self.role(r)) for r in roles)))

    def apply(self, finding: Finding) -> None:
        assert finding.fix_sql, finding
        with connection(self.url) as conn:
            for statement in finding.fix_sql:
                conn.execute(statement)

    def audit(self, matrix: AccessMatrix | None = None) -> dict[tuple[str, str], Finding]:
        report = audit_database(self.url, matrix, check_backups=False)
        return {(f.rule, f.subject): f for f in report.findings
                if f.rule in ROLE_RULES and any(name in f.subject for name in self.roles)}

    def drop_roles(self) -> None:
        with connection(self.url) as conn:
            for name in reversed(self.roles):
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def matrix_of(planted: Planted, **purposes: str) -> AccessMatrix:
    """A matrix declaring the given roles (base name -> purpose) as login roles, with no grants."""
    roles = {planted.role(base): Role(planted.role(base), True, purpose) for base, purpose in purposes.items()}
    return AccessMatrix(roles, set(), {})


def check(finding: Finding, severity: Severity, cis: str, *mentions: str) -> None:
    assert finding.severity is severity, finding
    assert (finding.owasp, finding.owasp_2021, finding.cis) == (A01, A01_2021, cis), finding
    for text in mentions:
        assert text in finding.evidence, (text, finding.evidence)
    assert finding.fix_sql and finding.remediation, finding


def test_application_role_that_can_become_the_owner(target: Planted) -> None:
    t = target
    t.run("CREATE ROLE {} NOLOGIN", "owner")
    t.run("CREATE SCHEMA rl_zone AUTHORIZATION {}", "owner")
    t.run("CREATE TABLE rl_zone.ledger (id int, tenant_id int)")
    t.run("ALTER TABLE rl_zone.ledger OWNER TO {}", "owner")
    t.run("CREATE ROLE {} LOGIN NOINHERIT", "app")
    t.run("GRANT USAGE ON SCHEMA rl_zone TO {}", "app")
    t.run("GRANT SELECT ON rl_zone.ledger TO {}", "app")
    t.run("CREATE ROLE {} LOGIN NOINHERIT", "migrator")  # becomes the owner, holds no grant: not an application
    t.run("GRANT {} TO {}", "owner", "migrator")
    t.run("CREATE ROLE {} NOLOGIN", "group")  # the owner reached through a group: followed transitively
    t.run("GRANT {} TO {}", "group", "app")
    t.run("GRANT {} TO {}", "owner", "group")
    found = t.audit()
    app, owner, group = t.role("app"), t.role("owner"), t.role("group")
    finding = found[("SEC050", f"{app} can become {owner}")]
    check(finding, C, "4.7", f"{app} -> {group} -> {owner}", "can SET ROLE", "rl_zone.ledger")
    assert not [k for k in found if t.role("migrator") in k[1]], found
    t.apply(finding)
    assert ("SEC050", f"{app} can become {owner}") not in t.audit()


def test_inherit_and_set_options_of_postgresql_16(target: Planted) -> None:
    t = target
    if t.version < 160000:  # 15 has no per-grant options: any membership lets the member SET ROLE
        t.run("CREATE ROLE {} NOLOGIN", "owner")
        t.run("CREATE TABLE public.rl_owned (id int)")
        t.run("ALTER TABLE public.rl_owned OWNER TO {}", "owner")
        t.run("CREATE ROLE {} LOGIN NOINHERIT", "app")
        t.run("GRANT SELECT ON public.rl_owned TO {}", "app")
        t.run("GRANT {} TO {}", "owner", "app")
        finding = t.audit()[("SEC050", f"{t.role('app')} can become {t.role('owner')}")]
        check(finding, C, "4.7", "can SET ROLE", "public.rl_owned")
        assert "inherits" not in finding.evidence  # NOINHERIT on 15: SET ROLE only
        return
    t.run("CREATE ROLE {} NOLOGIN", "owner")
    t.run("CREATE TABLE public.rl_owned (id int)")
    t.run("ALTER TABLE public.rl_owned OWNER TO {}", "owner")
    for base in ("inert", "heir", "setter"):
        t.run("CREATE ROLE {} LOGIN", base)
        t.run("GRANT SELECT ON public.rl_owned TO {}", base)
    t.run("GRANT {} TO {} WITH INHERIT FALSE, SET FALSE", "owner", "inert")  # neither: nothing to report
    t.run("GRANT {} TO {} WITH INHERIT TRUE, SET FALSE", "owner", "heir")  # the owner's rights without SET ROLE
    t.run("GRANT {} TO {} WITH INHERIT FALSE, SET TRUE", "owner", "setter")
    found = t.audit()
    owner = t.role("owner")
    assert ("SEC050", f"{t.role('inert')} can become {owner}") not in found
    heir = found[("SEC050", f"{t.role('heir')} can become {owner}")]
    check(heir, C, "4.7", "inherits", "without SET ROLE")
    assert "can SET ROLE" not in heir.evidence
    setter = found[("SEC050", f"{t.role('setter')} can become {owner}")]
    check(setter, C, "4.7", "can SET ROLE")
    assert "inherits" not in setter.evidence
    for finding in (heir, setter):
        t.apply(finding)
    assert not [k for k in t.audit() if k[0] == "SEC050"]


def test_login_role_that_can_become_a_superuser(target: Planted) -> None:
    t = target
    t.run("CREATE ROLE {} NOLOGIN SUPERUSER", "root")
    t.run("CREATE ROLE {} NOLOGIN NOINHERIT", "admins")
    t.run("CREATE ROLE {} LOGIN", "breakglass")
    t.run("GRANT {} TO {}", "admins", "breakglass")
    t.run("GRANT {} TO {}", "root", "admins")
    found = t.audit()
    breakglass, root = t.role("breakglass"), t.role("root")
    finding = found[("SEC056", f"{breakglass} can become {root}")]
    check(finding, C, "4.8", f"{breakglass} -> {t.role('admins')} -> {root}", "SUPERUSER")
    t.apply(finding)
    assert not [k for k in t.audit() if k[0] == "SEC056"]


def test_createrole_createdb_bypassrls_beyond_the_matrix(target: Planted) -> None:
    t = target
    t.run("CREATE ROLE {} LOGIN CREATEROLE", "rolemaker")
    t.run("CREATE ROLE {} LOGIN CREATEDB", "dbmaker")
    t.run("CREATE ROLE {} LOGIN BYPASSRLS", "skipper")
    t.run("CREATE ROLE {} NOLOGIN BYPASSRLS", "dormant")  # nobody can use it today: one grade lower
    t.run("CREATE ROLE {} NOLOGIN BYPASSRLS", "owner")  # declared by the matrix (its purpose names it)
    found = t.audit()
    createrole = found[("SEC051", f"{t.role('rolemaker')}: CREATEROLE")]
    check(createrole, C if t.version < 160000 else H, "4.3", t.role("rolemaker"), "it can log in")
    check(found[("SEC052", f"{t.role('dbmaker')}: CREATEDB")], M, "4.3", "creates databases")
    check(found[("SEC053", f"{t.role('skipper')}: BYPASSRLS")], H, "4.7", "row-level security")
    check(found[("SEC053", f"{t.role('dormant')}: BYPASSRLS")], M, "4.7", "no login role reaches it")
    assert ("SEC053", f"{t.role('owner')}: BYPASSRLS") in found  # without a matrix, nothing is declared
    matrix = matrix_of(t, owner="owns the schema; BYPASSRLS for migrations")
    declared = t.audit(matrix)
    assert ("SEC053", f"{t.role('owner')}: BYPASSRLS") not in declared
    assert ("SEC053", f"{t.role('skipper')}: BYPASSRLS") in declared
    # a login role that can SET ROLE to the dormant one makes it count again
    t.run("CREATE ROLE {} LOGIN", "user")
    t.run("GRANT {} TO {}", "dormant", "user")
    check(t.audit()[("SEC053", f"{t.role('dormant')}: BYPASSRLS")], H, "4.7", f"{t.role('user')} can SET ROLE")
    for key in [("SEC051", f"{t.role('rolemaker')}: CREATEROLE"), ("SEC052", f"{t.role('dbmaker')}: CREATEDB"),
                ("SEC053", f"{t.role('skipper')}: BYPASSRLS")]:
        t.apply(found[key])
    after = t.audit()
    assert not [k for k in after if k[0] in {"SEC051", "SEC052"}], after
    assert ("SEC053", f"{t.role('skipper')}: BYPASSRLS") not in after


def test_replication_only_on_a_replication_only_role(target: Planted) -> None:
    t = target
    t.run("CREATE ROLE {} LOGIN REPLICATION", "standby")  # what CIS 7.1 asks for
    t.run("CREATE ROLE {} LOGIN REPLICATION", "both")  # ... and also reads the application's table
    t.run("CREATE TABLE public.rl_data (id int)")
    t.run("GRANT SELECT ON public.rl_data TO {}", "both")
    standby, both = t.role("standby"), t.role("both")
    found = t.audit()
    assert ("SEC054", f"{standby}: REPLICATION") not in found
    mixed = found[("SEC054", f"{both}: REPLICATION")]
    check(mixed, H, "7.1", "not a replication-only role", "holds privileges")
    # with a matrix, a replication role it does not declare is reported (medium), one it declares is not
    matrix = matrix_of(t, app="the application")
    check(t.audit(matrix)[("SEC054", f"{standby}: REPLICATION")], M, "7.1", "does not declare")
    assert ("SEC054", f"{standby}: REPLICATION") not in t.audit(matrix_of(t, standby="REPLICATION for the standby"))
    t.apply(mixed)
    assert ("SEC054", f"{both}: REPLICATION") not in t.audit()


def test_membership_in_predefined_roles(target: Planted) -> None:
    t = target
    t.run("CREATE ROLE {} LOGIN", "scribe")
    t.run("GRANT pg_write_all_data TO {}", "scribe")
    t.run("CREATE ROLE {} NOLOGIN", "signalers")
    t.run("GRANT pg_signal_backend TO {}", "signalers")
    t.run("CREATE ROLE {} LOGIN", "ops")
    t.run("GRANT {} TO {}", "signalers", "ops")
    t.run("CREATE ROLE {} LOGIN", "watcher")
    t.run("GRANT pg_monitor TO {}", "watcher")
    t.run("CREATE ROLE {} LOGIN", "filer")
    t.run("GRANT pg_read_server_files TO {}", "filer")  # SEC019's, not reported again
    found = t.audit()
    scribe = found[("SEC055", f"{t.role('scribe')} in pg_write_all_data")]
    check(scribe, H, "4.9", "writes every table", f"login roles that get it: {t.role('scribe')}")
    signal = found[("SEC055", f"{t.role('signalers')} in pg_signal_backend")]
    check(signal, M, "4.9", "terminates", t.role("ops"))
    check(found[("SEC055", f"{t.role('watcher')} in pg_monitor")], L, "4.9", "query text")
    # only the grant is reported, not what pg_monitor itself is a member of, nor the server file roles
    assert not [k for k in found if k[1].startswith(t.role("watcher")) and "pg_monitor" not in k[1]], found
    assert not [k for k in found if t.role("filer") in k[1]], found
    declared = t.audit(matrix_of(t, watcher="monitoring (pg_monitor)"))
    assert ("SEC055", f"{t.role('watcher')} in pg_monitor") not in declared
    assert ("SEC055", f"{t.role('scribe')} in pg_write_all_data") in declared
    t.apply(scribe)
    t.apply(signal)
    after = t.audit()
    assert ("SEC055", f"{t.role('scribe')} in pg_write_all_data") not in after
    assert ("SEC055", f"{t.role('signalers')} in pg_signal_backend") not in after


def test_admin_option_on_roles(target: Planted) -> None:
    t = target
    t.run("CREATE ROLE {} NOLOGIN", "team")
    t.run("CREATE ROLE {} NOLOGIN", "owner")
    t.run("CREATE TABLE public.rl_owned (id int)")
    t.run("ALTER TABLE public.rl_owned OWNER TO {}", "owner")
    t.run("CREATE ROLE {} LOGIN", "lead")
    t.run("CREATE ROLE {} LOGIN", "keeper")
    t.run("GRANT {} TO {} WITH ADMIN OPTION", "team", "lead")
    if t.version >= 160000:  # ADMIN alone (no membership to use): it can still grant the owner to itself
        t.run("GRANT {} TO {} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE", "owner", "keeper")
    else:
        t.run("GRANT {} TO {} WITH ADMIN OPTION", "owner", "keeper")
    found = t.audit()
    lead = found[("SEC057", f"{t.role('lead')}: ADMIN OPTION on {t.role('team')}")]
    check(lead, M, "4.3", "grants", t.role("team"))
    keeper = found[("SEC057", f"{t.role('keeper')}: ADMIN OPTION on {t.role('owner')}")]
    check(keeper, H, "4.3", "the owner of tables")
    t.apply(lead)
    t.apply(keeper)
    assert not [k for k in t.audit() if k[0] == "SEC057"]


def test_login_role_that_can_become_another_login_role(target: Planted) -> None:
    t = target
    t.run("CREATE ROLE {} LOGIN", "report")
    t.run("CREATE ROLE {} LOGIN", "writer")
    t.run("GRANT {} TO {}", "writer", "report")
    found = t.audit()
    report, writer = t.role("report"), t.role("writer")
    finding = found[("SEC058", f"{report} can become {writer}")]
    assert finding.severity is M and finding.cis == "" and finding.owasp == A01
    assert writer in finding.evidence and finding.fix_sql
    t.apply(finding)
    assert ("SEC058", f"{report} can become {writer}") not in t.audit()


def test_application_role_that_can_become_a_role_with_attributes(target: Planted) -> None:
    t = target
    t.run("CREATE TABLE public.rl_data (id int)")
    t.run("CREATE ROLE {} LOGIN", "app")
    t.run("GRANT SELECT ON public.rl_data TO {}", "app")
    t.run("CREATE ROLE {} NOLOGIN CREATEDB", "dbmakers")
    t.run("GRANT {} TO {}", "dbmakers", "app")
    found = t.audit()
    app, dbmakers = t.role("app"), t.role("dbmakers")
    finding = found[("SEC059", f"{app} can become {dbmakers}")]
    check(finding, H, "4.3", "CREATEDB", "application role")
    t.apply(finding)
    assert ("SEC059", f"{app} can become {dbmakers}") not in t.audit()


def test_weakened_cluster_reports_the_roles_flaws_and_nothing_else_of_them(weak_server: EmbeddedServer) -> None:
    report = audit_database(weak_server.url(REF_DB), MATRIX, check_backups=False)
    found = {(f.rule, f.subject): (f.severity, f.owasp) for f in report.findings
             if f.rule in ROLE_RULES or "rl_" in f.subject}
    assert found == area.EXPECTED, report.table_markdown(with_remediation=False)
    fixes = [f for f in report.findings if f.rule in ROLE_RULES]
    assert all(f.fix_sql and f.remediation and bool(f.cis) is (f.rule != "SEC058") for f in fixes), fixes
    print("\nROLES AREA ON THE WEAKENED CLUSTER\n" + "\n".join(
        f"{f.severity.value} {f.rule} {f.cis or '-'} {f.subject}: {f.evidence}" for f in sorted(
            fixes, key=lambda f: (f.severity.rank, f.rule, f.subject))))


def test_hardened_reference_has_no_roles_finding(plain_server: EmbeddedServer, tls_server: EmbeddedServer) -> None:
    for server in (plain_server, tls_server):
        report = audit_database(server.url(REF_DB), MATRIX, check_backups=False)
        assert not [f for f in report.findings if f.rule in ROLE_RULES], report.table_markdown()

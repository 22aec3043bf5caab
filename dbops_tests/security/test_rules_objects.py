"""The objects rules (SEC060-SEC073), each planted on a database of its own (the reference schema, or a team's
database without a matrix), found with its severity, categories and CIS number, and gone after its fix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import sql

from dbops.pg.connect import connection, database_name
from dbops.security import Severity, audit_database
from dbops.security.catalog import A01, A01_2021, A02, A05_2021
from dbops.security.findings import AuditReport, Finding
from dbops.security.grants import BaselineStore, baseline_path
from dbops_tests.conftest import PROJECT_DIR
from dbops_tests.foreign import ForeignSchema

MATRIX = PROJECT_DIR / "sql" / "access-control.yml"
C, H, M, L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW
CIS = {"SEC060": "4.6", "SEC061": "4.7", "SEC062": "4.7", "SEC063": "4.6", "SEC064": "4.6", "SEC065": "4.5",
       "SEC066": "4.5", "SEC067": "4.5", "SEC068": "4.3", "SEC069": "", "SEC070": "4.7", "SEC071": "",
       "SEC072": "", "SEC073": ""}


def audit(url: str, matrix: object = MATRIX) -> AuditReport:
    return audit_database(url, matrix, check_backups=False)  # type: ignore[arg-type]


def mine(report: AuditReport, rule: str) -> dict[str, Finding]:
    return {f.subject: f for f in report.findings if f.rule == rule}


def run(url: str, *statements: str) -> None:
    with connection(url) as conn:
        for statement in statements:
            conn.execute(statement)


def assert_finding(report: AuditReport, rule: str, subject: str, severity: Severity, *mentions: str,
                   owasp: str = A01, owasp_2021: str = A01_2021, fixable: bool = True) -> Finding:
    found = mine(report, rule)
    assert subject in found, (subject, report.table_markdown())
    f = found[subject]
    assert (f.severity, f.owasp, f.owasp_2021, f.cis) == (severity, owasp, owasp_2021, CIS[rule]), f
    for text in mentions:
        assert text in f.evidence, (text, f.evidence)
    assert f.remediation
    assert bool(f.fix_sql) is fixable, f
    return f


def apply_fix(url: str, finding: Finding) -> None:
    run(url, *finding.fix_sql)


@contextmanager
def temp_role(url: str, prefix: str, login: bool = False) -> Iterator[str]:
    """A role of the test's own (roles are cluster-wide): dropped, with what it owns and holds here, afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    run(url, sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(name),
                                                  sql.SQL("LOGIN" if login else "NOLOGIN")).as_string(None))
    try:
        yield name
    finally:
        with connection(url) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_public_privileges_on_tables_views_and_sequences(migrated_db: str) -> None:
    url = migrated_db
    run(url, "CREATE TABLE public.obj_open (id int, note text)", "GRANT ALL ON public.obj_open TO PUBLIC",
        "CREATE TABLE public.obj_cols (id int, note text)", "GRANT SELECT (id, note) ON public.obj_cols TO PUBLIC",
        "CREATE SEQUENCE public.obj_seq", "GRANT UPDATE ON SEQUENCE public.obj_seq TO PUBLIC",
        "CREATE VIEW public.obj_v AS SELECT 1 AS one", "GRANT SELECT ON public.obj_v TO PUBLIC",
        "GRANT SELECT ON app.products TO PUBLIC")  # a governed table: SEC012's, not reported twice
    report = audit(url)
    table = assert_finding(report, "SEC060", "PUBLIC on table public.obj_open", H, "INSERT", "TRUNCATE", "TRIGGER")
    assert table.fix_sql == ("REVOKE ALL ON TABLE public.obj_open FROM PUBLIC;",)
    assert_finding(report, "SEC060", "PUBLIC on table public.obj_cols", M, "SELECT (id, note)")
    assert_finding(report, "SEC060", "PUBLIC on sequence public.obj_seq", M, "setval")
    assert_finding(report, "SEC060", "PUBLIC on view public.obj_v", M)
    assert not any("app.products" in s for s in mine(report, "SEC060"))
    assert ("SEC012", "PUBLIC: SELECT on app.products") in {(f.rule, f.subject) for f in report.findings}
    for finding in mine(report, "SEC060").values():
        apply_fix(url, finding)
    assert mine(audit(url), "SEC060") == {}


def test_tenant_keyed_partitions_and_other_keys_without_row_level_security(migrated_db: str) -> None:
    url = migrated_db
    run(url,
        "CREATE TABLE public.obj_events (tenant_id bigint, at date) PARTITION BY RANGE (at)",
        "ALTER TABLE public.obj_events ENABLE ROW LEVEL SECURITY", "ALTER TABLE public.obj_events FORCE ROW LEVEL"
        " SECURITY", "CREATE POLICY obj_t ON public.obj_events USING (tenant_id = 1)",
        "CREATE TABLE public.obj_events_1 PARTITION OF public.obj_events FOR VALUES FROM ('2025-01-01') TO"
        " ('2026-01-01')",
        "CREATE TABLE public.obj_events_2 PARTITION OF public.obj_events FOR VALUES FROM ('2026-01-01') TO"
        " ('2027-01-01')",
        "GRANT SELECT ON public.obj_events_1 TO dbops_app_ro",  # _2 is granted to nobody: not reported
        "CREATE TABLE public.obj_org (id int, org_id bigint)", "GRANT SELECT ON public.obj_org TO PUBLIC",
        "INSERT INTO public.obj_events VALUES (1, '2025-02-01'), (2, '2025-03-01')")
    report = audit(url)
    part = assert_finding(report, "SEC061", "public.obj_events_1", H, "partition of public.obj_events",
                          "dbops_app_ro")
    org = assert_finding(report, "SEC061", "public.obj_org", H, "org_id", "PUBLIC")
    assert set(mine(report, "SEC061")) == {"public.obj_events_1", "public.obj_org"}  # audit_log's partitions: no
    # the flaw is real: through the partition the reporting role reads the other tenant's row
    with connection(url) as conn:
        conn.execute("SET ROLE dbops_app_ro")
        assert conn.execute("SELECT count(*) FROM public.obj_events_1").fetchone()[0] == 2
    apply_fix(url, part)
    apply_fix(url, org)
    assert mine(audit(url), "SEC061") == {}


def test_policy_that_ignores_the_tenant_key(migrated_db: str) -> None:
    url = migrated_db
    run(url, "CREATE TABLE public.obj_docs (id int, tenant_id bigint)",
        "ALTER TABLE public.obj_docs ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY obj_all ON public.obj_docs FOR SELECT USING (true)",
        "CREATE POLICY obj_mine ON public.obj_docs FOR INSERT WITH CHECK (tenant_id = 1)")
    report = audit(url)
    f = assert_finding(report, "SEC062", "public.obj_docs: policy obj_all", H, "USING (true)", "tenant_id")
    # the fix takes the tenant predicate the reference's own policies use (FOR SELECT: no WITH CHECK)
    assert f.fix_sql == ('ALTER POLICY "obj_all" ON public.obj_docs'
                         " USING (tenant_id = ( SELECT app.current_tenant_id() AS current_tenant_id));",)
    assert set(mine(report, "SEC062")) == {"public.obj_docs: policy obj_all"}  # obj_mine checks the key
    # a restrictive policy on the key ANDs with the permissive ones: fixed as well
    run(url, "CREATE POLICY obj_key ON public.obj_docs AS RESTRICTIVE USING (tenant_id = 1)")
    assert mine(audit(url), "SEC062") == {}
    run(url, "DROP POLICY obj_key ON public.obj_docs")
    apply_fix(url, f)
    assert mine(audit(url), "SEC062") == {}
    # with no tenant predicate to copy (a team database), the policy is the operator's to write
    run(url, "CREATE TABLE public.obj_org_notes (id int, org_id bigint)",
        "ALTER TABLE public.obj_org_notes ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY obj_any ON public.obj_org_notes USING (id > 0)")
    manual = assert_finding(audit(url), "SEC062", "public.obj_org_notes: policy obj_any", H, "org_id",
                            fixable=False)
    assert "ALTER POLICY" in manual.remediation


def test_default_privileges_to_public_and_to_undeclared_roles(migrated_db: str) -> None:
    url = migrated_db
    with temp_role(url, "obj_stranger") as stranger:
        run(url, "CREATE SCHEMA obj_s",
            "ALTER DEFAULT PRIVILEGES FOR ROLE dbops_owner IN SCHEMA obj_s GRANT SELECT, UPDATE ON TABLES TO PUBLIC",
            "ALTER DEFAULT PRIVILEGES FOR ROLE dbops_owner GRANT SELECT ON SEQUENCES TO PUBLIC",
            "ALTER DEFAULT PRIVILEGES FOR ROLE dbops_owner IN SCHEMA obj_s GRANT EXECUTE ON FUNCTIONS TO PUBLIC",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE dbops_owner IN SCHEMA obj_s GRANT SELECT ON TABLES TO {stranger}",
            # a declared role: fine
            "ALTER DEFAULT PRIVILEGES FOR ROLE dbops_owner IN SCHEMA obj_s GRANT SELECT ON TABLES TO dbops_app_ro")
        report = audit(url)
        tables = assert_finding(report, "SEC063", "default privileges of dbops_owner in schema obj_s on tables to"
                                " PUBLIC", H, "SELECT, UPDATE")
        assert tables.fix_sql == ('ALTER DEFAULT PRIVILEGES FOR ROLE "dbops_owner" IN SCHEMA "obj_s" REVOKE ALL ON'
                                  " TABLES FROM PUBLIC;",)
        assert_finding(report, "SEC063", "default privileges of dbops_owner on sequences to PUBLIC", L, "anywhere")
        assert_finding(report, "SEC063", "default privileges of dbops_owner in schema obj_s on functions to PUBLIC",
                       L, "EXECUTE")
        # the reference's own entry (EXECUTE revoked from PUBLIC) is no finding
        assert len(mine(report, "SEC063")) == 3
        undeclared = assert_finding(report, "SEC064", f"default privileges of dbops_owner in schema obj_s on tables"
                                    f" to {stranger}", M, "not in the access-control matrix", stranger)
        assert set(mine(report, "SEC064")) == {undeclared.subject}
        # without a matrix the grants baseline judges who gets default privileges; PUBLIC is still reported
        without = audit_database(url, None, check_backups=False)
        assert mine(without, "SEC064") == {} and len(mine(without, "SEC063")) == 3
        for finding in [*mine(report, "SEC063").values(), undeclared]:
            apply_fix(url, finding)
        after = audit(url)
        assert mine(after, "SEC063") == {} and mine(after, "SEC064") == {}


def test_definer_search_path_through_a_schema_others_can_create_in(migrated_db: str) -> None:
    url = migrated_db
    with temp_role(url, "obj_planter") as planter:
        run(url, "CREATE SCHEMA obj_lib", f"GRANT CREATE ON SCHEMA obj_lib TO {planter}",
            "GRANT CREATE ON SCHEMA public TO PUBLIC",
            "SET ROLE dbops_owner; CREATE FUNCTION app.obj_def() RETURNS int LANGUAGE sql SECURITY DEFINER"
            " SET search_path = obj_lib, public, pg_temp AS 'SELECT 1'",
            # its owner alone can create in the schema it resolves through: fine
            "SET ROLE dbops_owner; CREATE FUNCTION app.obj_safe() RETURNS int LANGUAGE sql SECURITY DEFINER"
            " SET search_path = app, pg_temp AS 'SELECT 1'")
        report = audit(url)
        f = assert_finding(report, "SEC065", "app.obj_def()", H, f"obj_lib: {planter} can CREATE",
                           "public: PUBLIC can CREATE", "dbops_owner")
        assert set(f.fix_sql) == {f'REVOKE CREATE ON SCHEMA "obj_lib" FROM "{planter}";',
                                  'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC;'}
        assert set(mine(report, "SEC065")) == {"app.obj_def()"}
        assert "SEC016" not in {x.rule for x in report.findings if x.subject == "app.obj_def()"}  # pg_temp is last
        apply_fix(url, f)
        assert mine(audit(url), "SEC065") == {}
        # a schema owned by another role: that owner can plant, no REVOKE fixes it
        run(url, f"ALTER SCHEMA obj_lib OWNER TO {planter}")
        owned = assert_finding(audit(url), "SEC065", "app.obj_def()", H, f"obj_lib: {planter} can CREATE",
                               fixable=False)
        assert f"{planter} owns obj_lib" in owned.remediation


def test_definer_owned_by_a_superuser_and_executable_by_public(migrated_db: str) -> None:
    url = migrated_db
    with temp_role(url, "obj_plain") as plain:
        run(url, "CREATE FUNCTION public.obj_su() RETURNS int LANGUAGE sql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS 'SELECT 1'",
            "CREATE FUNCTION public.obj_plain(p_id bigint) RETURNS int LANGUAGE sql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS 'SELECT 1'",
            f"ALTER FUNCTION public.obj_plain(bigint) OWNER TO {plain}",
            "GRANT EXECUTE ON FUNCTION public.obj_plain(bigint) TO dbops_app_rw",
            "CREATE FUNCTION public.obj_trg() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
            " SET search_path = pg_catalog, pg_temp AS 'BEGIN RETURN NEW; END'",
            f"ALTER FUNCTION public.obj_trg() OWNER TO {plain}")
        report = audit(url)
        su = assert_finding(report, "SEC066", "public.obj_su()", H, "owned by superuser")
        assert su.fix_sql == ('ALTER FUNCTION public.obj_su() OWNER TO "dbops_owner";',)  # the matrix's owner role
        assert set(mine(report, "SEC066")) == {"public.obj_su()"}
        assert_finding(report, "SEC067", "public.obj_su()", H, "a superuser's")
        plain_f = assert_finding(report, "SEC067", "public.obj_plain(p_id bigint)", M, plain,
                                 "EXECUTE of their own: dbops_app_rw")
        assert plain_f.fix_sql == ("REVOKE EXECUTE ON FUNCTION public.obj_plain(p_id bigint) FROM PUBLIC;",)
        assert set(mine(report, "SEC067")) == {"public.obj_su()", "public.obj_plain(p_id bigint)"}  # no trigger fn
        # without a matrix there is no owner role to give it to: the fix is the operator's
        assert_finding(audit_database(url, None, check_backups=False), "SEC066", "public.obj_su()", H,
                       fixable=False)
        for finding in [su, *mine(report, "SEC067").values()]:
            apply_fix(url, finding)
        after = audit(url)
        assert mine(after, "SEC066") == {} and mine(after, "SEC067") == {}
        with connection(url) as conn:  # the declared caller still may call it
            conn.execute("SET ROLE dbops_app_rw")
            assert conn.execute("SELECT public.obj_plain(1)").fetchone()[0] == 1


def test_dangerous_functions_granted_beyond_superusers(migrated_db: str) -> None:
    url = migrated_db
    before = audit(url)
    assert mine(before, "SEC068") == {}  # pg_terminate_backend & co. are PUBLIC's by initdb: not findings
    run(url, "GRANT EXECUTE ON FUNCTION pg_catalog.lo_export(oid, text) TO dbops_app_rw",
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_file(text) TO PUBLIC",
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text) TO dbops_auditor",
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_terminate_backend(integer, bigint) TO dbops_app_ro")
    report = audit(url)
    found = mine(report, "SEC068")
    export = next(f for s, f in found.items() if s.startswith("dbops_app_rw: EXECUTE on pg_catalog.lo_export("))
    assert (export.severity, export.cis) == (C, "4.3") and "writes any file" in export.evidence
    assert_finding(report, "SEC068", "PUBLIC: EXECUTE on pg_catalog.pg_read_file(text)", H, "every role")
    assert {(s.split(":")[0], f.severity) for s, f in found.items()} == {
        ("dbops_app_rw", C), ("PUBLIC", H), ("dbops_auditor", H), ("dbops_app_ro", M)}
    for finding in found.values():
        apply_fix(url, finding)
    assert mine(audit(url), "SEC068") == {}


def test_database_privileges_to_public(fresh_db: str) -> None:
    url = fresh_db
    database = database_name(url)
    with temp_role(url, "obj_team", login=True) as team:
        run(url, "CREATE SCHEMA obj_team", f"GRANT USAGE ON SCHEMA obj_team TO {team}")
        report = audit_database(url, None, check_backups=False)
        f = assert_finding(report, "SEC069", "PUBLIC on the database", M, "CONNECT, TEMPORARY",
                           "PostgreSQL's default", team, fixable=False)
        # a role uses the database through PUBLIC's CONNECT: a bare REVOKE would lock it out, so no SQL to run
        # blindly; the remediation grants it CONNECT first
        grant = f'GRANT CONNECT ON DATABASE "{database}" TO "{team}";'
        revoke = f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC;'
        assert f.remediation.startswith(f"{grant} {revoke}")
        run(url, sql.SQL("GRANT CREATE ON DATABASE {} TO PUBLIC").format(sql.Identifier(database)).as_string(None))
        assert_finding(audit_database(url, None, check_backups=False), "SEC069", "PUBLIC on the database", H,
                       "create schemas", fixable=False)
        run(url, grant)
        high = assert_finding(audit_database(url, None, check_backups=False), "SEC069", "PUBLIC on the database", H)
        assert high.fix_sql == (revoke,)  # every role that uses it has CONNECT of its own now
        apply_fix(url, high)
        assert mine(audit_database(url, None, check_backups=False), "SEC069") == {}
        with connection(url) as conn:
            assert conn.execute("SELECT has_database_privilege(%s, current_database(), 'CONNECT'),"
                                " has_database_privilege('public', current_database(), 'CONNECT')",
                                (team,)).fetchone() == (True, False)


def test_view_over_row_level_secured_tables_running_as_its_owner(migrated_db: str) -> None:
    url = migrated_db
    run(url, "INSERT INTO app.tenants (slug, name) VALUES ('t-one', 'One'), ('t-two', 'Two')",
        "INSERT INTO app.users (tenant_id, email, full_name, password_hash)"
        " SELECT id, slug || '@example.com', name, repeat('x', 40) FROM app.tenants",
        "CREATE VIEW public.obj_users_v AS SELECT id, tenant_id FROM app.users",
        "ALTER VIEW public.obj_users_v OWNER TO dbops_owner",
        "GRANT SELECT ON public.obj_users_v TO dbops_app_ro",
        "CREATE VIEW public.obj_unread_v AS SELECT id FROM app.users",  # readable by its owner only: no finding
        "ALTER VIEW public.obj_unread_v OWNER TO dbops_owner")

    with connection(url) as conn:
        first = conn.execute("SELECT min(id)::text FROM app.tenants").fetchone()[0]
    with connection(url) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (first,))
        conn.execute("SET ROLE dbops_app_ro")
        assert conn.execute("SELECT count(DISTINCT tenant_id) FROM public.obj_users_v").fetchone()[0] == 2  # leak
    report = audit(url)
    f = assert_finding(report, "SEC070", "public.obj_users_v", H, "app.users", "dbops_owner", "has BYPASSRLS",
                       "dbops_app_ro")
    assert set(mine(report, "SEC070")) == {"public.obj_users_v"}
    assert f.fix_sql == ("ALTER VIEW public.obj_users_v SET (security_invoker = true);",)
    apply_fix(url, f)
    assert mine(audit(url), "SEC070") == {}
    with connection(url) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (first,))
        conn.execute("SET ROLE dbops_app_ro")
        assert conn.execute("SELECT count(DISTINCT tenant_id) FROM public.obj_users_v").fetchone()[0] == 1


def test_foreign_server_for_everyone_and_a_password_mapped_for_public(fresh_db: str) -> None:
    url = fresh_db
    password = "Obj-fdw-Pw-8841"
    run(url, "CREATE EXTENSION postgres_fdw",
        "CREATE SERVER obj_far FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname 'postgres')",
        "GRANT USAGE ON FOREIGN SERVER obj_far TO PUBLIC",
        f"CREATE USER MAPPING FOR PUBLIC SERVER obj_far OPTIONS (user 'obj_far_user', password '{password}')",
        "CREATE SERVER obj_near FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname 'postgres')",
        "CREATE USER MAPPING FOR PUBLIC SERVER obj_near OPTIONS (user 'obj_near_user')")  # no password: fine
    report = audit_database(url, None, check_backups=False)
    usage = assert_finding(report, "SEC071", "foreign server obj_far", M, "postgres_fdw", owasp=A02,
                           owasp_2021=A05_2021)
    mapping = assert_finding(report, "SEC071", "user mapping for PUBLIC on server obj_far", H, "every role",
                             "password", owasp=A02, owasp_2021=A05_2021)
    assert set(mine(report, "SEC071")) == {usage.subject, mapping.subject}
    assert password not in report.table_markdown() + repr(report.findings)
    apply_fix(url, usage)
    apply_fix(url, mapping)
    assert mine(audit_database(url, None, check_backups=False), "SEC071") == {}


def test_large_objects_for_everyone(fresh_db: str) -> None:
    url = fresh_db
    database = database_name(url)
    run(url, "SELECT lo_create(4242101)", "SELECT lo_create(4242102)",
        "GRANT SELECT ON LARGE OBJECT 4242101 TO PUBLIC", "GRANT SELECT, UPDATE ON LARGE OBJECT 4242102 TO PUBLIC",
        sql.SQL("ALTER DATABASE {} SET lo_compat_privileges = on").format(sql.Identifier(database)).as_string(None))
    report = audit_database(url, None, check_backups=False)
    assert_finding(report, "SEC072", "large object 4242101", M, "SELECT")
    assert_finding(report, "SEC072", "large object 4242102", H, "SELECT, UPDATE")
    compat = assert_finding(report, "SEC072", "lo_compat_privileges", H, "set in database")
    assert compat.fix_sql == (f'ALTER DATABASE "{database}" RESET lo_compat_privileges;',)
    for finding in mine(report, "SEC072").values():
        apply_fix(url, finding)
    assert mine(audit_database(url, None, check_backups=False), "SEC072") == {}


def test_schema_usage_for_public(migrated_db: str) -> None:
    url = migrated_db
    run(url, "CREATE SCHEMA obj_pub", "GRANT USAGE ON SCHEMA obj_pub TO PUBLIC")
    report = audit(url)
    f = assert_finding(report, "SEC073", "schema obj_pub", L, "obj_pub")
    assert set(mine(report, "SEC073")) == {"schema obj_pub"}  # not public, not app (revoked by the reference)
    apply_fix(url, f)
    assert mine(audit(url), "SEC073") == {}


OBJECT_RULES = {f"SEC0{n}" for n in range(60, 80)}


def test_hardened_reference_has_no_object_finding(migrated_db: str) -> None:
    report = audit(migrated_db)
    assert not [f for f in report.findings if f.rule in OBJECT_RULES], report.table_markdown()


def test_team_database_definers_and_database_are_reported_nothing_else(foreign_db: tuple[ForeignSchema, str],
                                                                       tmp_path: object) -> None:
    schema, url = foreign_db
    store = BaselineStore(baseline_path(tmp_path, schema.name), schema.name)  # type: ignore[arg-type]
    report = audit_database(url, None, schemas=schema.schemas, baseline=store, check_backups=False)
    found = {(f.rule, f.subject): f.severity for f in report.findings if f.rule in OBJECT_RULES}
    definer = {"library": "lending.member_summary(p_member bigint)",
               "telemetry": "iot.record_reading(p_device integer, p_value double precision, p_humidity numeric)"}
    assert found == {("SEC066", definer[schema.name]): H, ("SEC067", definer[schema.name]): H,
                     ("SEC069", "PUBLIC on the database"): M}, report.table_markdown()
    # the team's own login role connects through PUBLIC: the remediation grants it CONNECT before the revoke
    (db,) = [f for f in report.findings if f.rule == "SEC069"]
    own = "library_app" if schema.name == "library" else "telemetry_ingest"
    assert not db.fix_sql and db.remediation.startswith("GRANT CONNECT") and f'"{own}"' in db.remediation

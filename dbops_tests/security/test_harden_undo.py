"""`harden --plan` is verified step by step on a scratch copy and can be undone: each step's undo is computed from the
copy's catalog before it and checked there; applied for real, the plan fixes what it offers and its undo migration
brings the weakened cluster back, audit and catalog alike."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg import sql

from dbops.migrate import Migrator
from dbops.migrate.files import split_statements
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops.security import audit_database
from dbops.security.findings import A01_ACCESS, AuditReport, Finding, Severity
from dbops.security.grants import take_snapshot
from dbops.security.harden import UNDO_CHECKED, UNDO_COMPUTED, UNDO_MISSING, HardeningPlan, PlanStep, plan, write_plan
from dbops.security.rules import USER_SCHEMAS
from dbops.security.verify import ALTER_SYSTEM, fingerprint, verify_plan
from dbops_tests.conftest import MIGRATIONS_DIR, PROJECT_DIR
from dbops_tests.security.conftest import REF_DB

MATRIX = PROJECT_DIR / "sql" / "access-control.yml"
AUTO_CONF = ("SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%%postgresql.auto.conf'"
             " ORDER BY seqno")


def catalog(url: str, settings: list[str]) -> dict[str, Any]:
    """What the undo must restore: every catalog digest, the grants and role attributes, postgresql.auto.conf and
    the live values of ``settings``, function configs and row-level security flags."""
    with connection(url) as conn:
        schemas = [name for (name,) in conn.execute(USER_SCHEMAS).fetchall()]
        snap = take_snapshot(conn, schemas)
        return {
            "digests": fingerprint(conn), "grants": sorted(snap.grants), "roles": snap.roles,
            "auto.conf": dict(conn.execute(AUTO_CONF).fetchall()),  # the last entry of a name counts, not the order
            "settings": conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s) ORDER BY 1",
                                     (settings,)).fetchall(),
            "function configs": conn.execute(
                "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p JOIN pg_namespace n"
                " ON n.oid = p.pronamespace WHERE n.nspname = ANY(%s) ORDER BY 1", (schemas,)).fetchall(),
            "row-level security": conn.execute(
                "SELECT c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p')"
                " ORDER BY 1", (schemas,)).fetchall(),
        }


def until(check: Callable[[], bool], timeout: float = 15) -> bool:
    """Poll ``check`` (a reload is asynchronous) until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def run_file(url: str, path: Path) -> None:
    """Run an undo file as Flyway would: in one transaction, or statement by statement when it says so."""
    text = path.read_text()
    statements = [s.text for s in split_statements(text)]
    with connection(url) as conn:
        if text.startswith("-- dbops:no-transaction"):
            for statement in statements:
                conn.execute(statement)
        else:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)


def subjects(report: AuditReport) -> set[tuple[str, str]]:
    return {(f.rule, f.subject) for f in report.findings}


def test_weakened_cluster_plan_verified_applied_and_undone(weak_server_to_harden: EmbeddedServer,
                                                          tmp_path: Path) -> None:
    url = weak_server_to_harden.url(REF_DB)
    before = audit_database(url, MATRIX, check_backups=False)
    hardening = plan(before)
    verification = verify_plan(url, hardening, before, MATRIX)
    print("\n" + hardening.render(before.target))
    runs = [s for s in hardening.steps if s.statements]
    # every step that runs was tried on the copy and its finding went; only settings a session cannot take (reload
    # or restart) are not tried, and only drops for review are left as comments
    for step in hardening.steps:
        assert step.check is not None, step.header
        if not step.statements:
            assert step.check.status == "not tried" and step.review_first, step.header
        elif step.outside_transaction and step.check.status == "not tried":
            assert "a session cannot take it" in step.check.detail, (step.header, step.check)
        else:
            assert step.check.status == "verified", (step.header, step.check)
        if step.statements:  # an undo for each, or the reason there is none (an extension update has no way back)
            assert step.undo is not None, step.header
            assert step.undo.status == (UNDO_COMPUTED if step.outside_transaction else UNDO_CHECKED) or (
                step.undo.status == UNDO_MISSING and step.undo.detail), (step.header, step.undo)
    assert {s.finding.rule for s in runs if not s.outside_transaction} >= {"SEC001", "SEC009", "SEC016", "SEC019"}
    missing = hardening.undo_missing()
    assert all(s.undo.status == UNDO_MISSING for s in missing)  # type: ignore[union-attr]
    assert bool(verification.undo_differs) == bool(missing), (verification.undo_differs, missing)
    # what is taken back is what can be: the steps without an undo are not applied here
    hardening.steps = [s for s in hardening.steps if s not in missing]
    runs = [s for s in hardening.steps if s.statements]
    settings = sorted({m["set"] for s in runs for x in s.statements if (m := ALTER_SYSTEM.match(x)) and m["set"]})
    assert "log_connections" in settings
    weakened = catalog(url, settings)

    # the plan applied as the reviewed migrations: every finding it offers a fix for is gone
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    written = write_plan(hardening, migrations, before.target)
    undo_files = [p for p in written if p.name.startswith("U")]
    assert [p.name.split("__")[1] for p in undo_files] == ["security_hardening.sql", "security_settings.sql"]
    Migrator(url, migrations).apply()
    with connection(url) as conn:  # a setting that needs a restart stays reported until one
        restart = {n for (n,) in conn.execute("SELECT name FROM pg_settings WHERE context = 'postmaster'")}
    fixed = {(s.finding.rule, s.finding.subject) for s in runs
             if not any((m := ALTER_SYSTEM.match(x)) and m["set"] in restart for x in s.statements)}
    assert until(lambda: not fixed & subjects(audit_database(url, MATRIX, check_backups=False))), \
        fixed & subjects(audit_database(url, MATRIX, check_backups=False))
    assert catalog(url, settings) != weakened

    # the undo migrations, last file first: the audit is back to the weakened findings, the catalog as it was
    for path in reversed(undo_files):
        run_file(url, path)
    until(lambda: catalog(url, settings) == weakened)
    restored = catalog(url, settings)
    assert restored == weakened, {k: sorted(set(weakened[k].items()) ^ set(restored[k].items())) if isinstance(
        weakened[k], dict) else k for k in weakened if restored[k] != weakened[k]}
    assert subjects(audit_database(url, MATRIX, check_backups=False)) == subjects(before)


def _finding(subject: str) -> Finding:
    return Finding("SEC012", "planted for the undo test", Severity.HIGH, A01_ACCESS, subject, "planted",
                   "see the fix")


def test_each_kind_of_step_has_its_undo_computed_and_checked(fresh_db: str) -> None:
    """Role attributes, memberships with their admin option, grant options, a function's old search_path, RLS,
    ownership, default privileges, role settings and ALTER SYSTEM each get the statement that restores them; a
    revoke a definer needs is left out with the failing call; a rename is marked as not undoable."""
    t = uuid.uuid4().hex[:8]
    owner, app, group = "undo_owner_" + t, "undo_app_" + t, "undo_group_" + t
    names = {"owner": sql.Identifier(owner), "app": sql.Identifier(app), "group": sql.Identifier(group)}

    def n(text: str) -> str:  # the planted roles' names, quoted
        return sql.SQL(text).format(**names).as_string(None)

    setup = [n("CREATE ROLE {owner} NOLOGIN"), n("CREATE ROLE {app} NOLOGIN CREATEDB"),
             n("CREATE ROLE {group} NOLOGIN"), n("GRANT {group} TO {app} WITH ADMIN OPTION"),
             n("CREATE SCHEMA undo AUTHORIZATION {owner}"), "CREATE TABLE undo.t (id int, tenant_id int)",
             "CREATE TABLE undo.other (id int)", n("ALTER TABLE undo.t OWNER TO {app}"),
             n("GRANT SELECT ON undo.t TO {group} WITH GRANT OPTION"), n("GRANT SELECT ON undo.t TO {owner}"),
             "CREATE FUNCTION undo.f() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = undo, public"
             " AS 'SELECT count(*)::int FROM t'", n("ALTER FUNCTION undo.f() OWNER TO {owner}"),
             n("ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA undo GRANT SELECT ON TABLES TO PUBLIC"),
             n("ALTER ROLE {app} SET work_mem = '8MB'")]
    steps = {  # subject -> (statements, the undo expected)
        "definer needs": ([n("REVOKE SELECT ON undo.t FROM {owner};")], None),
        "attribute": ([n("ALTER ROLE {app} NOCREATEDB;")], [n("ALTER ROLE {app} CREATEDB;")]),
        "membership": ([n("REVOKE {group} FROM {app};")], [n("GRANT {group} TO {app} WITH ADMIN OPTION;")]),
        "grant option": ([n("REVOKE GRANT OPTION FOR SELECT ON undo.t FROM {group};")],
                         [n("GRANT SELECT ON TABLE undo.t TO {group} WITH GRANT OPTION;")]),
        "search_path": (["ALTER FUNCTION undo.f() SET search_path = pg_catalog, undo, pg_temp;"],
                        ['ALTER FUNCTION undo.f() SET "search_path" = "undo", "public";']),
        "rls": (["ALTER TABLE undo.t ENABLE ROW LEVEL SECURITY;", "ALTER TABLE undo.t FORCE ROW LEVEL SECURITY;"],
                ["ALTER TABLE undo.t DISABLE ROW LEVEL SECURITY;", "ALTER TABLE undo.t NO FORCE ROW LEVEL SECURITY;"]),
        "owner": ([n("ALTER TABLE undo.t OWNER TO {owner};")], [n("ALTER TABLE undo.t OWNER TO {app};"),
                   # the old owner's grant went with the ownership: given back
                   n("GRANT SELECT ON TABLE undo.t TO {owner};")]),
        "default privileges": (
            [n("ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA undo REVOKE SELECT ON TABLES FROM PUBLIC;")],
            [n("ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA undo GRANT SELECT ON TABLES TO PUBLIC;")]),
        "role setting": ([n("ALTER ROLE {app} RESET work_mem;")], [n("ALTER ROLE {app} SET \"work_mem\" = '8MB';")]),
        "rename": (["ALTER TABLE undo.other RENAME TO other_renamed;"], None),
    }
    try:
        with connection(fresh_db) as conn:
            for statement in setup:
                conn.execute(statement)
            old = dict(conn.execute(AUTO_CONF).fetchall()).get("log_lock_waits")
        hardening = HardeningPlan([PlanStep(_finding(s), list(x), [], False) for s, (x, _) in steps.items()]
                                  + [PlanStep(_finding("setting"), ["ALTER SYSTEM SET log_lock_waits = 'on';"], [],
                                              True)], [])
        before = catalog(fresh_db, ["log_lock_waits"])
        verification = verify_plan(fresh_db, hardening, AuditReport("fresh"), None)
        by = {s.finding.subject: s for s in hardening.steps}
        print("\n" + hardening.render("fresh"))
        # the revoke the definer needs: left out, naming the call that stopped working
        broken = by["definer needs"]
        assert broken.check is not None and broken.check.status == "broken", broken.check
        assert "`SELECT undo.f()` worked before the plan and fails after it: permission denied" in broken.check.detail
        assert broken.undo is None and broken.undo_lines()[-1] == "-- nothing to undo: the step is left out of the plan"
        for subject, (_, expected) in steps.items():
            step = by[subject]
            if expected is None:
                continue
            assert step.check is not None and step.check.status == "verified", (subject, step.check)
            assert step.undo is not None and step.undo.status == UNDO_CHECKED, (subject, step.undo)
            assert list(step.undo.statements) == expected, (subject, step.undo.statements)
        # the functions the steps touch were called around them: the altered definer, and the definers of the roles
        # whose grants or attributes changed
        assert "`SELECT undo.f()` works before and after" in by["search_path"].check.detail  # type: ignore[union-attr]
        assert "`SELECT undo.f()` works before and after" in by["owner"].check.detail  # type: ignore[union-attr]
        # a rename: the undo cannot say how to bring the table back, and says so in the plan and the undo file
        renamed = by["rename"]
        assert renamed.undo is not None and renamed.undo.status == UNDO_MISSING
        assert "table undo.other was dropped" in renamed.undo.detail, renamed.undo
        assert hardening.undo_missing() == [renamed]
        assert "-- undo: NOT COMPUTED: table undo.other was dropped" in hardening.render("fresh")
        assert "-- NOT UNDONE: table undo.other was dropped" in hardening.undo_text("fresh")
        assert verification.undo_differs == ["relations", "types"]  # the whole undo on the copy: the rename stays
        # ALTER SYSTEM: SET LOCAL on the copy (a superuser setting), the undo from postgresql.auto.conf
        setting = by["setting"]
        assert setting.check is not None and setting.check.status == "verified", setting.check
        assert setting.undo is not None and setting.undo.status == UNDO_COMPUTED
        assert setting.undo.statements == ((f"ALTER SYSTEM SET \"log_lock_waits\" = '{old}';",) if old is not None
                                           else ('ALTER SYSTEM RESET "log_lock_waits";',))
        # the target untouched by all of it
        assert catalog(fresh_db, ["log_lock_waits"]) == before

        # for real, on the database: the steps that run, then their undo, last step first: the catalog as before
        real = [s for s in hardening.steps if not s.left_out and not s.outside_transaction and s is not renamed]
        with connection(fresh_db) as conn, conn.transaction():
            for step in real:
                for statement in step.statements:
                    conn.execute(statement)
        assert catalog(fresh_db, ["log_lock_waits"]) != before
        with connection(fresh_db) as conn, conn.transaction():
            for step in reversed(real):
                for statement in step.undo.statements:  # type: ignore[union-attr]
                    conn.execute(statement)
        assert catalog(fresh_db, ["log_lock_waits"]) == before
    finally:
        with connection(fresh_db) as conn:  # roles are the server's: none may outlive the test
            conn.execute("DROP SCHEMA IF EXISTS undo CASCADE")
            for (role,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                        ([owner, app, group],)).fetchall():
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

"""`dbops security harden --plan` fixes what SQL can fix once applied as a migration; the CLI exits by severity and
never prints a password."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dbops.migrate import Migrator
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops.security import audit_database
from dbops.security.harden import plan, write_plan
from dbops.security.verify import ALTER_SYSTEM
from dbops_tests.conftest import MIGRATIONS_DIR, PROJECT_DIR
from dbops_tests.security.conftest import REF_DB

MATRIX = PROJECT_DIR / "sql" / "access-control.yml"


def run_security(args: list[str], url: str, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPS_")}
    env.update(DBOPS_DATABASE_URL=url, DBOPS_HOME=str(tmp_path / "home"), **extra)
    return subprocess.run([sys.executable, "-m", "dbops.security.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=PROJECT_DIR, check=False)


def test_harden_plan_applied_as_migration_leaves_only_manual_findings(weak_server_to_harden: EmbeddedServer,
                                                                       tmp_path: Path) -> None:
    url = weak_server_to_harden.url(REF_DB)
    before = audit_database(url, MATRIX, check_backups=False)
    hardening = plan(before)
    assert any(s.startswith("-- review first: DROP LANGUAGE") for s in hardening.transactional)
    assert any("hostssl" in m for m in hardening.manual)
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    written = write_plan(hardening, migrations, before.target)
    n = max(int(p.name[1:].split("__")[0]) for p in MIGRATIONS_DIR.glob("V*.sql"))
    # each migration with its Flyway undo file beside it (recognised, never run by dbops)
    assert [p.name for p in written] == [f"V{n + 1}__security_hardening.sql", f"U{n + 1}__security_hardening.sql",
                                         f"V{n + 2}__security_settings.sql", f"U{n + 2}__security_settings.sql"]
    assert f"-- undo: in U{n + 1}__security_hardening.sql, in reverse step order" in written[0].read_text()
    # numbered after the target's history too (applied or baselined), in its style
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert [p.name for p in write_plan(hardening, elsewhere, before.target, ["019", "020"])] == [
        "V021__security_hardening.sql", "U021__security_hardening.sql", "V022__security_settings.sql",
        "U022__security_settings.sql"]
    assert written[2].read_text().startswith("-- dbops:no-transaction")
    assert written[3].read_text().startswith("-- dbops:no-transaction")
    Migrator(url, migrations).apply()
    after = audit_database(url, MATRIX, check_backups=False)
    remaining = {(f.rule, f.subject) for f in after.findings}
    # what remains is what only an operator fixes (or a drop written for review): every step that ran took its
    # finding away (the other areas' flaws add their own manual findings to these)
    assert remaining >= {
        ("SEC002", "nopass"), ("SEC003", "legacy_md5"),
        ("SEC005", "pg_hba line 2"), ("SEC005", "pg_hba line 3"), ("SEC005", "pg_hba line 4"),
        ("SEC006", "pg_hba line 2"), ("SEC006", "pg_hba line 3"), ("SEC006", "pg_hba line 4"),
        ("SEC017", "language plevil"), ("SEC018", "extension dblink"),
    }, after.table_markdown()
    with connection(url) as conn:  # a setting that needs a restart stays reported until one
        restart = {n for (n,) in conn.execute("SELECT name FROM pg_settings WHERE context = 'postmaster'")}
    ran = {(s.finding.rule, s.finding.subject) for s in hardening.steps if s.statements
           and not any((m := ALTER_SYSTEM.match(x)) and m["set"] in restart for x in s.statements)}
    assert not remaining & ran, (sorted(remaining & ran), after.table_markdown())


def test_cli_audit_exit_codes_and_no_password_anywhere(weak_server: EmbeddedServer, tls_server: EmbeddedServer,
                                                       tmp_path: Path) -> None:
    weak_url, password = weak_server.url(REF_DB), weak_server.password
    weak = run_security(["audit"], weak_url, tmp_path)
    assert weak.returncode == 1, weak.stderr
    assert "| critical | SEC001 | A01:2025" in weak.stdout and "| critical | SEC005 | A07:2025" in weak.stdout
    assert run_security(["audit", "--fail-on", "critical"], tls_server.url(REF_DB), tmp_path).returncode == 0
    high = run_security(["audit", "--fail-on", "low", "--format", "json"], tls_server.url(REF_DB), tmp_path)
    assert high.returncode == 1 and '"critical": 0' in high.stdout and '"high": 0' in high.stdout
    plan_run = run_security(["harden", "--plan"], weak_url, tmp_path)
    assert plan_run.returncode == 0 and 'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC;' in plan_run.stdout
    assert '-- review first: DROP LANGUAGE "plevil";' in plan_run.stdout
    refused = run_security(["harden"], weak_url, tmp_path)
    assert refused.returncode == 1 and "reviewed migration" in refused.stderr
    # a wrong, known password in the URL: one redacted line
    known = "Known-S3cret-pw-4711"
    bad_url = weak_url.replace(password, known).replace("@127.0.0.1:", "@localhost:")
    failed = run_security(["audit"], bad_url.replace(f":{weak_server.port}/", f":{weak_server.port + 1}/"), tmp_path)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    for run in (weak, high, plan_run, refused, failed):
        assert password not in run.stdout + run.stderr
        assert known not in run.stdout + run.stderr


def test_harden_plan_on_the_weakened_reference_is_tried_on_a_scratch_copy(weak_server: EmbeddedServer,
                                                                          tmp_path: Path) -> None:
    """Each step says what the copy showed: fixes verified (the definer called before and after), server-wide ones
    too (roles, memberships: inside the copy's rolled-back transaction; a session setting as SET LOCAL), a reload
    setting not tried, drops left for review; each step's undo named; the target is untouched."""
    url = weak_server.url(REF_DB)
    with connection(url) as conn:
        databases = {n for (n,) in conn.execute("SELECT datname FROM pg_database")}
    run = run_security(["harden", "--plan"], url, tmp_path)
    assert run.returncode == 0, run.stderr
    blocks = {}
    for block in run.stdout.split("\n-- SEC")[1:]:
        header, status = block.splitlines()[:2]
        number, severity, subject = re.match(r"(\d+) (\w+): [^(]*\((.*)\)$", header).groups()  # type: ignore[union-attr]
        blocks[f"{number} {severity} {subject}"] = status
    assert blocks["016 high app.unsafe_definer()"].startswith("-- verified on a scratch copy: finding gone")
    assert "`SELECT app.unsafe_definer()` works before and after" in blocks["016 high app.unsafe_definer()"]
    for local in ("009 high schema public", "012 high dbops_app_rw: DELETE on app.payments", "014 high app.products",
                  "022 high app.payments", "013 low dbops_app_ro: SELECT on app.tenants"):
        assert blocks[local].startswith("-- verified on a scratch copy"), (local, blocks[local])
    for server_wide in ("001 critical evil_admin", "019 critical dbops_app_rw in pg_execute_server_program"):
        assert blocks[server_wide].startswith("-- verified on a scratch copy: finding gone"), blocks[server_wide]
    assert blocks["004 high password_encryption"] == ("-- verified on a scratch copy: finding gone after applying it"
                                                      " (set for the copy's session: SET LOCAL)")
    assert blocks["020 medium log_connections"].startswith(
        "-- NOT VERIFIED: ALTER SYSTEM cannot run on a copy, and a session cannot take it (log_connections is a"
        " superuser-backend setting)")
    assert blocks["017 high language plevil"].startswith("-- NOT VERIFIED: only a statement to review first")
    assert not [k for k, v in blocks.items() if "left out" in v]
    assert "-- tried on a scratch copy (template clone, in one transaction rolled back, dropped afterwards)" \
        in run.stdout
    # each step's undo: checked on the copy (ALTER SYSTEM: computed from postgresql.auto.conf), printed last step
    # first; the whole undo brings the copy's catalog back
    assert '-- undo: checked on the scratch copy (1 statement)\nALTER ROLE "evil_admin" NOSUPERUSER;' in run.stdout
    undo = run.stdout[run.stdout.index("-- Undo of the security hardening"):]
    assert '-- undo of SEC001 critical: superuser beyond the bootstrap role (evil_admin)\nALTER ROLE "evil_admin"' \
           ' SUPERUSER;' in undo
    assert undo.index("-- undo of SEC013 low") < undo.index("-- undo of SEC001 critical")
    assert "ALTER FUNCTION app.unsafe_definer() RESET \"search_path\";" in undo
    assert "ALTER SYSTEM SET \"log_connections\" = 'off';" in undo
    assert "-- the undo of every step tried on the copy, applied after the plan, " in run.stdout
    with connection(url) as conn:
        assert {n for (n,) in conn.execute("SELECT datname FROM pg_database")} == databases
    unverified = run_security(["harden", "--plan", "--no-verify"], url, tmp_path)
    assert unverified.returncode == 0 and "verified on a scratch copy" not in unverified.stdout
    assert unverified.stdout.count("-- NOT VERIFIED: --no-verify") == len(blocks)
    assert "-- undo: NOT COMPUTED: the undo is computed on a scratch copy" in unverified.stdout
    assert "no undo (the undo is computed on a scratch copy" in unverified.stderr
    production = run_security(["harden", "--plan"], url, tmp_path, DBOPS_PRODUCTION="1")
    assert "-- not tried on a scratch copy: production target; pass --allow-scratch-on-production" in production.stdout
    assert "verified on a scratch copy" not in production.stdout
    refused = run_security(["audit", "--accept-baseline"], url, tmp_path)
    assert refused.returncode == 1 and "has an access-control matrix" in refused.stderr

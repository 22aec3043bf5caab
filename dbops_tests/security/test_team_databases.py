"""The audit on the two team databases dbops did not create (dbops_tests/foreign): no matrix, so the first audit
records the grants baseline and later ones report what changed; every rule covers every schema of the target,
`public` included; nothing is reported about objects the database does not have; and `harden --plan` is verified on
a scratch copy: after it, the SECURITY DEFINER calls still work and the definer finding is gone."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from psycopg import sql

from dbops.pg.connect import connection, database_name
from dbops.security import Severity, audit_database
from dbops.security.findings import AuditReport
from dbops.security.grants import BaselineStore, baseline_path
from dbops_tests.foreign import ForeignSchema

# rules that exist only because a matrix names roles, grants and sensitive tables
MATRIX_RULES = {"SEC010", "SEC011", "SEC012", "SEC013", "SEC021", "SEC022"}
BASELINE_CHANGES = {"SEC041", "SEC042", "SEC043", "SEC044"}


def audit(url: str, schema: ForeignSchema, home: Path, **kwargs: object) -> AuditReport:
    store = BaselineStore(baseline_path(home, schema.name), schema.name)
    return audit_database(url, None, schemas=schema.schemas, baseline=store, check_backups=False, **kwargs)


def by_rule(report: AuditReport, *rules: str) -> list[tuple[str, str, Severity]]:
    return sorted((f.rule, f.subject, f.severity) for f in report.findings if f.rule in rules)


def schema_qualified_names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"\b([a-z_][a-z0-9_]*)\.[a-z_\"]", text)}


def assert_only_own_objects(report: AuditReport, url: str, schema: ForeignSchema) -> None:
    """No matrix rule, nothing in a schema the database does not have, every role named exists."""
    assert not {f.rule for f in report.findings} & MATRIX_RULES, report.table_markdown()
    with connection(url) as conn:
        schemas = {n for (n,) in conn.execute("SELECT nspname FROM pg_namespace")}
        roles = {n for (n,) in conn.execute("SELECT rolname FROM pg_roles")}
    for f in report.findings:
        named = schema_qualified_names(f.subject) - {"pg_hba"}
        assert named <= schemas, (f.rule, f.subject, named - schemas)
        assert "app." not in f.subject + f.evidence, f
        if f.subject.startswith("role "):
            assert f.subject.split()[1].rstrip(":") in roles, f


def test_first_audit_records_the_baseline_later_ones_report_changes(foreign_db: tuple[ForeignSchema, str],
                                                                    tmp_path: Path) -> None:
    schema, url = foreign_db
    first = audit(url, schema, tmp_path)
    print(f"\n{schema.name} FIRST AUDIT: {first.summary()}\n{first.table_markdown(with_remediation=False)}")
    assert set(first.schemas) == set(schema.schemas)
    assert first.baseline["recorded"] is True
    assert not by_rule(first, *BASELINE_CHANGES)
    assert [f.rule for f in first.findings if f.rule == "SEC040"] == ["SEC040"]
    assert_only_own_objects(first, url, schema)
    # the file is explicit: the team's own grants are in it, one line each
    doc = yaml.safe_load(baseline_path(tmp_path, schema.name).read_text())
    assert doc["database"] == database_name(url) and list(doc["schemas"]) == list(schema.schemas)
    own_role = "library_app" if schema.name == "library" else "telemetry_ingest"
    assert "LOGIN" in doc["roles"][own_role]
    assert any(line.startswith(f"{own_role}: ") for line in doc["privileges"]), doc["privileges"]

    second = audit(url, schema, tmp_path)
    assert second.baseline["recorded"] is False and second.baseline["changes"] == 0
    assert not by_rule(second, "SEC040", "SEC045", *BASELINE_CHANGES), second.table_markdown()

    table = f"public.{'branches' if schema.name == 'library' else 'sites'}"
    with connection(url) as conn:
        conn.execute(f"GRANT ALL ON {table} TO PUBLIC")
        conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(own_role)))
        reader = own_role if schema.name == "library" else "telemetry_viewer"
        conn.execute(sql.SQL("REVOKE SELECT ON {} FROM {}").format(sql.Identifier(*table.split(".")),
                                                                   sql.Identifier(reader)))
    try:
        changed = audit(url, schema, tmp_path)
    finally:
        with connection(url) as conn:
            conn.execute(sql.SQL("REVOKE pg_read_all_data FROM {}").format(sql.Identifier(own_role)))
    print(f"\n{schema.name} AFTER GRANTS: {changed.summary()}\n{changed.table_markdown(with_remediation=False)}")
    found = {(f.rule, f.subject): f.severity for f in changed.findings}
    (to_public,) = [f for f in changed.findings if f.rule == "SEC043"]  # GRANT ALL: one finding, every privilege
    assert to_public.severity is Severity.HIGH and to_public.subject.startswith("PUBLIC: ")
    assert to_public.subject.endswith(f" on table {table}")
    assert {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"} <= set(re.findall(r"[A-Z]+", to_public.subject))
    assert to_public.fix_sql[0].startswith("REVOKE ") and to_public.fix_sql[0].endswith(f"{table} FROM PUBLIC;")
    assert found[("SEC042", f"{own_role} in pg_read_all_data")] is Severity.MEDIUM
    gone = [s for (r, s) in found if r == "SEC045"]
    assert len(gone) == 1 and gone[0].endswith(f"SELECT on table {table}"), gone
    assert changed.baseline["changes"] == sum(1 for f in changed.findings if f.rule in BASELINE_CHANGES) > 0
    assert_only_own_objects(changed, url, schema)

    # accepted: the grants as they are now become the baseline
    accepted = audit(url, schema, tmp_path, accept_baseline=True)
    assert accepted.baseline["recorded"] is True
    assert not by_rule(audit(url, schema, tmp_path), *BASELINE_CHANGES)


def test_definer_without_safe_search_path_found_in_the_team_schema(foreign_db: tuple[ForeignSchema, str],
                                                                   tmp_path: Path) -> None:
    schema, url = foreign_db
    report = audit(url, schema, tmp_path)
    definers = [f for f in report.findings if f.rule == "SEC016"]
    expected = {"library": "lending.member_summary(p_member bigint)",
                "telemetry": "iot.record_reading(p_device integer, p_value double precision, p_humidity numeric)"}
    assert [f.subject for f in definers] == [expected[schema.name]], report.table_markdown()
    (fix,) = definers[0].fix_sql
    own = schema.default_schema
    # its own schema stays on the path (the body calls its helpers unqualified), pg_temp last
    assert re.search(rf'SET search_path = pg_catalog, "{own}"(, "public")?, pg_temp;$', fix), fix


def test_harden_plan_is_verified_on_a_scratch_copy(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    from dbops.security.harden import plan
    from dbops.security.verify import verify_plan

    schema, url = foreign_db
    store = BaselineStore(baseline_path(tmp_path, schema.name), schema.name)
    before = audit(url, schema, tmp_path)
    with connection(url) as conn:
        databases_before = {n for (n,) in conn.execute("SELECT datname FROM pg_database")}
        definition_before = conn.execute("SELECT pg_get_functiondef(%s::regprocedure)",
                                         (_definer(schema),)).fetchone()[0]
    hardening = plan(before)
    verification = verify_plan(url, hardening, before, None, schemas=schema.schemas, baseline=store)
    rendered = hardening.render(before.target)
    print(f"\n{schema.name} HARDEN PLAN\n{rendered}")
    (step,) = [s for s in hardening.steps if s.finding.rule == "SEC016"]
    assert step.check is not None and step.check.status == "verified", step.check
    # the function was really called, before and after, and still works
    (call,) = verification.calls.values()
    assert call.sql is not None and call.after_error is None and call.before_error is None, call
    assert "SEC016" not in {f.rule for f in verification.after.findings}
    assert not hardening.broken
    assert not verification.new_findings, verification.new_findings
    # the copy was dropped, the target untouched (still the old definition, no baseline recorded from the copy)
    with connection(url) as conn:
        assert {n for (n,) in conn.execute("SELECT datname FROM pg_database")} == databases_before
        assert conn.execute("SELECT pg_get_functiondef(%s::regprocedure)",
                            (_definer(schema),)).fetchone()[0] == definition_before
    assert audit(url, schema, tmp_path).baseline["changes"] == 0

    # the plan applied for real: the team's own calls still work, and the finding is gone
    with connection(url) as conn:
        for statement in step.statements:
            conn.execute(statement)
        for call_sql in schema.definer_calls:
            with conn.transaction(force_rollback=True):
                conn.execute(call_sql).fetchall()
    assert "SEC016" not in {f.rule for f in audit(url, schema, tmp_path).findings}


def _definer(schema: ForeignSchema) -> str:
    return {"library": "lending.member_summary(bigint)",
            "telemetry": "iot.record_reading(integer, double precision, numeric)"}[schema.name]


def test_a_step_that_breaks_a_function_is_left_out_with_the_error(foreign_db: tuple[ForeignSchema, str],
                                                                   tmp_path: Path) -> None:
    """Yesterday's fix, `SET search_path = pg_catalog, pg_temp`, breaks the definer: the copy catches it."""
    from dbops.security.harden import plan
    from dbops.security.verify import verify_plan

    schema, url = foreign_db
    before = audit(url, schema, tmp_path)
    hardening = plan(before)
    (step,) = [s for s in hardening.steps if s.finding.rule == "SEC016"]
    name = step.statements[0].split(" SET search_path")[0]
    step.statements = [f"{name} SET search_path = pg_catalog, pg_temp;"]
    verify_plan(url, hardening, before, None, schemas=schema.schemas,
                baseline=BaselineStore(baseline_path(tmp_path, schema.name), schema.name))
    assert step.check is not None and step.check.status == "broken", step.check
    assert "worked before the plan and fails after it" in step.check.detail
    assert "does not exist" in step.check.detail, step.check.detail
    rendered = hardening.render(before.target)
    assert f"-- left out: {name} SET search_path = pg_catalog, pg_temp;" in rendered
    assert "\n" + step.statements[0] not in rendered  # never as a statement that would run
    assert hardening.broken == [step]


def team_env(schema: ForeignSchema, url: str, tmp_path: Path) -> dict[str, str]:
    """`dbops` aimed at a team target as its operator configures it: its schemas, no access-control matrix."""
    import json

    config = tmp_path / "dbops.yaml"
    config.write_text(json.dumps({"home": str(tmp_path / "home"), "targets": {schema.name: {
        "url_env": "TEAM_DATABASE_URL", "schemas": list(schema.schemas), "migrations": str(schema.migrations),
        "migrate": {"default_schema": schema.default_schema}}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPS_")}
    env.update(DBOPS_CONFIG=str(config), TEAM_DATABASE_URL=url)
    return env


def test_cli_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    from dbops_tests.conftest import run_dbops

    schema, url = foreign_db
    env = team_env(schema, url, tmp_path)
    first = run_dbops(["security", "audit"], env, timeout=120)
    assert first.returncode == 0, first.stderr  # no critical finding
    path = baseline_path(tmp_path / "home", schema.name)
    assert f"grants baseline recorded in {path}" in first.stdout and path.is_file()
    assert f"(schemas {', '.join(sorted(schema.schemas))})" in first.stdout
    again = run_dbops(["security", "audit", "--fail-on", "high", "--format", "json"], env, timeout=120)
    assert again.returncode == 1  # the definer finding is high
    doc = yaml.safe_load(again.stdout)
    assert doc["baseline"]["changes"] == 0 and doc["counts"]["critical"] == 0
    assert {f["rule"] for f in doc["findings"]} & BASELINE_CHANGES == set()

    table = f"public.{'branches' if schema.name == 'library' else 'sites'}"
    with connection(url) as conn:
        conn.execute(f"GRANT ALL ON {table} TO PUBLIC")
    changed = run_dbops(["security", "audit"], env, timeout=120)
    assert changed.returncode == 0 and ": 1 changes" in changed.stdout  # GRANT ALL: one change
    assert "| high | SEC043 | A01:2025-Broken Access Control |  | PUBLIC: " in changed.stdout
    plan_run = run_dbops(["security", "harden", "--plan"], env, timeout=300)
    assert plan_run.returncode == 0, plan_run.stderr
    assert f"ON TABLE {table} FROM PUBLIC;" in plan_run.stdout
    assert "-- verified on a scratch copy: finding gone after applying it" in plan_run.stdout
    assert f'SET search_path = pg_catalog, "{schema.default_schema}"' in plan_run.stdout
    assert "NOT VERIFIED, left out" not in plan_run.stdout
    # --write: the next migration in the team's own numbering style (V022 after V021, V3 after V2)
    import shutil

    folder = tmp_path / "migrations"
    shutil.copytree(schema.migrations, folder)
    written = run_dbops(["security", "harden", "--plan", "--write", str(folder)], env, timeout=300)
    assert written.returncode == 0, written.stderr
    expected = {"library": "V022__security_hardening.sql", "telemetry": "V3__security_hardening.sql"}[schema.name]
    text = (folder / expected).read_text()
    assert "-- verified on a scratch copy" in text and f'pg_catalog, "{schema.default_schema}"' in text
    accepted = run_dbops(["security", "audit", "--accept-baseline"], env, timeout=120)
    assert accepted.returncode == 0 and "grants baseline recorded" in accepted.stdout
    after = run_dbops(["security", "audit", "--format", "json"], env, timeout=120)
    assert yaml.safe_load(after.stdout)["baseline"]["changes"] == 0


def test_generic_rules_cover_every_schema_of_the_target_public_included(foreign_db: tuple[ForeignSchema, str],
                                                                        tmp_path: Path) -> None:
    schema, url = foreign_db
    own = schema.default_schema
    with connection(url) as conn:
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO PUBLIC").format(sql.Identifier(own)))
        conn.execute("CREATE TABLE public.tenant_notes (tenant_id int, note text)")
        conn.execute("CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'")
        conn.execute("CREATE SCHEMA elsewhere")
        conn.execute("CREATE FUNCTION elsewhere.other() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'")
    # the target names only its own schema: `public` is audited all the same, `elsewhere` is not the target's
    store = BaselineStore(baseline_path(tmp_path, schema.name), schema.name)
    report = audit_database(url, None, schemas=(own,), baseline=store, check_backups=False)
    assert report.schemas == sorted([own, "public"])
    found = {(f.rule, f.subject) for f in report.findings}
    assert ("SEC009", f"schema {own}") in found
    assert ("SEC014", "public.tenant_notes") in found
    assert ("SEC016", "public.planted()") in found
    assert not any("elsewhere" in f.subject for f in report.findings)
    # with every user schema (no schemas configured) `elsewhere` is covered too
    everything = audit_database(url, None, check_backups=False)
    assert ("SEC016", "elsewhere.other()") in {(f.rule, f.subject) for f in everything.findings}
    assert {f.rule for f in everything.findings if f.subject == "grants baseline"} == {"SEC040"}


def test_dagster_audit_of_a_team_target_records_then_compares(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from dbops.components.naming import op_name
    from dbops.components.resources import DatabaseResource
    from dbops.components.security.assets import build_security_audit
    from dbops.components.security.resources import SecurityResource

    schema, url = foreign_db
    for key, value in team_env(schema, url, tmp_path).items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("DBOPS_") and k != "DBOPS_CONFIG"]:
        monkeypatch.delenv(key)
    asset = build_security_audit(schema.name)

    def run() -> tuple[dict[str, object], dict[str, bool]]:
        result = dg.materialize([asset], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                resources={"database": DatabaseResource(),
                                           "security": SecurityResource(check_backups=False)})
        assert result.success
        metadata = result.asset_materializations_for_node(op_name(schema.name, "security_audit"))[0].metadata
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        return {k: v.value for k, v in metadata.items()}, checks

    first, checks = run()
    assert first["grants_baseline"]["recorded"] is True  # type: ignore[index]
    assert first["schemas"] == ", ".join(sorted(schema.schemas))
    assert checks == {"no_critical_findings": True, "no_high_findings": False}  # the definer finding
    assert baseline_path(tmp_path / "home", schema.name).is_file()
    with connection(url) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(f"{schema.name}_intruder")))
    try:
        second, _ = run()
    finally:
        with connection(url) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(f"{schema.name}_intruder")))
    assert second["grants_baseline"]["recorded"] is False  # type: ignore[index]
    assert second["grants_baseline"]["changes"] == 1  # type: ignore[index]
    rows = [r.data for r in second["findings"].records]  # type: ignore[attr-defined]  # a table with its schema
    wanted = {"rule": "SEC041", "owasp": "A01:2025-Broken Access Control", "subject": f"role {schema.name}_intruder"}
    assert wanted.items() <= next(r for r in rows if r["rule"] == "SEC041").items()


def test_a_baseline_of_another_database_is_refused_in_one_line(foreign_db: tuple[ForeignSchema, str],
                                                               server_url: str, tmp_path: Path) -> None:
    from dbops.pg.connect import drop_database
    from dbops.security.grants import BaselineError
    from dbops_tests.conftest import new_database

    schema, url = foreign_db
    audit(url, schema, tmp_path)  # records the baseline of this database
    other = new_database(server_url)
    try:
        with pytest.raises(BaselineError) as refused:
            audit(other, schema, tmp_path)
    finally:
        drop_database(server_url, database_name(other))
    message = str(refused.value)
    assert f"recorded for database {database_name(url)}, not {database_name(other)}" in message
    assert "--accept-baseline" in message and "\n" not in message


def test_search_path_helpers() -> None:
    from dbops.security.rules import parse_search_path, unqualified_names

    assert parse_search_path('"$user", lending, "Odd ""Name"""') == ["$user", "lending", 'Odd "Name"']
    body = "BEGIN RETURN (SELECT full_name FROM members m WHERE m.id = p) || open_loans(p) || lending.x(); END"
    names = unqualified_names(body)
    assert {"members", "open_loans", "full_name", "lending"} <= names and "x" not in names and "id" not in names


def test_a_new_object_with_its_default_privileges_is_info_an_explicit_grant_a_finding(
        foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    own, reader = schema.default_schema, ("library_readonly" if schema.name == "library" else "telemetry_viewer")
    with connection(url) as conn:
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
            sql.Identifier(own), sql.Identifier(reader)))
    first = audit(url, schema, tmp_path)
    assert first.baseline["recorded"] is True
    with connection(url) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.shelf_notes (id int)").format(sql.Identifier(own)))
        conn.execute(sql.SQL("CREATE FUNCTION {}.helper() RETURNS int LANGUAGE sql AS 'SELECT 1'").format(
            sql.Identifier(own)))
        conn.execute(sql.SQL("CREATE TABLE {}.exposed (id int)").format(sql.Identifier(own)))
        conn.execute(sql.SQL("GRANT INSERT ON {}.exposed TO {}").format(sql.Identifier(own), sql.Identifier(reader)))
    report = audit(url, schema, tmp_path)
    found = {(f.rule, f.subject): f.severity for f in report.findings if f.rule in BASELINE_CHANGES | {"SEC046"}}
    print(f"\n{schema.name} NEW OBJECTS\n{report.table_markdown(with_remediation=False)}")
    assert found == {
        ("SEC046", f"{reader}: SELECT on table {own}.shelf_notes"): Severity.INFO,  # the default privileges
        ("SEC046", f"PUBLIC: EXECUTE on function {own}.helper()"): Severity.INFO,  # PostgreSQL's own default
        ("SEC046", f"{reader}: SELECT on table {own}.exposed"): Severity.INFO,
        ("SEC043", f"{reader}: INSERT on table {own}.exposed"): Severity.MEDIUM,  # granted by hand
    }, found


def test_harden_plan_without_createdb_is_shown_not_verified(foreign_db: tuple[ForeignSchema, str],
                                                            tmp_path: Path) -> None:
    from urllib.parse import quote

    from dbops.pg.connect import parse_url
    from dbops_tests.conftest import run_dbops

    schema, url = foreign_db
    role, password = f"{schema.name}_auditor", "Auditor-Pw-5512"
    with connection(url) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    parsed = parse_url(url)
    try:
        lesser = f"postgresql://{role}:{quote(password)}@{parsed.host}:{parsed.port}/{parsed.database}"
        run = run_dbops(["security", "harden", "--plan"], team_env(schema, lesser, tmp_path), timeout=120)
    finally:
        with connection(url) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert run.returncode == 0, run.stderr
    assert "warning: no scratch copy could be made (grant CREATEDB to this role)" in run.stderr
    assert "-- not tried on a scratch copy: no scratch copy could be made" in run.stdout
    assert "SEC016" in run.stdout and "verified on a scratch copy" not in run.stdout
    assert password not in run.stdout + run.stderr

"""The reference schema: tenant isolation, least privilege, indexed foreign keys, audit trail, deterministic seed."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml

from dbops.pg.connect import connection
from dbops.seed import SeedError, seed
from dbops_tests.conftest import PROJECT_DIR

ACCESS_CONTROL = PROJECT_DIR / "sql" / "access-control.yml"


@pytest.fixture
def seeded_db(migrated_db: str) -> str:
    seed(migrated_db, 0.05)
    return migrated_db


def as_role(url: str, role: str, tenant: int | None) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"SET ROLE {role}")
    if tenant is not None:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant)])
    return conn


def test_row_level_security_isolates_tenants(seeded_db: str) -> None:
    with as_role(seeded_db, "dbops_app_rw", 3) as conn:
        tenants = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM app.orders")}
        assert tenants == {3}
        assert conn.execute("SELECT count(*) FROM app.users").fetchone()[0] == 50
        assert conn.execute("SELECT count(*) FROM app.order_items WHERE tenant_id = 4").fetchone()[0] == 0
        assert [r[0] for r in conn.execute("SELECT id FROM app.tenants")] == [3]
        assert {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM app.daily_sales_v")} == {3}
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("INSERT INTO app.products (tenant_id, sku, name, price) VALUES (4, 'X-1', 'x', 1)")
        conn.execute("INSERT INTO app.products (tenant_id, sku, name, price) VALUES (3, 'X-1', 'x', 1)")
        # Updating another tenant's row silently touches nothing.
        assert conn.execute("UPDATE app.products SET price = 0 WHERE tenant_id = 4").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM app.daily_sales")
    with as_role(seeded_db, "dbops_app_rw", None) as conn:
        assert conn.execute("SELECT count(*) FROM app.orders").fetchone()[0] == 0  # no tenant set: nothing


def test_read_only_role_cannot_write_or_read_password_hashes(seeded_db: str) -> None:
    with as_role(seeded_db, "dbops_app_ro", 1) as conn:
        assert conn.execute("SELECT count(*) FROM app.orders").fetchone()[0] > 0
        assert conn.execute("SELECT count(email) FROM app.users").fetchone()[0] == 50
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT password_hash FROM app.users")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE app.orders SET status = 'paid'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM app.audit_log")
    with as_role(seeded_db, "dbops_auditor", None) as conn:
        conn.execute("SELECT count(*) FROM app.audit_log")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM app.orders")


FK_WITHOUT_INDEX = """
SELECT c.conrelid::regclass::text, c.conname
FROM pg_constraint c
WHERE c.contype = 'f' AND c.connamespace = 'app'::regnamespace AND c.conparentid = 0
  AND NOT EXISTS (
      SELECT 1 FROM pg_index i
      WHERE i.indrelid = c.conrelid
        AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
        AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
"""


def test_every_foreign_key_has_a_covering_index(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        assert conn.execute(FK_WITHOUT_INDEX).fetchall() == []
        # and the check can see a missing one
        conn.execute("CREATE TABLE app.probe (id bigint PRIMARY KEY, tenant_id bigint REFERENCES app.tenants (id))")
        assert conn.execute(FK_WITHOUT_INDEX).fetchall() == [("app.probe", "probe_tenant_id_fkey")]


def test_every_tenant_table_has_forced_rls_and_keys_are_bigint_identity(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        rows = conn.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relnamespace = 'app'::regnamespace"
            " AND relkind IN ('r', 'p') AND NOT relispartition AND relname <> 'audit_log' ORDER BY 1"
        ).fetchall()
        assert rows and all(r[1] and r[2] for r in rows), rows
        ids = conn.execute(
            "SELECT table_name, data_type, is_identity FROM information_schema.columns"
            " WHERE table_schema = 'app' AND column_name = 'id' AND table_name NOT LIKE '%\\_20%'"
            " AND table_name NOT LIKE '%default' AND table_name NOT LIKE 'daily_sales%'"
        ).fetchall()
        assert ids and all(r[1] == "bigint" and r[2] == "YES" for r in ids), ids
        owners = {r[0] for r in conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'app'::regnamespace")}
        assert owners == {"dbops_owner"}


def _actual_grants(conn: psycopg.Connection) -> set[tuple[str, str, str]]:
    table_grants = conn.execute(
        "SELECT grantee, table_schema || '.' || table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE table_schema = 'app' AND grantee LIKE 'dbops\\_%' AND grantee <> 'dbops_owner'"
    ).fetchall()
    column_grants = conn.execute(
        "SELECT grantee, table_schema || '.' || table_name || '(' || column_name || ')', privilege_type"
        " FROM information_schema.column_privileges WHERE table_schema = 'app' AND grantee LIKE 'dbops\\_%'"
        " AND grantee <> 'dbops_owner'"
    ).fetchall()
    whole_tables = {(g, t) for g, t, _p in table_grants}
    grants = set(table_grants)
    for grantee, column, privilege in column_grants:
        if (grantee, column.split("(")[0]) not in whole_tables:
            grants.add((grantee, column, privilege))
    functions = conn.execute(
        "SELECT g.rolname, n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',"
        " a.privilege_type FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " CROSS JOIN LATERAL aclexplode(p.proacl) a JOIN pg_roles g ON g.oid = a.grantee"
        " WHERE n.nspname = 'app' AND g.rolname LIKE 'dbops\\_%' AND g.rolname <> 'dbops_owner'"
    ).fetchall()
    return grants | set(functions)


def _declared_grants() -> set[tuple[str, str, str]]:
    spec = yaml.safe_load(ACCESS_CONTROL.read_text())
    declared = set()
    for grant in spec["grants"]:
        obj = grant["object"]
        if grant.get("columns"):
            for column in grant["columns"]:
                for privilege in grant["privileges"]:
                    declared.add((grant["role"], f"{obj}({column})", privilege))
        else:
            for privilege in grant["privileges"]:
                declared.add((grant["role"], obj, privilege))
    return declared


def test_grants_match_access_control_yml(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        actual = _actual_grants(conn)
        assert actual == _declared_grants()
        spec = yaml.safe_load(ACCESS_CONTROL.read_text())
        for role, attrs in spec["roles"].items():
            login = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            assert login == (attrs["login"],), role
        # A grant made by hand shows up as a difference.
        conn.execute("GRANT DELETE ON app.orders TO dbops_app_rw")
        assert _actual_grants(conn) - _declared_grants() == {("dbops_app_rw", "app.orders", "DELETE")}


def test_access_control_doc_matrix_matches_the_yml() -> None:
    """Each cell of the matrix in docs/access-control.md lists exactly the privileges the yml grants."""
    doc = (PROJECT_DIR / "docs" / "access-control.md").read_text()
    section = doc.split("## Matrix", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|")]
    header, body = rows[0], rows[2:]
    documented = set()
    for row in body:
        obj = row[0].strip("`")
        for role, cell in zip(header[1:], row[1:], strict=True):
            if cell == "-":
                continue
            privileges, _, columns = cell.partition(" (")
            for privilege in privileges.split(", "):
                if columns:
                    for column in columns.removesuffix(" only)").split(", "):
                        documented.add((role, f"{obj}({column})", privilege))
                else:
                    documented.add((role, obj, privilege))
    assert documented == _declared_grants()


def test_audit_trigger_records_sensitive_changes_without_values(seeded_db: str) -> None:
    with as_role(seeded_db, "dbops_app_rw", 2) as conn:
        conn.execute("UPDATE app.users SET email = 'changed@tenant2.example' WHERE id = 2")
        conn.execute("UPDATE app.users SET full_name = full_name WHERE id = 22")  # no real change: no row
    with connection(seeded_db) as conn:
        rows = conn.execute(
            "SELECT tenant_id, table_name, operation, row_id, changed_columns, changed_by FROM app.audit_log"
        ).fetchall()
        assert rows == [(2, "app.users", "UPDATE", 2, ["email"], "postgres")]
        assert "changed@" not in str(conn.execute("SELECT * FROM app.audit_log").fetchall())


def _fingerprint(url: str) -> dict[str, str]:
    with connection(url) as conn:
        out = {}
        for table in ("tenants", "users", "products", "inventory", "orders", "order_items", "payments"):
            out[table] = conn.execute(
                f"SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY t::text)) FROM app.{table} AS t"  # noqa: S608
            ).fetchone()[0]
        return out


def test_seed_is_deterministic_spans_sixty_days_and_is_consistent(pg_server, seeded_db: str) -> None:
    from dbops.migrate import Migrator
    from dbops_tests.conftest import MIGRATIONS_DIR, new_database

    other = new_database(pg_server.url())
    Migrator(other, MIGRATIONS_DIR).apply()
    seed(other, 0.05)
    assert _fingerprint(other) == _fingerprint(seeded_db)
    with connection(seeded_db) as conn:
        oldest, newest = conn.execute(
            "SELECT min(created_at), max(created_at) FROM app.orders").fetchone()
        span = conn.execute("SELECT %s::timestamptz - %s::timestamptz", [newest, oldest]).fetchone()[0]
        assert 58 <= span.days <= 60
        mismatched = conn.execute(
            "SELECT count(*) FROM app.orders o WHERE o.total <> (SELECT sum(quantity * unit_price)"
            " FROM app.order_items i WHERE (i.tenant_id, i.order_id, i.order_created_at) ="
            " (o.tenant_id, o.id, o.created_at))").fetchone()[0]
        assert mismatched == 0
        assert conn.execute("SELECT count(*) FROM app.orders_default").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM app.daily_sales").fetchone()[0] > 0
    with pytest.raises(SeedError, match="already holds data"):
        seed(seeded_db, 0.05)
    seed(seeded_db, 0.05, reset=True)
    assert _fingerprint(seeded_db) == _fingerprint(other)


def test_seed_without_schema_is_a_clear_error(fresh_db: str) -> None:
    with pytest.raises(SeedError, match="run `dbops migrate` first"):
        seed(fresh_db, 0.05)


def test_migrations_are_documented(migrated_db: str) -> None:
    doc = (PROJECT_DIR / "docs" / "data-model.md").read_text()
    assert "erDiagram" in doc
    with connection(migrated_db) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'app'::regnamespace AND relkind IN ('r', 'p')"
            " AND NOT relispartition")]
    for table in tables:
        assert f"app_{table}" in doc or f"app.{table}" in doc, table
    assert Path(ACCESS_CONTROL).exists()

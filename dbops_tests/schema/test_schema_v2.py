"""Reference schema v2 (V9 onward): per-statement RLS, pruning workloads, case-insensitive e-mails, enforced order
totals, audit rows naming the application's user, (tenant_id, id) unique across months, and each migration
rehearsed on a seeded copy."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbops.migrate import Migrator
from dbops.migrate.rehearsal import rehearse_on
from dbops.pg.connect import connection
from dbops.seed import seed
from dbops_tests.conftest import MIGRATIONS_DIR, PROJECT_DIR

WORKLOADS = PROJECT_DIR / "sql" / "workloads"
TENANT_TABLES = ("tenants", "users", "products", "inventory", "orders", "order_items", "payments", "order_keys")
V2_FILES = sorted((p.name for p in MIGRATIONS_DIR.glob("V*.sql") if int(p.name[1:].split("__")[0]) >= 9),
                  key=lambda n: int(n[1:].split("__")[0]))


@pytest.fixture
def seeded_db(migrated_db: str) -> str:
    seed(migrated_db, 0.05)
    return migrated_db


def as_role(url: str, role: str, tenant: int | None, *, autocommit: bool = True) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=autocommit)
    conn.execute(f"SET ROLE {role}")
    if tenant is not None:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant)])
    if not autocommit:
        conn.commit()
    return conn


def workload_statements(name: str, **variables: int) -> list[tuple[str, list[str]]]:
    """The SQL of a pgbench script as pgbench sends it in extended mode: each :variable an untyped parameter."""
    out = []
    for line in (WORKLOADS / name).read_text().splitlines():
        if not line.strip() or line.startswith(("--", "\\")):
            continue
        params: list[str] = []

        def bind(match: re.Match[str], params: list[str] = params) -> str:
            params.append(str(variables[match.group(1)]))
            return "%s"

        out.append((re.sub(r"(?<!:):([a-z_][a-z0-9_]*)", bind, line), params))
    return out


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


def explain(conn: psycopg.Connection, statement: str, params: list[str] | None = None) -> list[dict[str, Any]]:
    plan = conn.execute(f"EXPLAIN (FORMAT JSON) {statement.rstrip(';')}", params).fetchone()[0][0]["Plan"]
    return plan_nodes(plan)


def test_rls_policies_evaluate_the_tenant_once_per_statement(seeded_db: str) -> None:
    with connection(seeded_db) as conn:
        policies = dict(conn.execute(
            "SELECT tablename, qual FROM pg_policies WHERE schemaname = 'app' AND policyname = 'tenant_isolation'"))
        view = conn.execute("SELECT pg_get_viewdef('app.daily_sales_v'::regclass)").fetchone()[0]
    assert set(policies) == set(TENANT_TABLES)
    assert all("( SELECT app.current_tenant_id()" in qual for qual in policies.values()), policies
    assert "( SELECT app.current_tenant_id()" in view
    with as_role(seeded_db, "dbops_app_rw", 3) as conn:
        for statement in ("SELECT count(*) FROM app.order_items", "SELECT count(*) FROM app.users",
                          "SELECT * FROM app.daily_sales_v"):
            nodes = explain(conn, statement)
            init_plans = [n for n in nodes if n.get("Parent Relationship") == "InitPlan"]
            assert len(init_plans) == 1, (statement, nodes)
            assert init_plans[0]["Node Type"] == "Result"
        # Measured, not only planned: the InitPlan runs once for every row the scan filters.
        analyzed = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM app.order_items")
        nodes = plan_nodes(analyzed.fetchone()[0][0]["Plan"])
        init = next(n for n in nodes if n.get("Parent Relationship") == "InitPlan")
        scan = next(n for n in nodes if n.get("Relation Name") == "order_items")
        assert init["Actual Loops"] == 1 and scan["Actual Rows"] > 100
        assert conn.execute("SELECT count(DISTINCT tenant_id) FROM app.order_items").fetchone()[0] == 1


def _months(start: Any, end: Any) -> set[str]:
    out, month = set(), start.replace(day=1)
    while month <= end:
        out.add(f"orders_{month:%Y_%m}")
        month = (month + timedelta(days=32)).replace(day=1)
    return out


def function_statement(conn: psycopg.Connection, function: str, **arguments: int) -> tuple[str, list[str]]:
    """The query a workload's PL/pgSQL function (V16) runs, each of its ``p_*`` arguments a parameter."""
    source = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = %s::regproc", (function,)).fetchone()[0]
    body = re.search(r"RETURN QUERY(.*?);", source, re.S)[1]  # type: ignore[index]
    params: list[str] = []

    def bind(match: re.Match[str]) -> str:
        params.append(str(arguments[match.group(1)]))
        return "%s"

    return re.sub(r"\bp_([a-z]+)\b", bind, body), params


@pytest.mark.parametrize("script, function, variables", [
    ("read_order.sql", "app.order_by_id", {"t": 3, "o": 43}),
    ("read_user_orders.sql", "app.user_recent_orders", {"t": 3, "u": 23}),
])
def test_workloads_prune_to_the_months_they_read(seeded_db: str, script: str, function: str,
                                                 variables: dict[str, int]) -> None:
    """The workload calls its function (whose plan a pooled server connection keeps); the function's query prunes."""
    call, call_params = next(s for s in workload_statements(script, **variables) if function in s[0])
    arguments = {"tenant": variables["t"], "order": variables.get("o", 0), "user": variables.get("u", 0),
                 "limit": 20}
    with as_role(seeded_db, "dbops_app_rw", 3) as conn:
        statement, params = function_statement(conn, function, **arguments)
        now = conn.execute("SELECT now() AT TIME ZONE 'UTC'").fetchone()[0]
        partitions = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'app.orders'::regclass")}
        nodes = explain(conn, statement, params)
        scanned = {n["Relation Name"] for n in nodes if "Relation Name" in n}
        rows = conn.execute(statement, params).fetchall()
        assert conn.execute(call, call_params).fetchall() == rows  # the call returns what its query does
    expected = _months((now - timedelta(days=62)).date(), now.date())
    assert len(partitions) > len(expected) + 1  # there was something to prune (other months and the DEFAULT)
    assert scanned == expected, (scanned, nodes)
    assert "orders_default" not in scanned
    assert rows  # the seeded rows are inside the window read
    if script == "read_user_orders.sql":
        indexes = {n.get("Index Name") for n in nodes if n["Node Type"].startswith("Index")}
        assert indexes and all(i.endswith("tenant_id_user_id_created_at_idx") for i in indexes), nodes


def test_user_orders_index_replaces_its_prefix(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        indexes = dict(conn.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
            " WHERE indrelid = 'app.orders'::regclass"))
    assert "app.orders_tenant_user_created_idx" in indexes
    assert "(tenant_id, user_id, created_at DESC)" in indexes["app.orders_tenant_user_created_idx"]
    assert "app.orders_tenant_user_idx" not in indexes


def test_email_is_unique_per_tenant_whatever_its_case(seeded_db: str) -> None:
    with as_role(seeded_db, "dbops_app_rw", 3) as conn:
        conn.execute("INSERT INTO app.users (tenant_id, email, full_name, password_hash)"
                     " VALUES (3, 'A@x.example', 'A', 'scrypt$0123456789abcdef0123')")
        with pytest.raises(psycopg.errors.UniqueViolation, match="users_tenant_lower_email_key"):
            conn.execute("INSERT INTO app.users (tenant_id, email, full_name, password_hash)"
                         " VALUES (3, 'a@x.example', 'a', 'scrypt$0123456789abcdef0123')")
        with pytest.raises(psycopg.errors.UniqueViolation, match="users_tenant_lower_email_key"):
            conn.execute("UPDATE app.users SET email = 'USER23@TENANT3.EXAMPLE' WHERE id = 43")
    with as_role(seeded_db, "dbops_app_rw", 4) as conn:  # another tenant may have the same address
        conn.execute("INSERT INTO app.users (tenant_id, email, full_name, password_hash)"
                     " VALUES (4, 'a@x.example', 'a', 'scrypt$0123456789abcdef0123')")
        found = conn.execute("SELECT count(*) FROM app.users WHERE lower(email) = lower('A@X.example')").fetchone()[0]
        assert found == 1


def _new_order(conn: psycopg.Connection, total: str, lines: list[tuple[int, int, str]]) -> tuple[int, Any]:
    order = conn.execute("INSERT INTO app.orders (tenant_id, user_id, total, currency) VALUES (3, 23, %s, 'XTS')"
                         " RETURNING id, created_at", [total]).fetchone()
    for product, quantity, price in lines:
        conn.execute("INSERT INTO app.order_items (tenant_id, order_id, order_created_at, product_id, quantity,"
                     " unit_price) VALUES (3, %s, %s, %s, %s, %s)", [order[0], order[1], product, quantity, price])
    return order[0], order[1]


def test_order_total_is_the_sum_of_its_lines_at_commit(seeded_db: str) -> None:
    with connection(seeded_db) as conn:
        mismatched = conn.execute(
            "SELECT count(*) FROM app.orders o WHERE o.total <> (SELECT coalesce(sum(quantity * unit_price), 0)"
            " FROM app.order_items i WHERE (i.tenant_id, i.order_id, i.order_created_at) ="
            " (o.tenant_id, o.id, o.created_at))").fetchone()[0]
        assert mismatched == 0  # the seed's totals agree
    with as_role(seeded_db, "dbops_app_rw", 3, autocommit=False) as conn:
        order, created = _new_order(conn, "25.00", [(3, 2, "10.00"), (23, 1, "5.00")])
        conn.commit()  # consistent: accepted
        _new_order(conn, "99.00", [(3, 1, "10.00")])
        with pytest.raises(psycopg.errors.CheckViolation, match="not the sum of its lines"):
            conn.commit()
        conn.rollback()
        conn.execute("UPDATE app.order_items SET quantity = 3 WHERE order_id = %s AND product_id = 3", [order])
        with pytest.raises(psycopg.errors.CheckViolation, match="orders_total_is_sum_of_items|not the sum"):
            conn.commit()
        conn.rollback()
        conn.execute("DELETE FROM app.order_items WHERE order_id = %s AND product_id = 23", [order])
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.commit()
        conn.rollback()
        # Lines and total changed together, and a status change: accepted.
        conn.execute("UPDATE app.order_items SET quantity = 3 WHERE order_id = %s AND product_id = 3", [order])
        conn.execute("UPDATE app.orders SET total = 35.00, status = 'paid' WHERE id = %s", [order])
        conn.commit()
        assert conn.execute("SELECT total FROM app.orders WHERE id = %s AND created_at = %s",
                            [order, created]).fetchone()[0] == 35
        conn.execute("UPDATE app.orders SET total = 1 WHERE id = %s", [order])
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.commit()
        conn.rollback()


def test_audit_rows_name_the_application_user(seeded_db: str) -> None:
    with as_role(seeded_db, "dbops_app_rw", 3, autocommit=False) as conn:
        # The place-order workload as pgbench sends it: it sets app.actor for its transaction.
        for statement, params in workload_statements("place_order.sql", t=3, u=23, p1=3, p2=23, q1=2, q2=1):
            if statement not in ("BEGIN;", "COMMIT;"):
                conn.execute(statement, params)
        conn.commit()
        conn.execute("UPDATE app.users SET email = 'someone@tenant3.example' WHERE id = 63")  # no app.actor set
        conn.commit()
        assert conn.execute("SELECT current_setting('app.actor', true)").fetchone()[0] in ("", None)  # LOCAL only
        session_user = conn.execute("SELECT session_user").fetchone()[0]
    with connection(seeded_db) as conn:
        rows = conn.execute("SELECT table_name, operation, changed_by, db_role FROM app.audit_log"
                            " ORDER BY occurred_at, id").fetchall()
    assert rows == [("app.payments", "INSERT", "user:23", session_user),
                    ("app.users", "UPDATE", session_user, session_user)]
    assert session_user != "user:23"


def test_duplicate_tenant_and_order_id_on_another_day_is_rejected(seeded_db: str) -> None:
    with connection(seeded_db) as conn:
        keys, orders = conn.execute(
            "SELECT (SELECT count(*) FROM app.order_keys), (SELECT count(*) FROM app.orders)").fetchone()
        assert keys == orders > 0  # the seed filled it
        tenant, order, created = conn.execute(
            "SELECT tenant_id, id, created_at FROM app.orders ORDER BY id LIMIT 1").fetchone()
        with pytest.raises(psycopg.errors.UniqueViolation, match="order_keys_pkey"), conn.transaction():
            # The same (tenant_id, id) ten days later: another partition key, so orders_pkey alone would accept it.
            conn.execute("INSERT INTO app.orders (id, tenant_id, user_id, total, created_at) OVERRIDING SYSTEM VALUE"
                         " VALUES (%s, %s, %s, 0, %s::timestamptz - interval '10 days')",
                         [order, tenant, tenant, created])
        # An order (no lines yet, total 0) moved to another month keeps its one key; deleting it frees the key.
        with conn.transaction():
            new, created = conn.execute("INSERT INTO app.orders (tenant_id, user_id, total) VALUES (%s, %s, 0)"
                                        " RETURNING id, created_at", [tenant, tenant]).fetchone()
        with conn.transaction():
            conn.execute("UPDATE app.orders SET created_at = created_at - interval '40 days' WHERE id = %s", [new])
        moved = conn.execute("SELECT order_created_at FROM app.order_keys WHERE order_id = %s", [new]).fetchall()
        assert moved == [(created - timedelta(days=40),)]
        with conn.transaction():
            conn.execute("DELETE FROM app.orders WHERE id = %s", [new])
        assert conn.execute("SELECT count(*) FROM app.order_keys WHERE order_id = %s", [new]).fetchone()[0] == 0


def test_an_orders_month_cannot_be_detached_while_lines_reference_it(seeded_db: str) -> None:
    """What docs/data-model.md says: order_items and payments are not partitioned, so archiving a month means
    deleting its lines and payments first; DETACH refuses while they exist."""
    with connection(seeded_db) as conn:
        month = conn.execute("SELECT 'orders_' || to_char(min(created_at) AT TIME ZONE 'UTC', 'YYYY_MM')"
                             " FROM app.orders").fetchone()[0]
        with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
            conn.execute(sql.SQL("ALTER TABLE app.orders DETACH PARTITION {}").format(sql.Identifier("app", month)))
        kinds = conn.execute("SELECT relname, relkind FROM pg_class WHERE oid IN"
                             " ('app.order_items'::regclass, 'app.payments'::regclass)").fetchall()
        assert sorted(kinds) == [("order_items", "r"), ("payments", "r")]


def test_each_v2_migration_passes_the_rehearsal_gate_on_seeded_data(pg_server, fresh_db: str, tmp_path: Path) -> None:
    """V1-V8 and the seed (scale 1, about 100,000 orders), then V9 onward rehearsed: locks held, rewrites, time."""
    old = tmp_path / "v1-v8"
    old.mkdir()
    for path in MIGRATIONS_DIR.glob("V*.sql"):
        if int(path.name[1:].split("__")[0]) <= 8:
            shutil.copy(path, old / path.name)
    Migrator(fresh_db, old).apply()
    seed(fresh_db, 1)
    observed, _replay = rehearse_on(fresh_db, MIGRATIONS_DIR)
    report = "\n".join(
        f"{m.script}: {m.seconds:.2f} s, locks "
        + (", ".join(f"{lk.relation} {lk.label} {lk.held_seconds:.2f} s" for lk in m.locks if lk.kind == "table")
           or "none")
        + ", rewrites " + (", ".join(r.relation for r in m.rewrites) or "none")
        + f", {'UNSAFE: ' + '; '.join(m.problems) if m.problems else 'safe'}"
        for m in observed)
    print("\n" + report)
    assert [m.script for m in observed] == V2_FILES
    assert all(m.error is None and m.safe for m in observed), report
    assert not any(r.kind == "table" for m in observed for r in m.rewrites), report
    with connection(fresh_db) as conn:
        keys, orders = conn.execute(
            "SELECT (SELECT count(*) FROM app.order_keys), (SELECT count(*) FROM app.orders)").fetchone()
        assert keys == orders >= 100_000

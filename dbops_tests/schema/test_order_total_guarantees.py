"""V11's rule, orders.total = the sum of its lines at commit, for every client and every way of changing them: lines
of later statements, updates, deletes, moves between orders, savepoints, immediate mode, another client's lines."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dbops.pg.connect import connection
from dbops.seed import seed

TENANT = 3
USER = 23
PRODUCTS = (3, 23)  # tenant 3's first two products at any seed scale (id = 20 * k + tenant)


@pytest.fixture
def seeded_db(migrated_db: str) -> str:
    seed(migrated_db, 0.05)
    return migrated_db


def app_conn(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url)
    conn.execute("SET ROLE dbops_app_rw")
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(TENANT)])
    conn.commit()
    return conn


def new_order(conn: psycopg.Connection, total: str) -> tuple[int, Any]:
    row = conn.execute("INSERT INTO app.orders (tenant_id, user_id, total, currency) VALUES (%s, %s, %s, 'XTS')"
                       " RETURNING id, created_at", [TENANT, USER, total]).fetchone()
    assert row is not None
    return row[0], row[1]


def add_line(conn: psycopg.Connection, order: tuple[int, Any], product: int, quantity: int, price: str) -> None:
    conn.execute("INSERT INTO app.order_items (tenant_id, order_id, order_created_at, product_id, quantity, unit_price)"
                 " VALUES (%s, %s, %s, %s, %s, %s)", [TENANT, order[0], order[1], product, quantity, price])


def committed_order(url: str, total: str, lines: list[tuple[int, int, str]]) -> tuple[int, Any]:
    with app_conn(url) as conn:
        order = new_order(conn, total)
        for line in lines:
            add_line(conn, order, *line)
        conn.commit()
    return order


def assert_commit_fails(conn: psycopg.Connection, order: int) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match=f"order {order} of tenant {TENANT}: total"):
        conn.commit()
    conn.rollback()


def stored_total(url: str, order: tuple[int, Any]) -> Any:
    with connection(url) as conn:
        return conn.execute("SELECT total FROM app.orders WHERE tenant_id = %s AND id = %s AND created_at = %s",
                            [TENANT, *order]).fetchone()[0]


def test_immediate_mode_still_checks_lines_added_after_the_order(seeded_db: str) -> None:
    """SET CONSTRAINTS ... IMMEDIATE checks the order when it is inserted; its later lines are checked too (at their
    own event), so an order that passed empty cannot collect lines that break its total."""
    with connection(seeded_db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(TENANT)])
        order = conn.execute(
            "INSERT INTO app.orders (tenant_id, user_id, status, total, currency) VALUES (%s, %s, 'paid', 0, 'XTS')"
            " RETURNING id, created_at", [TENANT, USER]).fetchone()
        conn.execute(
            "INSERT INTO app.order_items (tenant_id, order_id, order_created_at, product_id, quantity, unit_price)"
            " VALUES (%s, %s, %s, %s, 1, 10)", [TENANT, order[0], order[1], PRODUCTS[0]])
        conn.commit()


def test_new_order_is_checked_at_commit_with_lines_of_later_statements(seeded_db: str) -> None:
    with app_conn(seeded_db) as conn:
        order = new_order(conn, "25.00")
        add_line(conn, order, PRODUCTS[0], 2, "10.00")
        add_line(conn, order, PRODUCTS[1], 1, "5.00")
        conn.commit()  # consistent: accepted
        assert stored_total(seeded_db, order) == 25
        bad = new_order(conn, "25.00")
        add_line(conn, bad, PRODUCTS[0], 2, "10.00")  # 20 <> 25: the order's own event catches it
        assert_commit_fails(conn, bad[0])
        empty = new_order(conn, "7.00")  # no lines at all
        assert_commit_fails(conn, empty[0])
        # The workload's shape: order and lines in one statement, the total computed from the lines.
        conn.execute(
            "WITH ord AS (INSERT INTO app.orders (tenant_id, user_id, total, currency) VALUES (%s, %s, 7.00, 'XTS')"
            " RETURNING tenant_id, id, created_at) INSERT INTO app.order_items (tenant_id, order_id,"
            " order_created_at, product_id, quantity, unit_price) SELECT tenant_id, id, created_at, %s, 1, 7.00"
            " FROM ord", [TENANT, USER, PRODUCTS[0]])
        conn.commit()
        conn.execute(
            "WITH ord AS (INSERT INTO app.orders (tenant_id, user_id, total, currency) VALUES (%s, %s, 9.00, 'XTS')"
            " RETURNING tenant_id, id, created_at) INSERT INTO app.order_items (tenant_id, order_id,"
            " order_created_at, product_id, quantity, unit_price) SELECT tenant_id, id, created_at, %s, 1, 7.00"
            " FROM ord", [TENANT, USER, PRODUCTS[0]])
        with pytest.raises(psycopg.errors.CheckViolation, match="total 9.00 is not the sum of its lines"):
            conn.commit()
        conn.rollback()


def test_lines_of_an_older_order_are_checked(seeded_db: str) -> None:
    order = committed_order(seeded_db, "25.00", [(PRODUCTS[0], 2, "10.00"), (PRODUCTS[1], 1, "5.00")])
    with app_conn(seeded_db) as conn:
        add_line(conn, order, PRODUCTS[0], 1, "1.00")  # a line added in a later transaction
        assert_commit_fails(conn, order[0])
        conn.execute("UPDATE app.order_items SET quantity = 3 WHERE order_id = %s AND product_id = %s",
                     [order[0], PRODUCTS[0]])
        assert_commit_fails(conn, order[0])
        conn.execute("DELETE FROM app.order_items WHERE order_id = %s AND product_id = %s", [order[0], PRODUCTS[1]])
        assert_commit_fails(conn, order[0])
        # A status change of the order creates a new row version of it in this transaction: its lines are still
        # checked (the skip looks at the order's key row, which a status change does not rewrite).
        conn.execute("UPDATE app.orders SET status = 'paid' WHERE id = %s", [order[0]])
        add_line(conn, order, PRODUCTS[0], 1, "1.00")
        assert_commit_fails(conn, order[0])
        # Lines and total changed together: accepted.
        conn.execute("UPDATE app.order_items SET quantity = 3 WHERE order_id = %s AND product_id = %s",
                     [order[0], PRODUCTS[0]])
        conn.execute("UPDATE app.orders SET total = 35.00 WHERE id = %s", [order[0]])
        conn.commit()
    assert stored_total(seeded_db, order) == 35


def test_a_line_moved_between_orders_checks_both(seeded_db: str) -> None:
    a = committed_order(seeded_db, "25.00", [(PRODUCTS[0], 2, "10.00"), (PRODUCTS[1], 1, "5.00")])
    b = committed_order(seeded_db, "5.00", [(PRODUCTS[1], 1, "5.00")])
    move = ("UPDATE app.order_items SET order_id = %s, order_created_at = %s"
            " WHERE order_id = %s AND order_created_at = %s AND product_id = %s")
    with app_conn(seeded_db) as conn:
        conn.execute(move, [b[0], b[1], a[0], a[1], PRODUCTS[0]])
        conn.execute("UPDATE app.orders SET total = 25.00 WHERE id = %s", [b[0]])  # b agrees, a does not
        assert_commit_fails(conn, a[0])
        conn.execute(move, [b[0], b[1], a[0], a[1], PRODUCTS[0]])
        conn.execute("UPDATE app.orders SET total = 5.00 WHERE id = %s", [a[0]])  # a agrees, b does not
        assert_commit_fails(conn, b[0])
        conn.execute(move, [b[0], b[1], a[0], a[1], PRODUCTS[0]])
        conn.execute("UPDATE app.orders SET total = 5.00 WHERE id = %s", [a[0]])
        conn.execute("UPDATE app.orders SET total = 25.00 WHERE id = %s", [b[0]])
        conn.commit()
    assert (stored_total(seeded_db, a), stored_total(seeded_db, b)) == (5, 25)
    # Moved into an order this transaction inserted: the old order is still checked.
    with app_conn(seeded_db) as conn:
        fresh = new_order(conn, "20.00")
        conn.execute(move, [fresh[0], fresh[1], b[0], b[1], PRODUCTS[0]])
        assert_commit_fails(conn, b[0])


def test_savepoints_only_make_it_check(seeded_db: str) -> None:
    with app_conn(seeded_db) as conn:
        # The order inserted inside a (released) savepoint: its rows carry the subtransaction's xid, so a line
        # added afterwards checks by itself; the order's own event catches it as well.
        conn.execute("SAVEPOINT s")
        order = new_order(conn, "10.00")
        conn.execute("RELEASE SAVEPOINT s")
        add_line(conn, order, PRODUCTS[0], 1, "4.00")
        assert_commit_fails(conn, order[0])
        # The order at top level, its lines inside savepoints, one rolled back: checked on the lines that stayed.
        order = new_order(conn, "10.00")
        conn.execute("SAVEPOINT s")
        add_line(conn, order, PRODUCTS[0], 1, "10.00")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.execute("SAVEPOINT t")
        add_line(conn, order, PRODUCTS[1], 1, "4.00")
        conn.execute("RELEASE SAVEPOINT t")
        assert_commit_fails(conn, order[0])
        order = new_order(conn, "10.00")
        conn.execute("SAVEPOINT s")
        add_line(conn, order, PRODUCTS[0], 1, "3.00")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        add_line(conn, order, PRODUCTS[1], 1, "10.00")
        conn.commit()
        assert stored_total(seeded_db, order) == 10
        # An order inserted in a savepoint that was rolled back is gone, with its lines: nothing to check.
        conn.execute("SAVEPOINT s")
        gone = new_order(conn, "10.00")
        add_line(conn, gone, PRODUCTS[0], 1, "1.00")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.commit()
        with connection(seeded_db) as admin:
            assert admin.execute("SELECT count(*) FROM app.orders WHERE id = %s", [gone[0]]).fetchone()[0] == 0


def test_another_clients_lines_are_checked(seeded_db: str) -> None:
    order = committed_order(seeded_db, "10.00", [(PRODUCTS[0], 1, "10.00")])
    with app_conn(seeded_db) as first, app_conn(seeded_db) as second:
        new_order(first, "0.00")  # the first client's own transaction is open, with an xid of its own
        add_line(second, order, PRODUCTS[1], 1, "2.00")
        assert_commit_fails(second, order[0])
        first.rollback()
    # An order without its key row (a bulk load with session_replication_role = replica that forgot order_keys)
    # is checked the slow way, never skipped.
    with connection(seeded_db) as admin:
        admin.execute("DELETE FROM app.order_keys WHERE tenant_id = %s AND order_id = %s", [TENANT, order[0]])
        admin.commit()
    with app_conn(seeded_db) as conn:
        add_line(conn, order, PRODUCTS[1], 1, "2.00")
        assert_commit_fails(conn, order[0])

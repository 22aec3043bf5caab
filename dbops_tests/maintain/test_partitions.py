"""Partition maintenance on real PostgreSQL: the reference schema (app.orders, app.audit_log) and the two team
databases (library: lending.loans monthly with a DEFAULT; telemetry: iot.readings daily on a timestamptz)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from dbops.maintain.partitions import (
    PartitionError,
    add_months,
    maintain,
    move_defaults,
    status,
)
from dbops.pg.connect import connection
from dbops.settings.model import PartitionSettings

DEFAULTS = PartitionSettings(tables=(), ahead_daily=14, ahead_monthly=3, lock_timeout_s=2.0, retention_days=None,
                             drop_detached=False)
REF_SCHEMAS = ("app",)


def partitions_of(url: str, table: str) -> dict[str, tuple[str, str]]:
    """partition name -> (owner, bound) of ``table``."""
    with connection(url) as conn:
        rows = conn.execute("SELECT c.relname, pg_get_userbyid(c.relowner), pg_get_expr(c.relpartbound, c.oid) "
                            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                            "WHERE i.inhparent = %s::regclass", (table,)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def acl(url: str, table: str) -> set[tuple[str, str]]:
    with connection(url) as conn:
        rows = conn.execute("SELECT pg_get_userbyid(a.grantee), a.privilege_type FROM pg_class c, "
                            "aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a "
                            "WHERE c.oid = %s::regclass AND a.grantee <> c.relowner", (table,)).fetchall()
    return {(r[0], r[1]) for r in rows}


def server_today(url: str) -> date:
    with connection(url) as conn:
        return conn.execute("SELECT current_date").fetchone()[0]  # type: ignore[index]


def this_month() -> date:
    return datetime.now(UTC).date().replace(day=1)


def drop_months_from(url: str, table: str, first: date) -> list[str]:
    """Drop ``table``'s monthly partitions from ``first`` on (time passing: the months V5 made run out)."""
    dropped = []
    with connection(url) as conn:
        for name in partitions_of(url, table):
            if name.endswith("_default"):
                continue
            y, m = name.rsplit("_", 2)[-2:]
            if date(int(y), int(m), 1) >= first:
                ident = sql.Identifier("app", name)
                conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(*table.split(".")),
                                                                                  ident))
                conn.execute(sql.SQL("DROP TABLE {}").format(ident))
                dropped.append(name)
    return sorted(dropped)


def test_reference_partitions_created_ahead_idempotent_owned_and_granted(migrated_db: str) -> None:
    url = migrated_db
    month = this_month()
    dropped = drop_months_from(url, "app.orders", add_months(month, 2))  # V5's months 2..4 ahead are gone
    assert dropped
    with connection(url) as conn:
        report = maintain(conn, REF_SCHEMAS, DEFAULTS)
    by_name = {t.qualified: t for t in report.tables}
    assert set(by_name) == {"app.orders", "app.audit_log"}
    orders = by_name["app.orders"]
    assert (orders.period, orders.style, orders.timezone) == ("monthly", "orders_{}", "Etc/UTC")  # the server's zone
    expected = [f"app.orders_{add_months(month, k):%Y_%m}" for k in (2, 3)]
    assert orders.created == expected  # months 2 and 3 ahead, in V5's style; month 4 is not wanted with 3 ahead
    assert by_name["app.audit_log"].created == []  # V5 made four months ahead: enough
    assert all(t.ahead >= 3 for t in report.tables) and not report.behind()
    assert orders.last_bound() == add_months(month, 4)
    parts = partitions_of(url, "app.orders")
    for name in expected:
        short = name.split(".")[1]
        assert parts[short][0] == "dbops_owner" == partitions_of(url, "app.orders")[f"orders_{month:%Y_%m}"][0]
        assert f"FROM ('{add_months(month, 2 if short == expected[0].split('.')[1] else 3)}" in parts[short][1]
        assert acl(url, f"app.{short}") == acl(url, f"app.orders_{month:%Y_%m}")
    with connection(url) as conn:
        again = maintain(conn, REF_SCHEMAS, DEFAULTS)
    assert again.created == [] and not again.behind()
    # more months wanted: created after the last one, still V5's style and owner
    with connection(url) as conn:
        more = maintain(conn, REF_SCHEMAS, replace(DEFAULTS, ahead_monthly=6))
    assert [p for p in more.created if p.startswith("app.orders_")] == [
        f"app.orders_{add_months(month, k):%Y_%m}" for k in (4, 5, 6)]
    assert [p for p in more.created if p.startswith("app.audit_log_")] == [
        f"app.audit_log_{add_months(month, k):%Y_%m}" for k in (5, 6)]
    assert {partitions_of(url, "app.audit_log")[p.split(".")[1]][0] for p in more.created if "audit" in p} == {
        "dbops_owner"}


def insert_future_orders(url: str, when: datetime, count: int) -> None:
    """``count`` orders (with an item each) from ``when`` on, hourly: in a month without a partition they land in
    orders_default."""
    with connection(url) as conn:
        tenant = conn.execute("INSERT INTO app.tenants (slug, name) VALUES ('t1', 'T1') RETURNING id").fetchone()[0]
        user = conn.execute("INSERT INTO app.users (tenant_id, email, full_name, password_hash) VALUES "
                            "(%s, 'a@example.org', 'A', repeat('x', 30)) RETURNING id", (tenant,)).fetchone()[0]
        product = conn.execute("INSERT INTO app.products (tenant_id, sku, name, price) VALUES (%s, 'S1', 'P', 2) "
                               "RETURNING id", (tenant,)).fetchone()[0]
        for i in range(count):
            at = when + timedelta(hours=i)
            with conn.transaction():  # the reference checks an order's total against its lines at commit
                add_order(conn, tenant, user, product, at)


def add_order(conn: psycopg.Connection, tenant: int, user: int, product: int, at: datetime) -> None:
    order = conn.execute("INSERT INTO app.orders (tenant_id, user_id, created_at, status, total) "
                         "VALUES (%s, %s, %s, 'paid', 2) RETURNING id", (tenant, user, at)).fetchone()[0]
    conn.execute("INSERT INTO app.order_items (tenant_id, order_id, order_created_at, product_id, quantity, "
                 "unit_price) VALUES (%s, %s, %s, %s, 1, 2)", (tenant, order, at, product))


def count(url: str, query: str) -> int:
    with connection(url) as conn:
        return conn.execute(query).fetchone()[0]  # type: ignore[index]


def test_rows_in_default_detected_and_moved(migrated_db: str) -> None:
    url = migrated_db
    far = add_months(this_month(), 8)  # V5 made partitions up to 4 months ahead: this month has none
    when = datetime(far.year, far.month, 1, 5, tzinfo=UTC)
    insert_future_orders(url, when, 30)
    assert count(url, "SELECT count(*) FROM app.orders_default") == 30
    with connection(url) as conn:
        report = maintain(conn, REF_SCHEMAS, DEFAULTS)
    full = report.defaults_with_rows()
    assert [(t.qualified, t.default_rows) for t in full] == [("app.orders", 30)]
    assert f"from {when:%Y-%m-%d}" in full[0].default_range
    items_before = count(url, "SELECT count(*) FROM app.order_items")
    sums_before = count(url, "SELECT sum(hashtext(o::text)) FROM app.orders o")
    audit_before = count(url, "SELECT count(*) FROM app.audit_log")
    with connection(url) as conn:
        tables, moved = move_defaults(conn, REF_SCHEMAS, DEFAULTS, "app.orders")
    assert [(m.table, m.rows, m.partitions, m.left) for m in moved] == [
        ("app.orders", 30, [f"app.orders_{far:%Y_%m}"], 0)]
    assert count(url, "SELECT count(*) FROM app.orders_default") == 0
    assert count(url, f"SELECT count(*) FROM app.orders_{far:%Y_%m}") == 30  # noqa: S608 - a name of ours
    assert count(url, "SELECT count(*) FROM app.order_items") == items_before  # no ON DELETE CASCADE fired
    assert count(url, "SELECT sum(hashtext(o::text)) FROM app.orders o") == sums_before
    assert count(url, "SELECT count(*) FROM app.order_items i LEFT JOIN app.orders o ON (o.tenant_id, o.id, "
                      "o.created_at) = (i.tenant_id, i.order_id, i.order_created_at) WHERE o.id IS NULL") == 0
    assert partitions_of(url, "app.orders")[f"orders_{far:%Y_%m}"][0] == "dbops_owner"
    assert count(url, "SELECT count(*) FROM app.audit_log") == audit_before  # a move is no change to audit
    with connection(url) as conn:
        after = status(conn, REF_SCHEMAS, DEFAULTS)
    assert after.defaults_with_rows() == [] and len(after.with_default()) == 2
    with connection(url) as conn:  # nothing left to move
        assert move_defaults(conn, REF_SCHEMAS, DEFAULTS)[1] == []


def test_move_default_rolls_back_on_error(migrated_db: str) -> None:
    url = migrated_db
    far = add_months(this_month(), 9)
    insert_future_orders(url, datetime(far.year, far.month, 2, tzinfo=UTC), 5)
    with connection(url) as conn:  # a table already has the name the new partition needs
        conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier("app", f"orders_{far:%Y_%m}")))
    with connection(url) as conn, pytest.raises(PartitionError, match="nothing was changed"):
        move_defaults(conn, REF_SCHEMAS, DEFAULTS, "app.orders")
    assert count(url, "SELECT count(*) FROM app.orders_default") == 5
    assert count(url, "SELECT count(*) FROM app.order_items") == 5
    assert "orders_default" in partitions_of(url, "app.orders")


def test_lock_timeout_skips_the_busy_table(migrated_db: str) -> None:
    url = migrated_db
    drop_months_from(url, "app.orders", add_months(this_month(), 3))
    drop_months_from(url, "app.audit_log", add_months(this_month(), 3))
    holder = psycopg.connect(url)
    try:
        holder.execute("LOCK TABLE app.orders IN ACCESS SHARE MODE")  # any reader blocks CREATE ... PARTITION OF
        started = time.monotonic()
        with connection(url) as conn:
            report = maintain(conn, REF_SCHEMAS, replace(DEFAULTS, lock_timeout_s=0.5))
        took = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    by_name = {t.qualified: t for t in report.tables}
    orders, audit = by_name["app.orders"], by_name["app.audit_log"]
    assert orders.created == [] and any("lock timeout (0.5 s)" in s and "retried" in s for s in orders.skipped)
    assert audit.created == [f"app.audit_log_{add_months(this_month(), 3):%Y_%m}"]  # the other table is done
    assert report.behind() == [orders]
    assert took < 10
    with connection(url) as conn:  # the next run, the lock gone, catches up
        assert maintain(conn, REF_SCHEMAS, DEFAULTS).created == [f"app.orders_{add_months(this_month(), 3):%Y_%m}"]


def test_unknown_style_period_and_key_are_told_apart(fresh_db: str) -> None:
    url = fresh_db
    today = server_today(url)
    with connection(url) as conn:
        conn.execute("CREATE TABLE ev (at timestamp NOT NULL) PARTITION BY RANGE (at)")
        for i, name in enumerate(("ev_first", "ev_second", "ev_third")):  # daily, no date in the names
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF ev FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(name), sql.Literal(str(today + timedelta(days=i - 2))),
                sql.Literal(str(today + timedelta(days=i - 1)))))
        conn.execute("CREATE TABLE weekly (d date NOT NULL) PARTITION BY RANGE (d)")
        conn.execute(sql.SQL("CREATE TABLE weekly_1 PARTITION OF weekly FOR VALUES FROM ({}) TO ({})").format(
            sql.Literal(str(today)), sql.Literal(str(today + timedelta(days=7)))))
        conn.execute("CREATE TABLE numbered (n int NOT NULL) PARTITION BY RANGE (n)")
        conn.execute("CREATE TABLE numbered_1 PARTITION OF numbered FOR VALUES FROM (0) TO (10)")
        report = maintain(conn, (), replace(DEFAULTS, ahead_daily=3))
    by_name = {t.qualified: t for t in report.tables}
    assert set(by_name) == {"public.ev", "public.weekly"}  # an integer key is not looked at unless listed
    assert by_name["public.ev"].created == [f"public.ev_p{today + timedelta(days=d):%Y%m%d}" for d in (1, 2, 3)]
    assert by_name["public.ev"].ahead == 3
    weekly = by_name["public.weekly"]
    assert not weekly.maintained and "neither all daily nor all monthly" in weekly.reason and weekly.created == []
    with connection(url) as conn:
        listed = status(conn, (), replace(DEFAULTS, tables=("public.numbered", "public.nope")))
    reasons = {t.qualified: t.reason for t in listed.tables}
    assert reasons == {"public.numbered": "its partition key n is integer, not a date or timestamp",
                       "public.nope": "no such partitioned table"}
    assert "not maintained" in listed.render()

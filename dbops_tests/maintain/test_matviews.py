"""Materialized views refreshed on real PostgreSQL: the reference's app.daily_sales (CONCURRENTLY, rows following
the orders), views of the two team databases (the right method each), a busy view skipped without a hang, who may
refresh, and how the recorded refresh time makes a view stale."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from psycopg import sql

from dbops.errors import ConfigError
from dbops.maintain.matviews import (
    CONCURRENTLY,
    FAILED,
    PLAIN,
    REFRESHED,
    SKIPPED,
    MatviewState,
    assess,
    find_views,
    refresh_view,
    refresh_views,
)
from dbops.pg.connect import connection, parse_url, server_version_num
from dbops_tests.foreign import ForeignSchema

# Per team database: a view with a unique index CONCURRENTLY can use, one without any, and one whose only unique
# index PostgreSQL refuses for CONCURRENTLY (a WHERE clause, an expression).
TEAM_VIEWS = {
    "library": """
        CREATE MATERIALIZED VIEW lending.loans_per_day AS
            SELECT loaned_on AS day, count(*) AS loans FROM lending.loans GROUP BY loaned_on;
        CREATE UNIQUE INDEX loans_per_day_key ON lending.loans_per_day (day);
        CREATE MATERIALIZED VIEW lending.loans_per_member AS
            SELECT member_id, count(*) AS loans FROM lending.loans GROUP BY member_id;
        CREATE MATERIALIZED VIEW public.books_out AS
            SELECT book_id, count(*) AS out FROM lending.loans WHERE status = 'out' GROUP BY book_id;
        CREATE UNIQUE INDEX books_out_partial_key ON public.books_out (book_id) WHERE out > 0;
    """,
    "telemetry": """
        CREATE MATERIALIZED VIEW iot.daily_averages AS
            SELECT device_id, (recorded_at AT TIME ZONE 'UTC')::date AS day, avg(value) AS value, count(*) AS readings
            FROM iot.readings GROUP BY 1, 2;
        CREATE UNIQUE INDEX daily_averages_key ON iot.daily_averages (device_id, day);
        CREATE MATERIALIZED VIEW iot.site_daily AS
            SELECT d.site_code, (r.recorded_at AT TIME ZONE 'UTC')::date AS day, avg(r.value) AS value
            FROM iot.readings AS r JOIN iot.devices AS d ON d.id = r.device_id GROUP BY 1, 2;
        CREATE MATERIALIZED VIEW public.device_count AS
            SELECT site_code, count(*) AS devices FROM iot.devices GROUP BY site_code;
        CREATE UNIQUE INDEX device_count_lower_key ON public.device_count (lower(site_code));
    """,
}
# The expected method of each view, and the data change that a refresh must show.
TEAM_EXPECTED = {
    "library": {"lending.loans_per_day": CONCURRENTLY, "lending.loans_per_member": PLAIN, "public.books_out": PLAIN},
    "telemetry": {"iot.daily_averages": CONCURRENTLY, "iot.site_daily": PLAIN, "public.device_count": PLAIN},
}
TEAM_NEW_ROWS = {
    "library": "INSERT INTO lending.loans (loaned_on, member_id, book_id, due_on) "
               "VALUES (current_date + 1, 1, 1, current_date + 22)",
    "telemetry": "INSERT INTO iot.readings (device_id, recorded_at, value) VALUES (1, current_date + 1, 30)",
}


def refreshed_row_count(url: str, view: str) -> int:
    with connection(url) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*view.split(".")))).fetchone()[0]


def test_daily_sales_refreshed_concurrently_and_follows_new_orders(seeded_small: str, tmp_path: Path) -> None:
    url = seeded_small
    with connection(url) as conn:
        views = find_views(conn)
        assert [(v.qualified, v.owner, v.method, v.unique_index) for v in views] == [
            ("app.daily_sales", "dbops_owner", CONCURRENTLY, "daily_sales_tenant_day_key")]
        tenant, user = conn.execute("SELECT tenant_id, id FROM app.users ORDER BY tenant_id, id LIMIT 1").fetchone()
        day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)  # the seed stops at today: a day of its own
        key = (tenant, day)

        def sales() -> tuple[int, Decimal] | None:
            return conn.execute("SELECT orders, revenue FROM app.daily_sales WHERE tenant_id = %s AND day = %s",
                                key).fetchone()

        assert sales() is None
        product = conn.execute("SELECT id FROM app.products WHERE tenant_id = %s ORDER BY id LIMIT 1",
                               (tenant,)).fetchone()[0]
        for total in ("100.25", "23.50"):  # an order and its line in one transaction (its total is their sum)
            with conn.transaction():
                order, created = conn.execute(
                    "INSERT INTO app.orders (tenant_id, user_id, status, total, created_at) "
                    "VALUES (%s, %s, 'paid', %s, %s) RETURNING id, created_at",
                    (tenant, user, Decimal(total), dt.datetime.combine(day, dt.time(12), dt.UTC))).fetchone()
                conn.execute("INSERT INTO app.order_items (tenant_id, order_id, order_created_at, product_id, "
                             "quantity, unit_price) VALUES (%s, %s, %s, %s, 1, %s)",
                             (tenant, order, created, product, Decimal(total)))
        assert sales() is None  # a materialized view: nothing changes before the refresh

        state = MatviewState.of(tmp_path / "home", "dbops", "ref")
        [result] = refresh_views(conn, views, lock_timeout_s=1, state=state)
        assert result.status == REFRESHED and result.method == CONCURRENTLY, result.reason
        assert sales() == (2, Decimal("123.75"))
        assert result.rows == conn.execute("SELECT count(*) FROM app.daily_sales").fetchone()[0] > 0
        assert result.bytes == conn.execute("SELECT pg_total_relation_size('app.daily_sales')").fetchone()[0] > 0
        assert result.seconds > 0 and result.as_role == parse_url(url).user
        print(f"\napp.daily_sales at seed scale 0.05: {result.rows} rows, {result.bytes} bytes, "
              f"CONCURRENTLY in {result.seconds:.3f} s")

    recorded = json.loads(state.path.read_text())["views"]["app.daily_sales"]
    assert recorded["method"] == CONCURRENTLY and recorded["last_status"] == REFRESHED
    assert recorded["oid"] == views[0].oid and recorded["rows"] == result.rows
    age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(recorded["refreshed_at"])
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=1)
    assert oct(state.path.stat().st_mode & 0o777) == "0o600"


def test_unpopulated_view_gets_a_plain_refresh_first(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        conn.execute("REFRESH MATERIALIZED VIEW app.daily_sales WITH NO DATA")
        [view] = find_views(conn, views=["app.daily_sales"])
        assert not view.populated and view.method == PLAIN and "not populated" in view.why
        result = refresh_view(conn, view, lock_timeout_s=1)
        assert result.status == REFRESHED and result.method == PLAIN
        [again] = find_views(conn, views=["app.daily_sales"])
        assert again.populated and again.method == CONCURRENTLY


def test_configured_name_that_is_no_materialized_view_stops_before_anything(migrated_db: str) -> None:
    with connection(migrated_db) as conn, pytest.raises(ConfigError, match=r"app\.daily_sales_v.*matviews\.views"):
        find_views(conn, views=["app.daily_sales", "app.daily_sales_v"])


def test_team_views_get_the_right_method(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    expected = TEAM_EXPECTED[schema.name]
    with connection(url) as conn:
        assert find_views(conn, schemas=schema.schemas) == []
        conn.execute(TEAM_VIEWS[schema.name])
        views = find_views(conn, schemas=schema.schemas)
        assert {v.qualified: v.method for v in views} == expected
        assert {v.qualified for v in find_views(conn, schemas=("public",))} == {
            v for v in expected if v.startswith("public.")}
        refusals = {v.qualified: v.why for v in views if v.unique_indexes and not v.unique_index}
        assert len(refusals) == 1 and "WHERE clause, an expression" in next(iter(refusals.values()))

        before = {v: refreshed_row_count(url, v) for v in expected}
        conn.execute(TEAM_NEW_ROWS[schema.name])
        state = MatviewState.of(tmp_path / "home", schema.name)
        results = refresh_views(conn, views, lock_timeout_s=1, state=state)
    assert {r.view: (r.status, r.method) for r in results} == {v: (REFRESHED, m) for v, m in expected.items()}, [
        r.reason for r in results]
    for r in results:
        assert r.rows == refreshed_row_count(url, r.view) and r.bytes and r.bytes > 0
    per_day = next(v for v, m in expected.items() if m == CONCURRENTLY)
    assert refreshed_row_count(url, per_day) == before[per_day] + 1  # tomorrow's new row, by CONCURRENTLY
    report = assess(views, state.load(), max_age_hours=2)
    assert report.checked == 3 and report.bad == []


@pytest.fixture
def plain_and_unique(migrated_db: str) -> str:
    """The reference schema with a second materialized view that has no unique index."""
    with connection(migrated_db) as conn:
        conn.execute("SET ROLE dbops_owner")
        conn.execute("CREATE MATERIALIZED VIEW app.tenant_names AS SELECT id, name FROM app.tenants")
    return migrated_db


def test_busy_view_is_skipped_with_the_holder_and_no_hang(plain_and_unique: str, tmp_path: Path) -> None:
    url = plain_and_unique
    state = MatviewState.of(tmp_path / "home", "dbops")
    with connection(url) as conn, connection(url, autocommit=False) as reader:
        views = {v.qualified: v for v in find_views(conn)}
        assert {k: v.method for k, v in views.items()} == {"app.daily_sales": CONCURRENTLY,
                                                            "app.tenant_names": PLAIN}
        # A reader in an open transaction: its ACCESS SHARE lock blocks a plain refresh, not a concurrent one.
        reader.execute("SELECT count(*) FROM app.tenant_names").fetchone()
        reader.execute("SELECT count(*) FROM app.daily_sales").fetchone()
        started = time.monotonic()
        results = {r.view: r for r in refresh_views(conn, list(views.values()), lock_timeout_s=0.5, state=state)}
        elapsed = time.monotonic() - started
        assert results["app.daily_sales"].status == REFRESHED, results["app.daily_sales"].reason
        skipped = results["app.tenant_names"]
        assert skipped.status == SKIPPED and elapsed < 5
        assert skipped.reason.startswith("busy: no ACCESS EXCLUSIVE lock on app.tenant_names")
        assert f"pid {reader.info.backend_pid} " in skipped.reason and "AccessShareLock" in skipped.reason
        reader.rollback()

        # Another refresh in progress (its EXCLUSIVE lock held until it commits) blocks CONCURRENTLY.
        reader.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY app.daily_sales")
        started = time.monotonic()
        busy = refresh_view(conn, views["app.daily_sales"], lock_timeout_s=0.5)
        assert busy.status == SKIPPED and time.monotonic() - started < 5
        assert busy.reason.startswith("busy: no EXCLUSIVE lock on app.daily_sales") and "ExclusiveLock" in busy.reason
        reader.rollback()
        assert refresh_view(conn, views["app.tenant_names"], lock_timeout_s=0.5).status == REFRESHED

    recorded = state.load()
    assert recorded["app.tenant_names"]["last_status"] == SKIPPED and "refreshed_at" not in recorded["app.tenant_names"]
    report = {f.view: f for f in assess(list(views.values()), recorded, max_age_hours=2).views}
    assert report["app.daily_sales"].ok
    assert report["app.tenant_names"].stale and "never refreshed" in report["app.tenant_names"].reason


@pytest.fixture
def admin_role(migrated_db: str) -> Iterator[tuple[str, str]]:
    """A team admin that logs in (not a superuser, not the views' owner) and its URL."""
    name, password = f"mv_admin_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    database = parse_url(migrated_db).database
    with connection(migrated_db) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database),
                                                                           sql.Identifier(name)))
    yield name, f"postgresql://{name}:{password}@{parse_url(migrated_db).hostport}/{database}"
    with connection(migrated_db) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_who_may_refresh_the_owner_or_a_role_that_can_become_it(migrated_db: str,
                                                                 admin_role: tuple[str, str]) -> None:
    role, admin_url = admin_role
    with connection(admin_url) as conn:
        [view] = find_views(conn)
        refused = refresh_view(conn, view, lock_timeout_s=1)
        v17 = server_version_num(conn) >= 170000
    assert refused.status == FAILED and "\n" not in refused.reason
    assert refused.reason.startswith(f"{role} may not refresh app.daily_sales: only its owner dbops_owner can")
    assert f"fix: GRANT dbops_owner TO {role}" in refused.reason
    assert (f"GRANT MAINTAIN ON app.daily_sales TO {role}" in refused.reason) == v17

    with connection(migrated_db) as conn:  # a member that does not inherit: SET ROLE to the owner is needed
        if server_version_num(conn) >= 160000:
            conn.execute(sql.SQL("GRANT dbops_owner TO {} WITH INHERIT FALSE").format(sql.Identifier(role)))
        else:
            conn.execute(sql.SQL("ALTER ROLE {} NOINHERIT").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT dbops_owner TO {}").format(sql.Identifier(role)))
    with connection(admin_url) as conn:
        as_owner = refresh_view(conn, view, lock_timeout_s=1)
        assert conn.execute("SELECT current_user").fetchone()[0] == role  # SET LOCAL ended with the transaction
    assert as_owner.status == REFRESHED and as_owner.as_role == "dbops_owner", as_owner.reason
    assert as_owner.method == CONCURRENTLY and as_owner.rows == 0 and as_owner.bytes and as_owner.bytes > 0

    with connection(migrated_db) as conn:  # with the owner's privileges inherited it refreshes as itself
        if server_version_num(conn) >= 160000:
            conn.execute(sql.SQL("GRANT dbops_owner TO {} WITH INHERIT TRUE").format(sql.Identifier(role)))
        else:
            conn.execute(sql.SQL("ALTER ROLE {} INHERIT").format(sql.Identifier(role)))
    with connection(admin_url) as conn:
        direct = refresh_view(conn, view, lock_timeout_s=1)
    assert direct.status == REFRESHED and direct.as_role == role, direct.reason


def test_freshness_from_the_recorded_time(migrated_db: str, tmp_path: Path) -> None:
    state = MatviewState.of(tmp_path / "home", "dbops")
    with connection(migrated_db) as conn:
        views = find_views(conn)
        assert [f.reason for f in assess(views, state.load(), 2).views] == [
            "never refreshed by dbops (PostgreSQL keeps no refresh time): age unknown"]
        refresh_views(conn, views, state=state)
    assert assess(views, state.load(), 2).bad == []

    recorded = state.load()
    three_hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    recorded["app.daily_sales"]["refreshed_at"] = three_hours_ago.isoformat(timespec="seconds")
    state.save(recorded)
    [stale] = assess(views, state.load(), 2).views
    assert stale.stale and not stale.failed and 2.9 < stale.age_hours < 3.1
    assert stale.reason.startswith("refreshed 3.0 h ago, more than 2 h")
    assert assess(views, state.load(), 4).bad == []  # the same age within a wider bound

    recorded["app.daily_sales"].update(last_status=FAILED, last_reason="permission denied")
    state.save(recorded)
    [failed] = assess(views, state.load(), 4).views
    assert failed.failed and failed.reason == "last refresh failed: permission denied"

    recorded["app.daily_sales"] = {**recorded["app.daily_sales"], "oid": 1, "last_status": REFRESHED}
    state.save(recorded)  # a view of that name, dropped and created again: the record is not about it
    [unknown] = assess(views, state.load(), 4).views
    assert unknown.age_hours is None and unknown.stale

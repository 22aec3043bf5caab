"""Deterministic seed data for the reference schema, generated inside PostgreSQL.

Everything is computed from ``generate_series`` indexes through a seeded hash (``hashint8extended``), never
``random()``, so two databases seeded at the same scale on the same day hold identical rows. Dates are anchored at
today's UTC midnight and spread over the previous 60 days. Scale 1 is about 100,000 orders; the whole load is one
transaction, so a failure leaves the database as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.numeric import Int8

from dbops.errors import DbopsError
from dbops.pg.connect import connection

TENANTS = 20
DAYS = 60
SEEDED_TABLES = ("tenants", "users", "products", "inventory", "orders", "order_items", "payments")


class SeedError(DbopsError):
    """The database cannot be seeded as asked."""


@dataclass
class SeedResult:
    scale: float
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    triggers_skipped: bool = False

    def render(self) -> str:
        width = max(len(t) for t in self.rows) if self.rows else 0
        lines = [f"{table.ljust(width)}  {count:>10,}" for table, count in self.rows.items()]
        lines.append(f"seeded scale {self.scale:g} in {self.seconds:.1f} s"
                     + (" (audit triggers skipped during the bulk load)" if self.triggers_skipped else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class Sizes:
    tenants: int
    users_per_tenant: int
    products_per_tenant: int
    orders: int

    @classmethod
    def for_scale(cls, scale: float) -> Sizes:
        if not scale > 0:
            raise SeedError(f"scale must be positive, got {scale}", "use e.g. --scale 1 (about 100,000 orders)")
        return cls(
            tenants=TENANTS,
            users_per_tenant=max(5, round(1000 * scale)),
            products_per_tenant=max(5, round(250 * scale)),
            orders=max(100, round(100_000 * scale)),
        )


# h(x, stream) -> a non-negative int from the seeded hash; a temporary SQL function, inlined by the planner.
HASH_FUNCTION = """
CREATE FUNCTION pg_temp.h(x bigint, stream bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT hashint8extended(x, stream) & 9223372036854775807 $$
"""

# The price of product p, used for the catalogue and copied into order lines at "checkout".
PRICE_FUNCTION = """
CREATE FUNCTION pg_temp.price(p bigint, s bigint) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT round((100 + pg_temp.h(p, s * 16 + 4) % 20000) / 100.0, 2) $$
"""

# Item j of order o, with its tenant t: (product_id, quantity, unit_price).
ITEMS_OF_ORDER = """
SELECT j, %(T)s * (pg_temp.h(o * 8 + j, %(s)s * 16 + 2) %% %(ppt)s) + t AS product_id,
       (1 + pg_temp.h(o * 8 + j, %(s)s * 16 + 3) %% 3)::int AS quantity,
       pg_temp.price(%(T)s * (pg_temp.h(o * 8 + j, %(s)s * 16 + 2) %% %(ppt)s) + t, %(s)s) AS unit_price
FROM generate_series(1, (1 + pg_temp.h(o, %(s)s * 16 + 1) %% 4)::int) AS j
"""

STEPS: list[tuple[str, str]] = [
    ("tenants", """
INSERT INTO app.tenants (id, slug, name, plan, created_at) OVERRIDING SYSTEM VALUE
SELECT t, 'tenant-' || t, 'Tenant ' || t, (ARRAY['free', 'standard', 'enterprise'])[1 + t %% 3],
       %(anchor)s::timestamptz - interval '400 days' + t * interval '1 day'
FROM generate_series(1, %(T)s) AS t
"""),
    ("users", """
INSERT INTO app.users (id, tenant_id, email, full_name, password_hash, created_at) OVERRIDING SYSTEM VALUE
SELECT u, 1 + (u - 1) %% %(T)s, 'user' || u || '@tenant' || (1 + (u - 1) %% %(T)s) || '.example',
       'User ' || u,
       '$scrypt$ln=15,r=8,p=1$' || left(md5('salt/' || u || '/' || %(s)s), 22) || '$' || md5(u::text || '/' || %(s)s),
       %(anchor)s::timestamptz - interval '300 days' + (pg_temp.h(u, %(s)s * 16 + 5) %% 200) * interval '1 day'
FROM generate_series(1, %(T)s * %(upt)s) AS u
"""),
    ("products", """
INSERT INTO app.products (id, tenant_id, sku, name, price, active, created_at) OVERRIDING SYSTEM VALUE
SELECT p, 1 + (p - 1) %% %(T)s, 'SKU-' || lpad(p::text, 8, '0'), 'Product ' || p, pg_temp.price(p, %(s)s),
       pg_temp.h(p, %(s)s * 16 + 6) %% 20 <> 0, %(anchor)s::timestamptz - interval '200 days'
FROM generate_series(1, %(T)s * %(ppt)s) AS p
"""),
    ("inventory", """
INSERT INTO app.inventory (tenant_id, product_id, quantity, reserved, updated_at)
SELECT p.tenant_id, p.id, q, q / 10, %(anchor)s::timestamptz - interval '1 hour'
FROM app.products AS p, LATERAL (SELECT (pg_temp.h(p.id, %(s)s * 16 + 7) %% 1000)::int AS q) AS x
"""),
    ("orders", """
INSERT INTO app.orders (id, tenant_id, user_id, status, total, currency, created_at) OVERRIDING SYSTEM VALUE
SELECT o, t, %(T)s * (pg_temp.h(o, %(s)s * 16 + 8) %% %(upt)s) + t,
       CASE WHEN r < 10 THEN 'pending' WHEN r < 60 THEN 'paid' WHEN r < 90 THEN 'shipped'
            WHEN r < 95 THEN 'cancelled' ELSE 'refunded' END,
       (SELECT sum(i.quantity * i.unit_price) FROM (@ITEMS@) AS i), 'EUR',
       %(anchor)s::timestamptz
           - (1 + pg_temp.h(o, %(s)s * 16 + 9) %% (%(days)s * 86400 - 1)) * interval '1 second'
FROM generate_series(1, %(orders)s) AS o,
     LATERAL (SELECT 1 + (o - 1) %% %(T)s AS t, pg_temp.h(o, %(s)s * 16 + 10) %% 100 AS r) AS k
"""),
    ("order_items", """
INSERT INTO app.order_items (id, tenant_id, order_id, order_created_at, product_id, quantity, unit_price)
OVERRIDING SYSTEM VALUE
SELECT (o.id - 1) * 4 + i.j, o.tenant_id, o.id, o.created_at, i.product_id, i.quantity, i.unit_price
FROM app.orders AS o, LATERAL (SELECT o.id AS o, o.tenant_id AS t) AS k,
     LATERAL (@ITEMS@) AS i
"""),
    ("payments", """
INSERT INTO app.payments (id, tenant_id, order_id, order_created_at, amount, method, status, created_at)
OVERRIDING SYSTEM VALUE
SELECT o.id, o.tenant_id, o.id, o.created_at, o.total,
       (ARRAY['card', 'transfer', 'wallet'])[1 + pg_temp.h(o.id, %(s)s * 16 + 11) %% 3],
       CASE o.status WHEN 'refunded' THEN 'refunded' ELSE 'captured' END,
       o.created_at + (1 + pg_temp.h(o.id, %(s)s * 16 + 12) %% 600) * interval '1 second'
FROM app.orders AS o WHERE o.status IN ('paid', 'shipped', 'refunded')
"""),
]


def _anchor(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'").fetchone()
    return row[0].isoformat()  # type: ignore[index]


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()[0])  # type: ignore[index]


def _check_schema(conn: psycopg.Connection[Any]) -> None:
    missing = [t for t in SEEDED_TABLES
               if conn.execute("SELECT to_regclass(%s) IS NULL", [f"app.{t}"]).fetchone()[0]]  # type: ignore[index]
    if missing:
        raise SeedError(f"the reference schema is not there (missing app.{missing[0]})", "run `dbops migrate` first")


def seed(url: str, scale: float = 1, *, random_seed: int = 42, reset: bool = False) -> SeedResult:
    """Load the reference data set at ``scale`` in one transaction; refuse a seeded database unless ``reset``."""
    sizes = Sizes.for_scale(scale)
    result = SeedResult(scale)
    started = time.monotonic()
    with connection(url) as conn:
        _check_schema(conn)
        with conn.transaction():
            has_order_keys = _exists(conn, "app.order_keys")  # V14: (tenant_id, id) unique across every month
            if reset:
                conn.execute("TRUNCATE app.tenants, app.audit_log RESTART IDENTITY CASCADE")
                if has_order_keys:
                    conn.execute("TRUNCATE app.order_keys")
            elif conn.execute("SELECT EXISTS (SELECT 1 FROM app.tenants)").fetchone()[0]:  # type: ignore[index]
                raise SeedError("the database already holds data (app.tenants is not empty)",
                                "use `dbops seed --reset` to replace it, or seed another database")
            superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            if superuser and superuser[0]:
                # Bulk load: skip the audit and foreign-key triggers (the generator keeps every reference valid).
                conn.execute("SET LOCAL session_replication_role = replica")
                result.triggers_skipped = True
            conn.execute("SET LOCAL synchronous_commit = off")
            # Audit rows written while seeding (when the triggers run) name the seed as the acting user (V12).
            conn.execute("SELECT set_config('app.actor', 'dbops-seed', true)")
            conn.execute(HASH_FUNCTION)
            conn.execute(PRICE_FUNCTION)
            anchor = _anchor(conn)
            # bigint parameters: psycopg would send small Python ints as smallint, and products of them overflow.
            params: dict[str, Any] = {
                "T": Int8(sizes.tenants), "upt": Int8(sizes.users_per_tenant), "ppt": Int8(sizes.products_per_tenant),
                "orders": Int8(sizes.orders), "s": Int8(random_seed), "days": Int8(DAYS), "anchor": anchor,
            }
            conn.execute("SELECT app.ensure_monthly_partitions((%(anchor)s::timestamptz - interval '61 days')::date,"
                         " (%(anchor)s::timestamptz + interval '62 days')::date)", params)
            for table, statement in STEPS:
                cur = conn.execute(statement.replace("@ITEMS@", ITEMS_OF_ORDER), params)  # type: ignore[arg-type]
                result.rows[table] = cur.rowcount
            if has_order_keys and result.triggers_skipped:
                # The trigger that keeps app.order_keys did not fire: fill it as it would have.
                conn.execute("INSERT INTO app.order_keys (tenant_id, order_id, order_created_at) "
                             "SELECT tenant_id, id, created_at FROM app.orders")
            for table in ("tenants", "users", "products", "orders", "order_items", "payments"):
                conn.execute(
                    sql.SQL("SELECT setval(pg_get_serial_sequence(%s, 'id'), "
                            "(SELECT coalesce(max(id), 0) + 1 FROM {}), false)").format(sql.Identifier("app", table)),
                    [f"app.{table}"],
                )
            conn.execute("SELECT app.refresh_daily_sales()")
        for table in (*SEEDED_TABLES, *(["order_keys"] if has_order_keys else [])):
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("app", table)))
    result.seconds = time.monotonic() - started
    return result

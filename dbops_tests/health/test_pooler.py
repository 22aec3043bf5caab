"""PgBouncer figures (dbops.health.pooler) from a real PgBouncer's admin console: a client queued behind a pool of
one is counted, timed and its pool named, and it clears; a pooler nobody listens on is pooler_up 0, no exception."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import psycopg

from dbops.health.metrics import METRICS, collect_health
from dbops.health.pooler import POOLER_METRICS, pooler_figures
from dbops.loadtest.pgbouncer import PgBouncer
from dbops.loadtest.role import loadtest_role
from dbops.pg.connect import database_name, parse_url
from dbops.pg.server import free_port
from dbops_tests.conftest import make_test_dir


def test_every_pooler_figure_has_a_meaning_and_is_a_health_metric() -> None:
    assert set(POOLER_METRICS) == {"pooler_up", "pooler_clients_waiting", "pooler_max_wait_seconds",
                                   "pooler_clients_active", "pooler_servers_active"}
    assert set(POOLER_METRICS) <= set(METRICS)


def test_a_client_waiting_for_the_only_server_connection_is_counted_named_and_clears(fresh_db: str) -> None:
    parts = parse_url(fresh_db)
    dbname = database_name(fresh_db)
    work = make_test_dir("pgbouncer")
    try:
        with loadtest_role(fresh_db, member_of="pg_monitor") as role, \
                PgBouncer(parts.host or "127.0.0.1", parts.port or 5432, dbname, role.name, role.verifier,
                          pool_size=1, work_dir=work) as bouncer:
            admin_url = f"postgresql://{role.name}:{role.password}@127.0.0.1:{bouncer.port}/pgbouncer"
            client = dict(host="127.0.0.1", port=bouncer.port, dbname=dbname, user=role.name,
                          password=role.password, sslmode="disable")
            idle = pooler_figures(admin_url)
            holder = psycopg.connect(**client)  # transaction pooling: it keeps the one server connection
            waiter_state: dict[str, Any] = {}

            def wait_for_the_server() -> None:
                try:
                    with psycopg.connect(**client, autocommit=True) as conn:
                        waiter_state["value"] = conn.execute("SELECT 42").fetchone()[0]
                except Exception as exc:  # noqa: BLE001 - kept for the test
                    waiter_state["error"] = exc

            waiter = threading.Thread(target=wait_for_the_server, daemon=True)
            try:
                holder.execute("SELECT 1")
                waiter.start()
                deadline = time.monotonic() + 20
                waiting = pooler_figures(admin_url)
                while waiting.metrics.get("pooler_clients_waiting", 0) < 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
                    waiting = pooler_figures(admin_url)
                through_health = collect_health(fresh_db, host=False, pooler_url=admin_url)
            finally:
                holder.rollback()  # the server connection goes back to the pool: the waiter gets it
                holder.close()
                waiter.join(30)
            released = pooler_figures(admin_url)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    assert idle.metrics["pooler_up"] == 1 and idle.metrics["pooler_clients_waiting"] == 0
    assert waiting.metrics["pooler_up"] == 1
    assert waiting.metrics["pooler_clients_waiting"] >= 1
    assert waiting.metrics["pooler_max_wait_seconds"] > 0
    assert waiting.metrics["pooler_servers_active"] == 1 and waiting.metrics["pooler_clients_active"] >= 1
    pool = f"pool {dbname}/{role.name} (transaction mode): "
    assert waiting.details["pooler_clients_waiting"].startswith(pool + "1 client waiting")
    assert waiting.details["pooler_max_wait_seconds"].startswith(pool)
    assert role.password not in repr(waiting) and role.password not in repr(through_health)
    assert through_health.error is None and through_health.metrics["up"] == 1
    assert through_health.metrics["pooler_up"] == 1 and through_health.metrics["pooler_clients_waiting"] >= 1
    assert waiter_state == {"value": 42}
    assert released.metrics["pooler_clients_waiting"] == 0 and released.metrics["pooler_max_wait_seconds"] == 0
    assert "pooler_clients_waiting" not in released.details and "pooler_max_wait_seconds" not in released.details


def test_a_pooler_nobody_listens_on_is_down_with_a_one_line_error() -> None:
    url = f"postgresql://monitor:not-a-real-secret@127.0.0.1:{free_port()}/pgbouncer"
    figures = pooler_figures(url)
    assert figures.metrics == {"pooler_up": 0.0}
    error = figures.details["pooler_up"]
    assert "\n" not in error and error.startswith("cannot connect to postgresql://monitor:***@127.0.0.1:")
    assert "not-a-real-secret" not in error
    assert "refused" in error.lower()

"""A database with a planted problem: 200k visits, no index on customer_id, a duplicate and an unused index."""

from __future__ import annotations

import pytest

from dbops.pg.connect import connection

PLANT = """
CREATE SCHEMA shop;
CREATE TABLE shop.visits (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL,
    page text NOT NULL,
    visited_at timestamptz NOT NULL
);
INSERT INTO shop.visits (customer_id, page, visited_at)
SELECT (g * 7919) % 20000 + 1, 'page-' || (g % 500), timestamptz '2026-01-01' + g * interval '1 minute'
FROM generate_series(1, 200000) AS g;
CREATE INDEX visits_page_idx ON shop.visits (page);
CREATE INDEX visits_page_again_idx ON shop.visits (page);
CREATE INDEX visits_visited_at_idx ON shop.visits (visited_at);
ANALYZE shop.visits;
"""


@pytest.fixture
def planted_db(fresh_db: str) -> str:
    with connection(fresh_db) as conn:
        conn.execute(PLANT)
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return fresh_db


def run_workload(url: str, customers: range) -> None:
    """The application's query: a customer's visits, with real bound parameters (normalized to $1)."""
    with connection(url) as conn:
        for customer in customers:
            conn.execute("SELECT id, page, visited_at FROM shop.visits WHERE customer_id = %s", (customer,)).fetchall()

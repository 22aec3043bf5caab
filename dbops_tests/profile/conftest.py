"""A database with a planted problem: 200k visits, no index on customer_id, a duplicate and an unused index."""

from __future__ import annotations

import pytest
from psycopg import sql

from dbops.migrate.history import HistoryTable
from dbops.pg.connect import connection
from dbops_tests.foreign import LIBRARY, ForeignSchema, create

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


def baseline_by_hand(conn, schema: ForeignSchema, table: str = "flyway_schema_history") -> None:  # noqa: ANN001
    """A Flyway history holding one BASELINE row at the schema's baseline version, spelled as its files spell it."""
    HistoryTable(schema.default_schema, table).create(conn)
    conn.execute(sql.SQL(
        "INSERT INTO {} (installed_rank, version, description, type, script, checksum, installed_by, execution_time,"
        " success) VALUES (1, %s, '<< Flyway Baseline >>', 'BASELINE', '<< Flyway Baseline >>', NULL, current_user,"
        " 0, true)").format(sql.Identifier(schema.default_schema, table)), (schema.baseline_version,))


@pytest.fixture
def big_library(fresh_db: str) -> str:
    """The library database baselined at 020 by hand, with 40,000 more loans (the seed's 6,000 are below the
    advisor's 10,000-row floor) so an index on lending.loans (book_id) pays off."""
    create(fresh_db, LIBRARY)
    with connection(fresh_db) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("""
            INSERT INTO lending.loans (loaned_on, member_id, book_id, status, due_on)
            SELECT current_date - (i % 60), 1 + i % 400, 1 + (i * 7) % 250, 'returned', current_date - (i % 60) + 21
            FROM generate_series(1, 40000) AS i""")
        conn.execute("ANALYZE")
        baseline_by_hand(conn, LIBRARY)
    return fresh_db


def library_workload(url: str, books: range = range(1, 31)) -> None:
    """The library's query the advisor should index: a book's loans."""
    with connection(url) as conn:
        for book in books:
            conn.execute("SELECT id, status FROM lending.loans WHERE book_id = %s", (book,)).fetchall()

"""Per-table and per-index health figures (dbops/health/tables.py), each planted on a real server: PostgreSQL 18 (the
session server) and PostgreSQL 15 (a server of this module's own), after the figure is shown healthy on the clean
database first."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbops.health.figures import Figures
from dbops.health.metrics import SAMPLE_TIMEOUTS, collect_health
from dbops.health.tables import TABLE_METRICS, WRAPAROUND_LIMIT, sequence_used_ratio, table_figures
from dbops.pg.connect import connection, drop_database, parse_url
from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import new_database, start_test_server, stop_test_server

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
FIGURES = set(TABLE_METRICS)
CLEAN = {  # figure -> its value on a database with no table of its own
    "sequence_used_ratio_max": 0, "sequences_near_exhaustion": 0, "sequences_unreadable": 0, "invalid_indexes": 0,
    "duplicate_indexes": 0, "unused_indexes": 0, "table_bloat_ratio_max": 0, "index_bloat_ratio_max": 0,
    "table_bloat_bytes": 0, "index_bloat_bytes": 0, "bloat_unestimated_tables": 0, "dead_tuple_ratio_max": 0,
    "vacuum_age_seconds_max": 0, "analyze_age_seconds_max": 0, "default_partition_rows": 0,
}


@pytest.fixture(scope="module")
def pg15_server() -> Iterator[EmbeddedServer]:
    server = start_test_server(bin_dir=PG15_BIN)
    try:
        yield server
    finally:
        stop_test_server(server)


@pytest.fixture(params=["pg18", "pg15"])
def db(request: pytest.FixtureRequest, server_url: str) -> Iterator[str]:
    """URL of a new database on PostgreSQL 18 (the session server) or 15 (this module's), dropped after the test."""
    base = request.getfixturevalue("pg15_server").url("postgres") if request.param == "pg15" else server_url
    url = new_database(base)
    try:
        yield url
    finally:
        drop_database(base, parse_url(url).database or "")


def sample(url: str, complete: bool = True) -> Figures:
    """The figures as the health sensor samples them (autocommit, its timeouts); every figure present unless told."""
    with connection(url, autocommit=True) as conn:
        conn.execute(SAMPLE_TIMEOUTS)
        figures = table_figures(conn)
    if complete:
        assert set(figures.metrics) == FIGURES, (FIGURES - set(figures.metrics), figures.details)
    return figures


def until(url: str, ok: Callable[[Figures], bool], timeout: float = 30) -> Figures:
    """Sample until ``ok`` holds: the statistics of a session reach the views when it ends or goes idle."""
    deadline = time.monotonic() + timeout
    while True:
        figures = sample(url)
        if ok(figures) or time.monotonic() > deadline:
            return figures
        time.sleep(0.2)


def run(url: str, *statements: str | sql.Composable) -> None:
    """Each statement in its own transaction, on a session that ends at once (flushing its statistics)."""
    with connection(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def assert_clean(figures: Figures, *names: str) -> None:
    for name in names:
        assert figures.metrics[name] == CLEAN[name], (name, figures.metrics[name], figures.details.get(name))
        assert name not in figures.details, (name, figures.details[name])


@contextmanager
def reader_role(url: str) -> Iterator[str]:
    """URL of ``url``'s database as a new role that logs in and owns nothing; dropped afterwards."""
    role, password = f"h1_reader_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    run(url, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    try:
        yield f"postgresql://{role}:{password}@{parse_url(url).hostport}/{parse_url(url).database}"
    finally:
        run(url, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)),
            sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def consume_xids(url: str, n: int) -> None:
    run(url, sql.SQL("DO $$ BEGIN FOR i IN 1..{} LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$")
        .format(sql.Literal(n)))


def test_a_clean_database_is_healthy_and_the_health_sample_carries_every_figure(db: str) -> None:
    figures = sample(db)
    assert_clean(figures, *CLEAN)
    assert 10_000_000 < figures.metrics["table_wraparound_transactions_left"] <= WRAPAROUND_LIMIT
    assert 10_000_000 < figures.metrics["multixact_wraparound_left"] <= WRAPAROUND_LIMIT
    assert 2_000_000 < figures.metrics["freeze_max_age_headroom"] <= 200_000_000
    assert " age " in figures.details["table_wraparound_transactions_left"]

    health = collect_health(db, host=False)
    assert health.metrics["up"] == 1, health.error
    assert FIGURES <= set(health.metrics), FIGURES - set(health.metrics)
    assert health.metrics["invalid_indexes"] == 0 and health.metrics["default_partition_rows"] == 0


def test_an_invalid_index_left_by_create_index_concurrently(db: str) -> None:
    assert_clean(sample(db), "invalid_indexes")
    run(db, "CREATE SCHEMA app", "CREATE TABLE app.orders (code int)", "INSERT INTO app.orders VALUES (1), (1)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        run(db, "CREATE UNIQUE INDEX CONCURRENTLY orders_code ON app.orders (code)")
    figures = sample(db)
    assert figures.metrics["invalid_indexes"] == 1
    assert figures.details["invalid_indexes"] == "app.orders_code on app.orders"
    assert figures.metrics["duplicate_indexes"] == 0 and figures.metrics["unused_indexes"] == 0  # invalid only
    run(db, "DROP INDEX app.orders_code")
    assert_clean(sample(db), "invalid_indexes")


def test_duplicate_and_unused_indexes_but_not_constraint_or_foreign_key_ones(db: str) -> None:
    assert_clean(sample(db), "duplicate_indexes", "unused_indexes")
    run(db,
        "CREATE TABLE customers (id int PRIMARY KEY)",
        "CREATE TABLE orders (id int PRIMARY KEY, code text UNIQUE, customer_id int REFERENCES customers,"
        " a int, b int, c int)",
        "CREATE INDEX orders_customer ON orders (customer_id)",  # the only index the foreign key can use: needed
        "CREATE INDEX orders_a ON orders (a)",  # a leading prefix of orders_a_b: a duplicate
        "CREATE INDEX orders_a_b ON orders (a, b)",
        "CREATE INDEX orders_a_partial ON orders (a) WHERE c > 0",  # another predicate: no duplicate
        "CREATE INDEX orders_c ON orders (c)",
        "CREATE UNIQUE INDEX orders_code_again ON orders (code)",  # the UNIQUE constraint's columns, unique too
        "CREATE UNIQUE INDEX orders_b ON orders (b)")  # unique, a prefix of nothing: neither duplicate nor unused
    figures = sample(db)
    assert figures.metrics["duplicate_indexes"] == 2, figures.details.get("duplicate_indexes")
    assert set(figures.details["duplicate_indexes"].split("; ")) == {
        "public.orders_a covered by public.orders_a_b", "public.orders_code_again covered by public.orders_code_key"}
    # non-unique, no constraint's, not the foreign key's only index, never scanned: orders_a, _a_b, _a_partial, _c
    assert figures.metrics["unused_indexes"] == 4, figures.details.get("unused_indexes")
    unused = figures.details["unused_indexes"]
    assert unused.startswith("public.orders_a on public.orders (0 scans, 8.0 kB)"), unused
    for needed in ("pkey", "code", "orders_customer", "orders_b "):
        assert needed not in unused

    with connection(db, autocommit=True) as conn:  # 51 scans of orders_c: used
        conn.execute("SET enable_seqscan = off")
        for _ in range(51):
            conn.execute("SELECT * FROM orders WHERE c = 0")
    figures = until(db, lambda f: f.metrics["unused_indexes"] == 3)
    assert figures.metrics["unused_indexes"] == 3, figures.details.get("unused_indexes")

    # a second index leading with the foreign key's column: orders_customer is no longer the only one it needs
    run(db, "CREATE INDEX orders_customer_a ON orders (customer_id, a)")
    figures = sample(db)
    assert figures.metrics["unused_indexes"] == 5, figures.details.get("unused_indexes")
    assert figures.metrics["duplicate_indexes"] == 3
    assert "public.orders_customer covered by public.orders_customer_a" in figures.details["duplicate_indexes"]


def test_sequences_judged_by_their_columns_type_descending_and_unreadable(db: str) -> None:
    assert_clean(sample(db), "sequence_used_ratio_max", "sequences_near_exhaustion", "sequences_unreadable")
    run(db,
        "CREATE TABLE unused (id serial PRIMARY KEY)",  # never used: 0
        "CREATE SEQUENCE orders_id_seq",  # bigint, as sequences were before PostgreSQL 10
        "CREATE TABLE orders (id integer PRIMARY KEY DEFAULT nextval('orders_id_seq'))",
        "ALTER SEQUENCE orders_id_seq OWNED BY orders.id",
        "SELECT setval('orders_id_seq', 2000000000)",
        "CREATE SEQUENCE lone")  # the same value in a bigint sequence no column limits: about 0
    run(db, "SELECT setval('lone', 2000000000)")
    figures = sample(db)
    assert 0.93 < figures.metrics["sequence_used_ratio_max"] < 0.94  # 2e9 of int4's 2^31 - 1
    assert figures.metrics["sequences_near_exhaustion"] == 1
    assert figures.details["sequences_near_exhaustion"] == "public.orders_id_seq -> public.orders.id (integer) 93 %"
    assert figures.details["sequence_used_ratio_max"].startswith("public.orders_id_seq -> public.orders.id")
    with connection(db) as conn:
        [(seq_max, last)] = conn.execute(
            "SELECT max_value, last_value FROM pg_sequences WHERE sequencename = 'lone'").fetchall()
    assert seq_max == 2**63 - 1 and sequence_used_ratio(1, seq_max, 1, last) < 1e-9

    run(db, "CREATE SEQUENCE countdown INCREMENT -1 MINVALUE -100 MAXVALUE -1 START -1",
        "SELECT nextval('countdown') FROM generate_series(1, 96)")  # -96: 96 of its 100 values used
    figures = sample(db)
    assert figures.metrics["sequence_used_ratio_max"] == pytest.approx(96 / 100)
    assert figures.metrics["sequences_near_exhaustion"] == 2
    assert figures.details["sequence_used_ratio_max"].startswith("public.countdown 96 %; public.orders_id_seq")

    with connection(db, autocommit=False) as holder:  # reading it would wait for this transaction: skipped, not fatal
        holder.execute("ALTER SEQUENCE countdown RESTART WITH -1")
        figures = sample(db)
        holder.rollback()
    assert figures.metrics["sequences_unreadable"] == 1
    assert figures.details["sequences_unreadable"] == "public.countdown (locked by another session)"
    assert figures.metrics["sequence_used_ratio_max"] == pytest.approx(2e9 / (2**31 - 1))

    with reader_role(db) as reader:
        role = parse_url(reader).user or ""
        figures = sample(reader)  # a role that may read none of them: counted, not failed
        assert figures.metrics["sequences_unreadable"] == 4
        assert figures.metrics["sequence_used_ratio_max"] == 0
        unreadable = "public.countdown; public.lone; public.orders_id_seq (+1 more)"
        assert figures.details["sequences_unreadable"] == unreadable
        run(db, sql.SQL("GRANT SELECT ON SEQUENCE countdown TO {}").format(sql.Identifier(role)))
        figures = sample(reader)
        assert figures.metrics["sequences_unreadable"] == 3
        assert figures.metrics["sequence_used_ratio_max"] == pytest.approx(96 / 100)


def test_bloat_estimated_high_after_most_rows_are_deleted_and_low_when_freshly_loaded(db: str) -> None:
    assert_clean(sample(db), "table_bloat_ratio_max", "index_bloat_ratio_max", "table_bloat_bytes",
                 "index_bloat_bytes", "bloat_unestimated_tables")
    load = ("INSERT INTO {} (pad) SELECT repeat(md5(g::text), 6) || g FROM generate_series(1, 60000) g")
    for name in ("wide", "fresh", "unseen"):  # about 14 MB each, and 15 MB for its index on pad
        run(db, sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, pad text) WITH (autovacuum_enabled = off)")
            .format(sql.Identifier(name)), sql.SQL(load).format(sql.Identifier(name)),
            sql.SQL("CREATE INDEX {} ON {} (pad)").format(sql.Identifier(f"{name}_pad"), sql.Identifier(name)))
    run(db, "VACUUM unseen")  # its size known, no statistics of its columns
    figures = sample(db)
    assert figures.metrics["bloat_unestimated_tables"] == 3  # wide and fresh: their indexes are 15 MB already
    run(db, "ANALYZE wide", "ANALYZE fresh")
    figures = sample(db)
    assert figures.metrics["bloat_unestimated_tables"] == 1
    assert figures.details["bloat_unestimated_tables"] == "public.unseen (no statistics: ANALYZE it)"
    assert figures.metrics["table_bloat_ratio_max"] < 0.1, figures.details.get("table_bloat_ratio_max")
    assert figures.metrics["index_bloat_ratio_max"] < 0.1, figures.details.get("index_bloat_ratio_max")

    run(db, "DELETE FROM wide WHERE id % 10 <> 0", "ANALYZE wide")  # 90 % gone; no VACUUM to reclaim the space
    figures = sample(db)
    assert figures.metrics["table_bloat_ratio_max"] > 0.8, figures.details.get("table_bloat_ratio_max")
    assert figures.metrics["index_bloat_ratio_max"] > 0.8, figures.details.get("index_bloat_ratio_max")
    assert figures.details["table_bloat_ratio_max"].startswith("public.wide 9")
    assert figures.details["index_bloat_ratio_max"].startswith("public.wide_pad 9")
    assert "fresh" not in figures.details["table_bloat_ratio_max"]  # the fresh one has no bloat to name
    assert figures.metrics["table_bloat_bytes"] > 10 * 1024 * 1024
    assert figures.metrics["index_bloat_bytes"] > 10 * 1024 * 1024


def test_dead_tuples_of_an_updated_table(db: str) -> None:
    assert_clean(sample(db), "dead_tuple_ratio_max")
    run(db, "CREATE TABLE few (id int, v int) WITH (autovacuum_enabled = off)",
        "CREATE TABLE many (id int, v int) WITH (autovacuum_enabled = off)",
        "INSERT INTO few SELECT g, 0 FROM generate_series(1, 5000) g",
        "INSERT INTO many SELECT g, 0 FROM generate_series(1, 20000) g",
        "UPDATE few SET v = 1",  # 5,000 dead: under the 10,000 a table needs to count
        "UPDATE many SET v = 1")
    figures = until(db, lambda f: f.metrics["dead_tuple_ratio_max"] > 0.1)
    assert figures.metrics["dead_tuple_ratio_max"] == pytest.approx(0.5, abs=0.05)
    assert figures.details["dead_tuple_ratio_max"] == "public.many 50 % dead (20,000 dead, 20,000 live)"


def test_vacuum_and_analyze_age_name_the_table_never_vacuumed(db: str) -> None:
    assert_clean(sample(db), "vacuum_age_seconds_max", "analyze_age_seconds_max")
    run(db, "CREATE TABLE stale (id int) WITH (autovacuum_enabled = off)",
        "CREATE TABLE kept (id int) WITH (autovacuum_enabled = off)",
        "CREATE TABLE empty (id int) WITH (autovacuum_enabled = off)",  # no rows: not judged
        "INSERT INTO stale SELECT generate_series(1, 100)", "INSERT INTO kept SELECT generate_series(1, 100)",
        "VACUUM ANALYZE kept")
    figures = until(db, lambda f: f.details.get("vacuum_age_seconds_max", "").startswith("public.stale never"))
    for figure, verb in (("vacuum_age_seconds_max", "vacuumed"), ("analyze_age_seconds_max", "analyzed")):
        assert figures.details[figure].startswith(f"public.stale never {verb} ("), figures.details[figure]
        assert f"public.kept {verb} " in figures.details[figure] and "empty" not in figures.details[figure]
        assert figures.metrics[figure] > 0
    before = figures.metrics["vacuum_age_seconds_max"]

    run(db, "VACUUM ANALYZE stale")
    figures = until(db, lambda f: f.details["vacuum_age_seconds_max"].startswith("public.kept"))
    for figure, verb in (("vacuum_age_seconds_max", "vacuumed"), ("analyze_age_seconds_max", "analyzed")):
        assert figures.details[figure].startswith(f"public.kept {verb} "), figures.details[figure]
        assert "never" not in figures.details[figure]
    assert figures.metrics["vacuum_age_seconds_max"] < before


def test_wraparound_per_table_toast_included_and_freeze_headroom(db: str) -> None:
    clean = sample(db)
    assert clean.metrics["table_wraparound_transactions_left"] > 10_000_000
    run(db, "CREATE TABLE old (id int)", "INSERT INTO old VALUES (1)",
        "CREATE TABLE docs (id int, body text)", "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",
        "INSERT INTO docs SELECT 1, repeat('x', 10000)")
    consume_xids(db, 3000)
    with connection(db, autocommit=True) as conn:  # everything else frozen; docs without its TOAST table
        others = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'm') AND c.relname NOT IN ('old', 'docs')").fetchall()
        conn.execute(sql.SQL("VACUUM (FREEZE) {}").format(sql.SQL(", ").join(sql.Identifier(*o) for o in others)))
        conn.execute("VACUUM (FREEZE, PROCESS_TOAST false) docs")
        [(age_before,)] = conn.execute("SELECT age(relfrozenxid) FROM pg_class WHERE relname = 'old'").fetchall()
        figures = sample(db)
        [(age_after,)] = conn.execute("SELECT age(relfrozenxid) FROM pg_class WHERE relname = 'old'").fetchall()
    left = figures.metrics["table_wraparound_transactions_left"]
    assert age_before >= 3000 and WRAPAROUND_LIMIT - age_after <= left <= WRAPAROUND_LIMIT - age_before
    worst = figures.details["table_wraparound_transactions_left"].split("; ")
    assert worst[0] == f"public.old age {WRAPAROUND_LIMIT - int(left):,}"
    assert worst[1].startswith("public.docs (TOAST) age ")

    run(db, "VACUUM (FREEZE) old")  # lowers its age: the TOAST table is now the oldest
    figures = sample(db)
    assert figures.metrics["table_wraparound_transactions_left"] > left
    assert figures.details["table_wraparound_transactions_left"].startswith("public.docs (TOAST) age ")
    toast_age = WRAPAROUND_LIMIT - int(figures.metrics["table_wraparound_transactions_left"])
    assert toast_age >= 3000

    # the TOAST table's own autovacuum_freeze_max_age, under the server's 200 M: it is the nearest to its vacuum
    run(db, "ALTER TABLE docs SET (toast.autovacuum_freeze_max_age = 100000)")
    figures = sample(db)
    headroom = figures.metrics["freeze_max_age_headroom"]
    assert 100_000 - toast_age - 100 <= headroom <= 100_000 - toast_age
    assert figures.details["freeze_max_age_headroom"].startswith(
        f"public.docs (TOAST) {int(headroom):,} left (age {100_000 - int(headroom):,} of autovacuum_freeze_max_age"
        " 100,000)")


def test_multixact_from_two_sessions_sharing_a_row_lock(db: str) -> None:
    before = sample(db).metrics["multixact_wraparound_left"]
    assert before > 10_000_000
    run(db, "CREATE TABLE shared (id int PRIMARY KEY)", "INSERT INTO shared VALUES (1)")
    with connection(db, autocommit=False) as first, connection(db, autocommit=False) as second:
        first.execute("SELECT * FROM shared WHERE id = 1 FOR SHARE")
        second.execute("SELECT * FROM shared WHERE id = 1 FOR SHARE")  # two lockers of one row: a multixact
        first.commit()
        second.commit()
    figures = sample(db)
    after = figures.metrics["multixact_wraparound_left"]
    assert after < WRAPAROUND_LIMIT and after <= before - 1
    assert figures.details["multixact_wraparound_left"].startswith(
        f"database {parse_url(db).database} multixact age {WRAPAROUND_LIMIT - int(after):,}")


def test_rows_in_a_default_partition_and_a_locked_one_leaves_only_its_figure_out(db: str) -> None:
    run(db, "CREATE SCHEMA app",
        "CREATE TABLE app.events (at date NOT NULL, v int) PARTITION BY RANGE (at)",
        "CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        "CREATE TABLE app.events_default PARTITION OF app.events DEFAULT",
        "INSERT INTO app.events SELECT '2024-03-01', g FROM generate_series(1, 3) g")
    assert_clean(sample(db), "default_partition_rows")  # a default partition, empty: 0
    run(db, "INSERT INTO app.events SELECT '2031-01-01', g FROM generate_series(1, 5) g")
    figures = sample(db)
    assert figures.metrics["default_partition_rows"] == 5
    assert figures.details["default_partition_rows"] == "app.events_default (DEFAULT of app.events) 5 rows"
    run(db, "INSERT INTO app.events SELECT '2032-01-01', g FROM generate_series(1, 10500) g")
    figures = sample(db)
    assert figures.metrics["default_partition_rows"] == 10_001  # counted up to the cap, never scanned whole
    assert figures.details["default_partition_rows"] == "app.events_default (DEFAULT of app.events) over 10,001 rows"

    with connection(db, autocommit=False) as holder:  # as ATTACH PARTITION holds it while it checks the rows
        holder.execute("LOCK TABLE app.events_default IN ACCESS EXCLUSIVE MODE")
        figures = sample(db, complete=False)
        holder.rollback()
    assert set(figures.metrics) == FIGURES - {"default_partition_rows"}  # left out, not a false 0
    assert figures.details["default_partition_rows"] == "not sampled: locked by another session: app.events_default"
    assert sample(db).metrics["default_partition_rows"] == 10_001


def test_a_group_the_role_may_not_query_is_left_out_and_the_others_are_sampled(db: str) -> None:
    run(db, "REVOKE SELECT ON pg_catalog.pg_locks FROM PUBLIC")  # a hardened database (this database's view only)
    with reader_role(db) as reader:
        figures = sample(reader, complete=False)
    skipped = {"sequence_used_ratio_max", "sequences_near_exhaustion", "sequences_unreadable", "default_partition_rows"}
    assert set(figures.metrics) == FIGURES - skipped
    for name in skipped:
        assert figures.details[name] == "not sampled: permission denied for view pg_locks"
    assert figures.metrics["invalid_indexes"] == 0 and figures.metrics["table_wraparound_transactions_left"] > 0


def test_thousands_of_tables_sample_well_within_the_statement_timeout(fresh_db: str) -> None:
    run(fresh_db, "CREATE TABLE parent (id int PRIMARY KEY)", "INSERT INTO parent VALUES (1)",
        """
        DO $$
        BEGIN
          FOR i IN 1..2000 LOOP
            EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY, parent_id int REFERENCES parent, v text)', i);
            EXECUTE format('CREATE INDEX ON t%s (v)', i);
            EXECUTE format('INSERT INTO t%s (parent_id, v) VALUES (1, ''x'')', i);
            IF i % 100 = 0 THEN COMMIT; END IF;
          END LOOP;
        END $$
        """)
    started = time.monotonic()
    figures = sample(fresh_db)  # under the 5 s statement timeout of the sampling session, or it would be left out
    elapsed = time.monotonic() - started
    print(f"\n2,000 tables (2,000 sequences, 4,000 indexes, 2,000 foreign keys) sampled in {elapsed:.2f} s")
    assert figures.metrics["unused_indexes"] == 2000  # each t<i>_v_idx; the FK columns have no index at all
    assert figures.metrics["sequence_used_ratio_max"] > 0

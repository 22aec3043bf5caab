"""Review migrations apply as written (plain and partitioned tables); pg_dump copies while others are connected."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.pg.connect import connection
from dbops.profile.advise import advise, partitions_of
from dbops.profile.candidates import Candidate
from dbops.profile.review import write_migration
from dbops.profile.statements import profile
from dbops_tests.profile.conftest import run_workload


def apply_like_dbops(url: str, text: str) -> None:
    """Run a no-transaction migration statement by statement in autocommit, as the migrator does."""
    assert text.startswith("-- dbops:no-transaction\n")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    with connection(url) as conn:
        for stmt in filter(None, (s.strip() for s in body.split(";"))):
            conn.execute(stmt)


def test_partitioned_table_migration_attaches_every_partition(fresh_db: str, tmp_path: Path) -> None:
    with connection(fresh_db) as conn:
        conn.execute("""
            CREATE SCHEMA s;
            CREATE TABLE s.events (id bigint, kind int, at date NOT NULL) PARTITION BY RANGE (at);
            CREATE TABLE s.events_2026_01 PARTITION OF s.events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
            CREATE TABLE s.events_2026_02 PARTITION OF s.events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
        """)
        parts = partitions_of(conn, "s.events")
    assert parts == ["s.events_2026_01", "s.events_2026_02"]
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "V8__x.sql").write_text("SELECT 1;\n")
    path = write_migration(tmp_path / "review", tmp_path / "migrations", Candidate("s.events", ("kind",)),
                           12.0, 10.0, 0.8, 8192, parts)
    assert path.name == "V9__add_index_events_kind_idx.sql"
    apply_like_dbops(fresh_db, path.read_text())
    apply_like_dbops(fresh_db, path.read_text())  # IF NOT EXISTS / re-attach: a re-run is harmless
    with connection(fresh_db) as conn:
        valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 's.events_kind_idx'::regclass")
        assert valid.fetchone()[0] is True


def test_verification_copies_with_pg_dump_while_the_operator_is_connected(planted_db: str, tmp_path: Path) -> None:
    run_workload(planted_db, range(1, 11))
    with connection(planted_db) as operator, connection(planted_db) as conn:  # another session stays connected
        operator.execute("SELECT 1")
        prof = profile(conn, None)
        report = advise(planted_db, prof, review_dir=tmp_path / "review", staging_root=tmp_path / "staging")
    assert report.scratch_method == "pg_dump"
    # the plaintext dump lived in a private staging directory, removed afterwards
    assert (tmp_path / "staging").stat().st_mode & 0o777 == 0o700
    assert list((tmp_path / "staging").iterdir()) == []
    assert [a.candidate.describe() for a in report.verified] == ["shop.visits (customer_id)"]
    assert report.verified[0].measurement.speedup > 10
    with connection(planted_db) as conn:  # the scratch database is gone
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbops_scratch_%'").fetchone()[0]
        assert left == 0


def test_verification_on_a_given_restored_copy(planted_db: str, server_url: str, tmp_path: Path) -> None:
    from psycopg import sql

    from dbops.pg.connect import database_name, drop_database, with_database

    run_workload(planted_db, range(1, 11))
    copy = "t_restored_copy_profile"
    with connection(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(copy), sql.Identifier(database_name(planted_db))))
    try:
        with connection(planted_db) as conn:
            prof = profile(conn, None)
        report = advise(planted_db, prof, review_dir=tmp_path / "review",
                        scratch_url=with_database(server_url, copy))
        assert report.scratch_method == "given copy"
        assert report.verified and report.verified[0].measurement.speedup > 10
        with connection(with_database(server_url, copy)) as conn:  # the candidate was dropped after measuring
            assert conn.execute("SELECT to_regclass('shop.visits_customer_id_idx')").fetchone()[0] is None
    finally:
        drop_database(server_url, copy)


def test_a_pg_dump_scratch_copy_without_a_staging_directory_is_refused(planted_db: str, tmp_path: Path) -> None:
    """The dump is plaintext data: without a private staging directory it is never written (not even to TMPDIR)."""
    from dbops.profile.verify import VerificationFailed, scratch_copy

    with connection(planted_db) as operator:  # in use: no TEMPLATE copy, so a pg_dump would be needed
        operator.execute("SELECT 1")
        with pytest.raises(VerificationFailed, match="staging"), scratch_copy(planted_db):
            pass

"""Backup stores and servers for the backup and restore tests (a pytest plugin of dbops_tests/conftest.py): a real
S3 server (dbops.s3server: SeaweedFS on loopback, in a temp dir), a local store, a master key, a seeded
database, and a server that archives its WAL into a spool."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.store import LocalStore, S3Store
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer, free_port
from dbops.s3server import S3Server, start_s3_server
from dbops_tests.conftest import TEST_SETTINGS, make_test_dir, stop_test_server

ACCESS_KEY, SECRET_KEY = "dbops-test", "dbops-test-secret-key"


def start_seaweed() -> S3Server:
    """An S3 server of the tests' own credentials, in a new test directory (the caller stops it)."""
    return start_s3_server(make_test_dir("s3"), access_key=ACCESS_KEY, secret_key=SECRET_KEY)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[S3Server]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    server = start_seaweed()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_store(seaweed: S3Server, request: pytest.FixtureRequest) -> S3Store:
    bucket = "dbops-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    seaweed.client().create_bucket(Bucket=bucket)
    return S3Store(bucket, "nightly", endpoint_url=seaweed.endpoint)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def master_key() -> MasterKey:
    return MasterKey.from_env({"DBOPS_BACKUP_KEY": generate_key()})


@pytest.fixture
def seeded_small(migrated_db: str) -> str:
    from dbops.seed import seed

    seed(migrated_db, 0.05)
    return migrated_db


def wal_segment(path: Path, payload: bytes = b"", system_identifier: int = 7_000_000_000_000_000_001) -> Path:
    """A file that starts like a PostgreSQL WAL segment (its first page's long header: magic, info, timeline,
    address, remaining length, system identifier, 16 MiB segments, 8 KiB pages), then ``payload``: WAL push reads
    the header to check which cluster a segment comes from."""
    header = struct.pack("<HHIQI4xQII", 0xD118, 0x0002, int(path.name[:8], 16), 0, 0, system_identifier,
                         16 << 20, 8192)
    path.write_bytes(header + payload)
    return path


def start_archiving_server(bin_dir: Path | None = None) -> EmbeddedServer:
    """A test server whose archive_command copies finished WAL into ``<home>/wal-spool``."""
    home = make_test_dir("pg")
    server = EmbeddedServer(home, free_port(), bin_dir, dict(TEST_SETTINGS), wal_spool=home / "wal-spool")
    server.start()
    return server


@pytest.fixture(scope="module")
def archiving_server() -> Iterator[EmbeddedServer]:
    server = start_archiving_server()
    try:
        yield server
    finally:
        stop_test_server(server)


def write_rows(url: str, table: str, rows: int) -> None:
    """Append ``rows`` rows to ``table`` (created if missing): data a backup must bring back."""
    name = sql.Identifier(*table.split("."))
    with connection(url) as conn:
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, payload text)").format(name))
        conn.execute(sql.SQL("INSERT INTO {} SELECT m.top + g, md5(g::text) FROM generate_series(1, %s) g, "
                             "(SELECT coalesce(max(id), 0) AS top FROM {}) m").format(name, name), [rows])

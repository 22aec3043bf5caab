"""A real HTTP receiver for alert webhooks, on loopback, in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import start_test_server, stop_test_server


class Receiver:
    """A real HTTP server in a thread that records what it was POSTed (or answers 500 when ``down``)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.bodies: list[dict] = []
        self.down = False
        self.delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay)
                if receiver.down:
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T0KEN-secret"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict]:
        """Every alert received, one tick's group (one message) taken apart: a JSON webhook's group lists its alerts'
        objects, a Slack group its alerts' lines (``{"text": line}``)."""
        out: list[dict] = []
        for body in self.bodies:
            if body.get("group"):
                out.extend(body["alerts"])
            elif "key" not in body and body.get("text", "").startswith("[dbops") and "\n- " in body["text"]:
                out.extend({"text": line[2:]} for line in body["text"].splitlines()[1:])
            else:
                out.append(body)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


class SmtpReceiver:
    """A minimal real SMTP server (EHLO, MAIL, RCPT, DATA, QUIT) on loopback, keeping each message's text."""

    def __init__(self) -> None:
        import socketserver

        self.messages: list[str] = []
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            def handle(self) -> None:
                self.reply("220 localhost test SMTP")
                while line := self.rfile.readline().decode().strip():
                    verb = line.split(" ", 1)[0].upper()
                    if verb == "DATA":
                        self.reply("354 end with .")
                        body = []
                        while (data := self.rfile.readline().decode()).rstrip("\r\n") != ".":
                            body.append(data)
                        receiver.messages.append("".join(body))
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("250 ok")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    r = SmtpReceiver()
    try:
        yield r
    finally:
        r.close()


# The log report tests: a PostgreSQL server of its own for each, since the figures of a log report are the lines of
# one server's log and the session-wide ``pg_server`` is written by every other test.
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

"""A real HTTP receiver for alert webhooks, on loopback, in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


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

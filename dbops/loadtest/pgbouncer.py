"""A private PgBouncer for one load test: generated config in a temp dir, loopback port, stopped afterwards.

Transaction pooling lets 10,000 clients share a small server pool; ``max_prepared_statements`` keeps pgbench's
``-M prepared`` working across pooled server connections. The whole pool is opened up front (``min_pool_size``) and
used in turn (``server_round_robin``), so a warm-up at a few users warms every server connection and the big step
does not pay for cold backends. One PgBouncer process is enough here: at 10,000 users and 1,250 transactions/s it
used 8 % of a core (measured on 2 cores), and the step records its CPU to show when that changes.

Clients authenticate with SCRAM against an auth_file that holds only the SCRAM verifier, which PgBouncer then reuses
to log in to PostgreSQL (no plain password on disk).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbops.errors import DbopsError
from dbops.pg.binaries import find_program, run_as_user
from dbops.pg.server import free_port
from dbops.programs import ensure_os_user, run_command, start_process, stop_process


class PgBouncerError(DbopsError):
    """PgBouncer is missing or would not start."""


def pgbouncer_version(program: Path) -> tuple[int, int]:
    """(major, minor) of the installed PgBouncer: 1.21 added prepared statements in transaction pooling."""
    out = run_command([program, "--version"], timeout=10, what="pgbouncer --version").stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def find_pgbouncer(explicit: Path | None = None) -> Path:
    """``explicit`` (the ``pgbouncer`` setting, DBOPS_PGBOUNCER) if given, else pgbouncer on PATH or in /usr/sbin
    (Debian's package)."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise PgBouncerError(f"DBOPS_PGBOUNCER={explicit} is not an executable pgbouncer",
                                 "fix the path, or unset it and apt-get install -y pgbouncer")
        return Path(explicit)
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None)
    if not found:
        raise PgBouncerError("pgbouncer is not installed", "apt-get install -y pgbouncer (Debian's package)")
    return Path(found)


@dataclass
class PgBouncer:
    """One pgbouncer process in front of ``host:port/dbname``."""

    server_host: str
    server_port: int
    dbname: str
    user: str
    verifier: str
    max_client_conn: int = 10_100
    pool_size: int = 20
    work_dir: Path | None = None
    program: Path | None = None  # the pgbouncer setting; None: found on PATH
    port: int = 0
    pid: int | None = None
    version: tuple[int, int] = (0, 0)
    _own_dir: bool = field(default=False, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def supports_prepared(self) -> bool:
        """pgbench's -M prepared works in transaction pooling only from PgBouncer 1.21 (max_prepared_statements)."""
        return self.version >= (1, 21)

    def config_text(self) -> str:
        d = self.work_dir
        assert d is not None
        return "\n".join([
            "[databases]",
            f"{self.dbname} = host={self.server_host} port={self.server_port} dbname={self.dbname}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {d / 'userlist.txt'}",
            "pool_mode = transaction",
            f"max_client_conn = {self.max_client_conn}",
            f"default_pool_size = {self.pool_size}",
            f"min_pool_size = {self.pool_size}",
            "server_round_robin = 1",
            "reserve_pool_size = 0",
            *(["max_prepared_statements = 200"] if self.supports_prepared else []),
            "server_tls_sslmode = disable",
            "ignore_startup_parameters = extra_float_digits,options",
            "listen_backlog = 4096",
            "log_connections = 0",
            "log_disconnections = 0",
            f"logfile = {d / 'pgbouncer.log'}",
            f"pidfile = {d / 'pgbouncer.pid'}",
            "",
        ])

    def start(self, timeout: float = 20) -> PgBouncer:
        program = find_pgbouncer(self.program)
        self.version = pgbouncer_version(program)
        # A private directory (inside work_dir when given): handed to PgBouncer's OS user, removed at stop.
        self.work_dir = Path(tempfile.mkdtemp(prefix="dbops-pgbouncer-", dir=self.work_dir))
        self._own_dir = True
        self.port = self.port or free_port()
        (self.work_dir / "userlist.txt").write_text(f'"{self.user}" "{self.verifier}"\n')
        os.chmod(self.work_dir / "userlist.txt", 0o600)
        config = self.work_dir / "pgbouncer.ini"
        config.write_text(self.config_text())
        user = run_as_user()  # PgBouncer refuses to run as root
        if user is not None:
            entry = ensure_os_user(user)
            parent = self.work_dir.parent
            if parent != Path(tempfile.gettempdir()):  # PgBouncer's user must traverse it (search bit only)
                os.chmod(parent, parent.stat().st_mode | 0o001)
            for path in (self.work_dir, *self.work_dir.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # In the foreground (no -d), as our child: it dies with the step that started it, even on SIGKILL (a
        # daemonized PgBouncer would outlive a killed load test; see dbops.programs). -q: the log goes to its file.
        self._proc = start_process([program, "-q", config], user=user, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            if self._accepts() and (pid := self._read_pid()):  # the pid file can lag the listening socket
                self.pid = pid
                return self
            time.sleep(0.1)
        self.stop()
        raise PgBouncerError(f"pgbouncer did not start listening on 127.0.0.1:{self.port}: {self.log_tail()}",
                             "see its log line above")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _read_pid(self) -> int | None:
        assert self.work_dir is not None
        try:
            return int((self.work_dir / "pgbouncer.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def cpu_seconds(self) -> float:
        """CPU time PgBouncer (one thread) used so far; 0 when it is not running."""
        import psutil

        try:
            times = psutil.Process(self.pid or self._read_pid() or 0).cpu_times()
        except (psutil.Error, ValueError):
            return 0.0
        return times.user + times.system

    def log_tail(self) -> str:
        assert self.work_dir is not None
        try:
            lines = (self.work_dir / "pgbouncer.log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "no log"
        return lines[-1] if lines else "empty log"

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (immediate shutdown), SIGKILL after ``timeout`` seconds; then its directory is removed."""
        if self._proc is not None:
            stop_process(self._proc, grace=timeout)
            self._proc = None
        self.pid = None
        if self._own_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["PgBouncer", "PgBouncerError", "find_pgbouncer", "find_program"]

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbops.errors import DbopsError
from dbops.pg.binaries import find_program, run_as_user
from dbops.pg.server import free_port
from dbops.programs import ensure_os_user, run_command, start_process, stop_process

STATS_PERIOD_S = 1


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
            f"stats_users = {self.user}",  # SHOW POOLS / SHOW STATS on the admin console (no admin commands)
            f"stats_period = {STATS_PERIOD_S}",  # SHOW STATS' totals and averages refreshed every second
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


def admin_rows(port: int, user: str, password: str | None, command: str,
               host: str = "127.0.0.1") -> list[dict[str, Any]]:
    """One ``SHOW ...`` on PgBouncer's admin console (database ``pgbouncer``) as a dict per row."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(host=host, port=port, dbname="pgbouncer", user=user, password=password or "",
                         sslmode="disable", connect_timeout=10, autocommit=True) as conn:
        # No parameters: psycopg sends a simple query, the only protocol the admin console speaks.
        return list(conn.cursor(row_factory=dict_row).execute(command).fetchall())


@dataclass
class PoolSample:
    """One look at a pool (``SHOW POOLS``), ``at`` seconds after sampling started."""

    at: float
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    maxwait_ms: float


class PoolSampler:
    """Samples ``SHOW POOLS`` (every ``interval`` s) and ``SHOW STATS`` (at start and stop) of one database's pool
    on a thread while a step runs; :meth:`summary` gives the step's figures.

    cl_waiting: clients queued for a server connection; maxwait: how long the oldest of them waited; sv_active:
    server connections in use (all of them = the pool is the limit); avg wait per transaction from SHOW STATS'
    total_wait_time / total_xact_count over the step (PgBouncer refreshes those totals every ``stats_period``, so
    the last look waits one period after the step).
    """

    def __init__(self, port: int, user: str, password: str | None, dbname: str, interval: float = 1.0) -> None:
        self.port, self.user, self.password, self.dbname, self.interval = port, user, password, dbname, interval
        self.samples: list[PoolSample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats_before: dict[str, Any] | None = None
        self._stats_after: dict[str, Any] | None = None
        self._started = 0.0

    def _stats(self) -> dict[str, Any] | None:
        try:
            rows = admin_rows(self.port, self.user, self.password, "SHOW STATS")
        except Exception as exc:
            self.errors.append(f"SHOW STATS: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            return None
        # No row yet: nothing went through this database's pool since PgBouncer started (all totals zero).
        return next((r for r in rows if r.get("database") == self.dbname),
                    {"total_xact_count": 0, "total_wait_time": 0, "total_xact_time": 0, "avg_wait_time": 0})

    def sample(self) -> PoolSample | None:
        """One look at the pool now (also recorded)."""
        try:
            rows = admin_rows(self.port, self.user, self.password, "SHOW POOLS")
        except Exception as exc:
            self.errors.append(f"SHOW POOLS: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            return None
        mine = [r for r in rows if r.get("database") == self.dbname]
        if not mine:
            return None
        seconds = max(int(r.get("maxwait") or 0) + int(r.get("maxwait_us") or 0) / 1e6 for r in mine)
        taken = PoolSample(round(time.monotonic() - self._started, 2),
                           sum(int(r.get("cl_active") or 0) for r in mine),
                           sum(int(r.get("cl_waiting") or 0) for r in mine),
                           sum(int(r.get("sv_active") or 0) for r in mine),
                           sum(int(r.get("sv_idle") or 0) for r in mine), round(seconds * 1000, 3))
        self.samples.append(taken)
        return taken

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def start(self) -> PoolSampler:
        self._started = time.monotonic()
        self._stats_before = self._stats()
        self._thread = threading.Thread(target=self._loop, name="pgbouncer-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> PoolSampler:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        time.sleep(STATS_PERIOD_S + 0.2)  # the totals of the step's last second
        self._stats_after = self._stats()
        return self

    def summary(self) -> dict[str, Any]:
        """The step's pool figures (max over the samples; wait per transaction over the step)."""
        s = self.samples
        out: dict[str, Any] = {
            "samples": len(s),
            "max_cl_waiting": max((x.cl_waiting for x in s), default=0),
            "mean_cl_waiting": round(sum(x.cl_waiting for x in s) / len(s), 1) if s else 0.0,
            "max_maxwait_ms": max((x.maxwait_ms for x in s), default=0.0),
            "max_sv_active": max((x.sv_active for x in s), default=0),
            "min_sv_idle": min((x.sv_idle for x in s), default=0),
            "max_cl_active": max((x.cl_active for x in s), default=0),
        }
        before, after = self._stats_before, self._stats_after
        if before and after:
            xacts = int(after["total_xact_count"]) - int(before["total_xact_count"])
            wait_us = int(after["total_wait_time"]) - int(before["total_wait_time"])
            xact_us = int(after["total_xact_time"]) - int(before["total_xact_time"])
            out["xacts"] = xacts
            out["avg_wait_us"] = round(wait_us / xacts, 1) if xacts else 0.0
            out["avg_xact_us"] = round(xact_us / xacts, 1) if xacts else 0.0
        if self.errors:
            out["errors"] = self.errors[:3]
        return out


__all__ = ["PgBouncer", "PgBouncerError", "PoolSample", "PoolSampler", "admin_rows", "find_pgbouncer",
           "find_program"]

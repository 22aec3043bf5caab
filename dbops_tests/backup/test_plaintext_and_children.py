"""Nothing lost, nothing leaked: no plaintext left on disk and no child program left running when dbops is stopped.

A parallel (directory-format) dump and its restore stage plaintext in ``$DBOPS_HOME/staging/<pid>-<random>`` (0700),
never in $TMPDIR; SIGTERM cleans up and exits non-zero; after ``kill -9`` pg_dump/pg_restore and their workers die
with dbops (a parent-death signal) and the next run removes the killed run's staging directory. The same signal takes
down PgBouncer, but not the embedded server `dbops db up` starts (a daemon by design).

The dumps are held mid-table by freezing (SIGSTOP) the server backend that serves pg_dump's or pg_restore's COPY of
the big table: the programs stay busy for as long as the test needs, without a database big enough to take minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from psycopg import sql

from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.store import LocalStore
from dbops.errors import CommandFailed
from dbops.pg.connect import connection, database_name, drop_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops.programs import run_command
from dbops.staging import OWNER_FILE, remove_leftovers, staging_dir
from dbops_tests.conftest import make_test_dir, new_database

PROJECT = Path(__file__).resolve().parents[2]
BIG_ROWS = 1_500_000
PG_PROGRAMS = ("pg_dump", "pg_restore")


# --------------------------------------------------------------------------------------------------- helpers


def _gone(pids: list[int], within: float) -> list[int]:
    """The pids still alive (not zombies) after waiting up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _programs_under(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.name() in PG_PROGRAMS]
    except psutil.NoSuchProcess:
        return []


@dataclass
class Cli:
    """One `dbops` command run as its own process, as an operator (or a scheduler) would run it."""

    home: Path
    tmpdir: Path
    env: dict[str, str]

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "dbops.cli", *args], env=self.env, cwd=PROJECT,  # noqa: S603
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = self.start(*args)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    @property
    def staging(self) -> Path:
        return self.home / "staging"


def _cli(tmp_path: Path, database_url: str, store_dir: Path, key: str) -> Cli:
    home, tmpdir = tmp_path / "home", tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOPS_", "DAGSTER_"))}
    env.update(DBOPS_DATABASE_URL=database_url, DBOPS_BACKUP_DIR=str(store_dir), DBOPS_BACKUP_KEY=key,
               DBOPS_HOME=str(home), TMPDIR=str(tmpdir), DBOPS_PROJECT_DIR=str(PROJECT))
    return Cli(home, tmpdir, env)


@contextmanager
def frozen_copy(server_url: str, datname_like: str, table: str = "big", timeout: float = 120) -> Iterator[int]:
    """Wait for a COPY of ``table`` in a database named like ``datname_like``, freeze its backend (SIGSTOP) while it
    is still copying, yield the backend's pid, and let it go (SIGCONT) on exit, whatever happened."""
    frozen: psutil.Process | None = None
    deadline = time.monotonic() + timeout
    with connection(server_url, autocommit=True) as conn:
        try:
            while frozen is None:
                assert time.monotonic() < deadline, f"no COPY of {table} started within {timeout} s"
                row = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname LIKE %s AND state = 'active' "
                                   "AND query ILIKE %s", [datname_like, f"COPY public.{table} %"]).fetchone()
                if row is None:
                    time.sleep(0.005)
                    continue
                backend = psutil.Process(row[0])
                backend.suspend()
                still = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                                     "AND query ILIKE %s", [row[0], f"COPY public.{table} %"]).fetchone()
                if still:
                    frozen = backend
                else:  # caught just as it finished: let it go and wait for the next one
                    backend.resume()
            yield frozen.pid
        finally:
            if frozen is not None:
                try:
                    frozen.resume()
                except psutil.NoSuchProcess:
                    pass


def _wait_for_programs(cli: subprocess.Popen[str], names: tuple[str, ...], count: int,
                       timeout: float = 60) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        found = [p for p in _programs_under(cli.pid) if p.name() in names]
        if len(found) >= count:
            return found
        assert cli.poll() is None, f"dbops exited early: {cli.communicate()[1][-500:]}"
        assert time.monotonic() < deadline, f"{names} did not start"
        time.sleep(0.05)


def _assert_private_staging(cli: Cli, owner: int) -> Path:
    """The run's staging directory: one, named after its process, 0700 in a 0700 $DBOPS_HOME/staging, with the
    plaintext dump files in it; nothing of dbops in $TMPDIR."""
    assert stat.S_IMODE(cli.staging.stat().st_mode) == 0o700
    entries = list(cli.staging.iterdir())
    assert len(entries) == 1 and entries[0].name.startswith(f"{owner}-"), entries
    staging = entries[0]
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700 and staging.stat().st_uid == os.geteuid()
    assert (staging / OWNER_FILE).read_text().split()[0] == str(owner)
    assert any((staging / "dump").iterdir())
    assert not [p for p in cli.tmpdir.rglob("*") if "dbops" in p.name], list(cli.tmpdir.rglob("*"))
    return staging


# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def big_db(pg_server: EmbeddedServer) -> Iterator[str]:
    """A database whose biggest table takes pg_dump a noticeable moment (1.5 M rows), beside a few small ones."""
    url = new_database(pg_server.url("postgres"))
    with connection(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS payload "
                             "FROM generate_series(1, {}) g").format(sql.Literal(BIG_ROWS)))
        conn.execute("ALTER TABLE big ADD PRIMARY KEY (id)")
        for name in ("small_a", "small_b", "small_c"):
            conn.execute(sql.SQL("CREATE TABLE {} AS SELECT g AS id FROM generate_series(1, 100) g")
                         .format(sql.Identifier(name)))
        conn.execute("VACUUM ANALYZE")
    yield url
    drop_database(pg_server.url("postgres"), database_name(url))


@pytest.fixture(scope="module")
def tiny_db(pg_server: EmbeddedServer) -> Iterator[str]:
    url = new_database(pg_server.url("postgres"))
    with connection(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g")
    yield url
    drop_database(pg_server.url("postgres"), database_name(url))


@dataclass
class Backups:
    store_dir: Path
    key: str
    directory_id: str  # a --jobs 2 backup of big_db
    small_id: str  # a custom-format backup of tiny_db


@pytest.fixture(scope="module")
def backups(big_db: str, tiny_db: str, tmp_path_factory: pytest.TempPathFactory) -> Backups:
    root = tmp_path_factory.mktemp("plaintext-backups")
    key = generate_key()
    master, store = MasterKey.from_env({"DBOPS_BACKUP_KEY": key}), LocalStore(root / "store")
    directory = logical_backup(big_db, store, master, jobs=2, staging_root=root / "staging")
    small = logical_backup(tiny_db, store, master)
    return Backups(root / "store", key, directory["id"], small["id"])


# --------------------------------------------------------------------------------------------------- staging


def test_staging_directory_is_private_and_removed_also_on_error(tmp_path: Path) -> None:
    root = tmp_path / "home" / "staging"
    root.mkdir(parents=True, mode=0o755)
    os.chmod(root, 0o755)  # an existing, too open root is made private
    with pytest.raises(RuntimeError, match="boom"), staging_dir(root) as staging:
        assert staging.parent == root and staging.name.startswith(f"{os.getpid()}-")
        assert stat.S_IMODE(root.stat().st_mode) == 0o700 and stat.S_IMODE(staging.stat().st_mode) == 0o700
        (staging / "plain.dat").write_bytes(b"secret rows")
        raise RuntimeError("boom")
    assert not list(root.iterdir())


def test_only_staging_directories_of_dead_runs_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "staging"
    root.mkdir(mode=0o700)
    done = subprocess.Popen(["true"])  # noqa: S607
    done.wait()
    dead_pid = done.pid  # a pid that is gone
    parent = psutil.Process(os.getppid())
    host = os.uname().nodename

    def make(name: str, owner: str | None) -> Path:
        path = root / name
        path.mkdir()
        (path / "dump").mkdir()
        if owner is not None:
            (path / OWNER_FILE).write_text(owner)
        return path

    dead = make(f"{dead_pid}-{'a' * 16}", f"{dead_pid} 1.0 {host}")
    unlabelled_dead = make(f"{dead_pid}-{'b' * 16}", None)
    recycled = make(f"{parent.pid}-{'c' * 16}", f"{parent.pid} {parent.create_time() - 3600:.3f} {host}")
    live = make(f"{parent.pid}-{'d' * 16}", f"{parent.pid} {parent.create_time():.3f} {host}")
    unlabelled_live = make(f"{parent.pid}-{'e' * 16}", None)
    other_host = make(f"{dead_pid}-{'f' * 16}", f"{dead_pid} 1.0 another-machine")
    not_ours = make("notes", None)
    removed = remove_leftovers(root)
    assert sorted(removed) == sorted([dead, unlabelled_dead, recycled])
    assert all(p.is_dir() for p in (live, unlabelled_live, other_host, not_ours))


# --------------------------------------------------------------------------------------------------- children


def test_programs_die_with_dbops_even_on_sigkill(tmp_path: Path) -> None:
    """start_process (as root and as the servers' OS user) and run_command from a thread: all gone after kill -9."""
    script = textwrap.dedent("""
        import sys, threading, time
        from dbops.pg.binaries import run_as_user
        from dbops.programs import run_command, start_process
        procs = [start_process(["sleep", "300"])]
        if run_as_user():
            procs.append(start_process(["sleep", "301"], user=run_as_user()))
        threading.Thread(target=run_command, args=(["sleep", "302"],), daemon=True).start()
        print(" ".join(str(p.pid) for p in procs), flush=True)
        time.sleep(300)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,  # noqa: S603
                              cwd=PROJECT)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while len(psutil.Process(parent.pid).children()) < len(pids) + 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        children = [c.pid for c in psutil.Process(parent.pid).children()]
        assert set(pids) <= set(children)
        if os.geteuid() == 0:
            assert {psutil.Process(p).username() for p in pids} == {"root", "embedded_postgres"}
        parent.kill()
        parent.wait()
        assert not _gone(children, within=5)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_timeout_stops_what_the_program_forked(tmp_path: Path) -> None:
    """A grandchild holding the output pipe no longer keeps run_command waiting, nor running after it."""
    pid_file = tmp_path / "grandchild.pid"
    began = time.monotonic()
    with pytest.raises(CommandFailed, match="did not finish within 1 s"):
        run_command(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=1, what="sh")
    assert time.monotonic() - began < 15
    assert not _gone([int(pid_file.read_text())], within=5)


def test_pgbouncer_dies_with_the_step_that_started_it() -> None:
    work_dir = ""
    script = textwrap.dedent("""
        import time
        from dbops.loadtest.pgbouncer import PgBouncer
        from dbops.loadtest.role import scram_verifier
        bouncer = PgBouncer("127.0.0.1", 5432, "postgres", "nobody", scram_verifier("x")).start()
        print(bouncer.pid, bouncer.work_dir, flush=True)
        time.sleep(300)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,  # noqa: S603
                              cwd=PROJECT)
    try:
        pid_text, work_dir = parent.stdout.readline().split()  # type: ignore[union-attr]
        bouncer = psutil.Process(int(pid_text))
        assert bouncer.name() == "pgbouncer" and bouncer.ppid() == parent.pid
        parent.kill()
        parent.wait()
        assert not _gone([bouncer.pid], within=5)
    finally:
        if parent.poll() is None:
            parent.kill()
        if work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


def test_the_embedded_server_outlives_the_command_that_started_it() -> None:
    home = make_test_dir("home")  # in the temp dir: the servers' OS user can traverse its parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOPS_", "DAGSTER_"))}
    env.update(DBOPS_HOME=str(home), DBOPS_PG_PORT=str(free_port()), DBOPS_WAL_ARCHIVE="off")
    up = subprocess.run([sys.executable, "-m", "dbops.cli", "db", "up"], env=env, cwd=PROJECT,  # noqa: S603
                        capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        time.sleep(1)  # any death signal would have been delivered when the command exited
        status = subprocess.run([sys.executable, "-m", "dbops.cli", "db", "status"], env=env, cwd=PROJECT,  # noqa: S603
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        subprocess.run([sys.executable, "-m", "dbops.cli", "db", "down"], env=env, cwd=PROJECT,  # noqa: S603
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- backup


def test_kill_9_mid_parallel_dump_takes_pg_dump_down_and_the_next_run_removes_its_staging(
        big_db: str, tiny_db: str, server_url: str, tmp_path: Path) -> None:
    cli = _cli(tmp_path, big_db, tmp_path / "store", generate_key())
    run = cli.start("backup", "run", "--jobs", "2")
    try:
        with frozen_copy(server_url, database_name(big_db)):
            programs = _wait_for_programs(run, ("pg_dump",), 3)  # the leader and its two workers
            staging = _assert_private_staging(cli, run.pid)
            run.kill()
            run.wait()
            assert not _gone([p.pid for p in programs], within=10), "pg_dump outlived dbops"
        assert staging.is_dir()  # a killed run cannot clean up ...
        cli.env["DBOPS_DATABASE_URL"] = tiny_db
        after = cli.run("backup", "run")
        assert after.returncode == 0, after.stderr
        assert not staging.exists() and not list(cli.staging.iterdir())  # ... the next one does
    finally:
        if run.poll() is None:
            run.kill()


def test_sigterm_mid_parallel_dump_removes_staging_stops_pg_dump_and_exits_non_zero(
        big_db: str, server_url: str, tmp_path: Path) -> None:
    cli = _cli(tmp_path, big_db, tmp_path / "store", generate_key())
    run = cli.start("backup", "run", "--jobs", "2")
    try:
        with frozen_copy(server_url, database_name(big_db)):
            programs = _wait_for_programs(run, ("pg_dump",), 3)
            _assert_private_staging(cli, run.pid)
            run.send_signal(signal.SIGTERM)
            out, err = run.communicate(timeout=60)
            assert not _gone([p.pid for p in programs], within=5), "pg_dump outlived dbops"
        assert run.returncode == 128 + signal.SIGTERM
        assert err.strip().splitlines() == ["error: interrupted by SIGTERM: stopped and cleaned up — run the command "
                                            "again"], err
        assert not list(cli.staging.iterdir())
        store = tmp_path / "store"
        assert not [p for p in store.rglob("*") if p.is_file()]  # no object of the interrupted backup was kept
    finally:
        if run.poll() is None:
            run.kill()


# --------------------------------------------------------------------------------------------------- restore


def _scratch_databases(server_url: str) -> list[str]:
    with connection(server_url) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbops_drill_%'")]


def test_sigterm_mid_directory_drill_removes_staging_pg_restore_and_the_scratch_database(
        big_db: str, backups: Backups, server_url: str, tmp_path: Path) -> None:
    cli = _cli(tmp_path, big_db, backups.store_dir, backups.key)
    before = set(_scratch_databases(server_url))
    run = cli.start("drill", "--backup", backups.directory_id)
    try:
        with frozen_copy(server_url, "dbops_drill_%"):
            programs = _wait_for_programs(run, ("pg_restore",), 3)
            _assert_private_staging(cli, run.pid)
            run.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # then the frozen backend goes on, so the drill's clean-up can drop the scratch copy
        out, err = run.communicate(timeout=120)
        assert run.returncode == 128 + signal.SIGTERM, err
        assert "interrupted by SIGTERM" in err and len(err.strip().splitlines()) == 1, err
        assert not _gone([p.pid for p in programs], within=5), "pg_restore outlived dbops"
        assert not list(cli.staging.iterdir())
        assert set(_scratch_databases(server_url)) == before
    finally:
        if run.poll() is None:
            run.kill()


def test_kill_9_mid_directory_restore_takes_pg_restore_down_and_the_next_drill_removes_its_staging(
        big_db: str, backups: Backups, server_url: str, tmp_path: Path) -> None:
    cli = _cli(tmp_path, big_db, backups.store_dir, backups.key)
    target = new_database(server_url)
    run = cli.start("restore", backups.directory_id, "--target", target)
    try:
        with frozen_copy(server_url, database_name(target)):
            programs = _wait_for_programs(run, ("pg_restore",), 3)
            staging = _assert_private_staging(cli, run.pid)
            run.kill()
            run.wait()
            assert not _gone([p.pid for p in programs], within=10), "pg_restore outlived dbops"
        assert staging.is_dir()
        after = cli.run("drill", "--backup", backups.small_id)
        assert after.returncode == 0, after.stderr
        assert not staging.exists() and not list(cli.staging.iterdir())
    finally:
        if run.poll() is None:
            run.kill()
        drop_database(server_url, database_name(target))


def test_a_directory_dump_without_a_staging_root_is_refused_before_anything_starts(tiny_db: str,
                                                                                 tmp_path: Path) -> None:
    """Library callers must say where plaintext may go; there is no silent fallback to the temp directory."""
    store = LocalStore(tmp_path / "store")
    key = MasterKey.from_env({"DBOPS_BACKUP_KEY": generate_key()})
    with pytest.raises(ValueError, match="staging_root"):
        logical_backup(tiny_db, store, key, jobs=2)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*"))

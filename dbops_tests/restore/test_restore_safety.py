"""Restores that cannot hurt anything, on real servers: nothing touched before the backup is proven, never a running
cluster or a protected database, and a restored cluster that starts as printed and keeps out of its source's archive.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from dbops.backup import wal
from dbops.backup.keys import BackupIntegrityError, MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.manifest import load_manifest, object_key, save_manifest
from dbops.backup.physical import BASE_OBJECT, base_backup
from dbops.backup.store import LocalStore
from dbops.errors import DbopsError
from dbops.pg.archive import archive_command
from dbops.pg.connect import connection, with_database
from dbops.pg.server import EmbeddedServer, free_port
from dbops.restore.drill import _scratch_url, physical_drill, remove_scratch, wait_archived
from dbops.restore.logical import RestoreError
from dbops.restore.physical import PhysicalRestoreError
from dbops.settings import load_settings
from dbops_tests.conftest import (
    TEST_SETTINGS,
    dbops_step,
    make_test_dir,
    new_database,
    start_test_server,
    stop_test_server,
)
from dbops_tests.stores import write_rows


@dataclass
class Source:
    server: EmbeddedServer
    url: str
    store_root: Path
    key_text: str
    full: dict[str, Any]
    incremental: dict[str, Any]

    @property
    def key(self) -> MasterKey:
        return MasterKey.from_env({"DBOPS_BACKUP_KEY": self.key_text})

    @property
    def spool(self) -> Path:
        assert self.server.wal_spool is not None
        return self.server.wal_spool

    def store_copy(self, where: Path) -> LocalStore:
        """A copy of the store to damage or push into, so the other tests keep the original."""
        shutil.copytree(self.store_root, where)
        return LocalStore(where)

    def url_on(self, port: int) -> str:
        """The source's superuser URL aimed at a restored copy on ``port`` (it has the source's users)."""
        return self.url.replace(f":{self.server.port}/", f":{port}/")


def _switch_and_archive(url: str) -> None:
    with connection(url) as conn:
        last = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT pg_switch_wal()")
    wait_archived(url, last)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """An archiving server whose archive settings are also in postgresql.auto.conf (an operator's ALTER SYSTEM), a
    full and an incremental base backup of it, and its WAL archived into the store."""
    home = make_test_dir("pg")
    server = EmbeddedServer(home, free_port(), None, dict(TEST_SETTINGS), wal_spool=home / "wal-spool")
    server.start()
    try:
        url = server.url("postgres")
        with connection(url) as conn:
            conn.execute("ALTER SYSTEM SET archive_mode = on")
            conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(
                sql.Literal(archive_command(server.wal_spool))))  # type: ignore[arg-type]
            conn.execute("SELECT pg_reload_conf()")
        key_text = generate_key()
        key = MasterKey.from_env({"DBOPS_BACKUP_KEY": key_text})
        root = tmp_path_factory.mktemp("safety") / "store"
        store = LocalStore(root)
        write_rows(url, "public.ledger", 5_000)
        full = base_backup(url, store, key)
        write_rows(url, "public.ledger", 1_000)
        incremental = base_backup(url, store, key, incremental=True)
        write_rows(url, "public.ledger", 500)
        _switch_and_archive(url)
        wal.push_spool(store, key, server.wal_spool)  # type: ignore[arg-type]
        yield Source(server, url, root, key_text, full, incremental)
    finally:
        stop_test_server(server)


@pytest.fixture
def cli(source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`dbops backup|restore|wal ...` in this process, aimed at the source and its store (or a copy given)."""

    def run(args: list[str], store_root: Path | None = None, **env: str) -> int:
        values = {"DBOPS_DATABASE_URL": source.url, "DBOPS_BACKUP_DIR": str(store_root or source.store_root),
                  "DBOPS_BACKUP_KEY": source.key_text, "DBOPS_HOME": str(tmp_path / "home"),
                  "DBOPS_WAL_SPOOL": str(source.spool), **env}
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return dbops_step(args, load_settings())

    return run


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """Where a test restores a cluster it starts: a test directory of its own (pytest's tmp_path is under
    /tmp/pytest-of-root, which every new pytest session makes 0700 again, out of the server user's reach)."""
    where = make_test_dir("restored")
    where.chmod(0o711)  # as an operator's folder would be: the server's OS user may pass through
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# ---- item 8: verify first, never a live cluster, never a protected database ---------------------------------------


@pytest.mark.parametrize("damage", ["parent_sha256", "authentication"])
def test_force_restore_of_a_damaged_backup_leaves_the_target_as_it_was(source: Source, cli, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                       cluster_dir: Path, damage: str) -> None:
    store = source.store_copy(tmp_path / "store")
    if damage == "parent_sha256":
        # the full backup an incremental is built on: every backup of the chain is checked before anything else
        bad = source.full
        _flip_byte(store.root / object_key(bad["id"], BASE_OBJECT))
    else:
        # sha256 and size match a re-signed manifest: only the AES-GCM authentication can tell
        bad = source.incremental
        path = store.root / object_key(bad["id"], BASE_OBJECT)
        _flip_byte(path)
        manifest = load_manifest(store, bad["id"], source.key)
        for obj in manifest["objects"]:
            if obj["name"] == BASE_OBJECT:
                obj["sha256"], obj["size"] = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
        save_manifest(store, source.key, manifest)
    target = cluster_dir / "data"
    target.mkdir()
    (target / "marker").write_text("an operator's file")
    with pytest.raises(BackupIntegrityError, match=f"object {BASE_OBJECT} of backup {bad['id']}"):
        cli(["restore", source.incremental["id"], "--target", str(target), "--force"], store.root)
    assert (target / "marker").read_text() == "an operator's file"
    assert sorted(p.name for p in target.iterdir()) == ["marker"]
    assert [p.name for p in cluster_dir.iterdir()] == ["data"]  # no staging left behind


def test_the_data_directory_of_a_running_server_is_refused_even_with_force(source: Source, cli) -> None:  # type: ignore[no-untyped-def]
    victim = start_test_server()
    try:
        before = sorted(p.name for p in victim.data_dir.iterdir())
        with pytest.raises(PhysicalRestoreError, match="running server"):
            cli(["restore", source.full["id"], "--target", str(victim.data_dir), "--force"])
        assert victim.is_running()
        with connection(victim.url("postgres")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert sorted(p.name for p in victim.data_dir.iterdir()) == before
    finally:
        stop_test_server(victim)


def test_a_logical_restore_never_writes_into_a_protected_database_unasked(source: Source, server_url: str, cli,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path) -> None:
    from dbops.pg.connect import drop_database

    managed, dagster, origin = (new_database(server_url) for _ in range(3))
    try:
        write_rows(origin, "public.orders", 100)
        write_rows(managed, "public.production", 10)
        store = LocalStore(tmp_path / "logical-store")
        backup_id = logical_backup(origin, store, source.key)["id"]
        env = {"DBOPS_DATABASE_URL": managed, "DBOPS_DAGSTER_DATABASE_URL": dagster}

        def restore(target: str, *extra: str) -> int:
            return cli(["restore", backup_id, "--target", target, *extra], store.root, **env)

        dagster_name, managed_name = dagster.rsplit("/", 1)[1], managed.rsplit("/", 1)[1]
        with pytest.raises(RestoreError, match=f"{managed_name} is the managed database.*--allow-overwrite"):
            restore(managed, "--force")
        with pytest.raises(RestoreError, match="postgres is PostgreSQL's maintenance database"):
            restore(with_database(server_url, "postgres"), "--force")
        with pytest.raises(RestoreError, match=f"{dagster_name} is Dagster's storage database"):
            restore(dagster)  # empty, yet refused
        with pytest.raises(RestoreError, match="Dagster's storage database"):
            restore(dagster, "--allow-overwrite", managed_name)  # the flag must name this very database
        with connection(managed) as conn:
            assert conn.execute("SELECT count(*) FROM public.production").fetchone() == (10,)
        assert restore(dagster, "--allow-overwrite", dagster_name) == 0
        with connection(dagster) as conn:
            assert conn.execute("SELECT count(*) FROM public.orders").fetchone() == (100,)
    finally:
        for url in (managed, dagster, origin):
            drop_database(server_url, url.rsplit("/", 1)[1])


# ---- item 9: a restored cluster keeps to itself ----------------------------------------------------------------


def _printed(out: str, label: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(label))


def _setting(conf: Path, name: str) -> str:
    """The value PostgreSQL reads for ``name`` from a configuration file (the last line wins)."""
    values = [line.split("=", 1)[1].strip() for line in conf.read_text().splitlines()
              if line.split("=", 1)[0].strip() == name]
    return values[-1]


def _wait_promoted(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connection(url) as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("the restored cluster did not promote")
        time.sleep(0.3)


def _shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=180, check=False)  # noqa: S602


def test_a_restored_directory_starts_as_printed_and_never_archives_into_its_source(
        source: Source, cli, cluster_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    target = cluster_dir / "restored"
    assert cli(["restore", source.incremental["id"], "--target", str(target)]) == 0
    out = capsys.readouterr().out
    start, stop = _printed(out, "start it:"), _printed(out, "stop it:")
    conf = target / "postgresql.auto.conf"
    assert _setting(conf, "archive_mode") == "off"
    port = int(_setting(conf, "port"))
    assert port != source.server.port and f"port {port} on 127.0.0.1" in out
    assert "WAL archiving off" in out
    if os.geteuid() == 0:  # the server runs as the unprivileged user, so it must own every file
        uid = pwd.getpwnam("embedded_postgres").pw_uid
        owners = {p.stat().st_uid for p in [target, *target.rglob("*"), *(cluster_dir / "restored.wal").rglob("*")]}
        assert owners == {uid}
    spooled_before = {p.name for p in source.spool.iterdir()}
    started = _shell(start)
    try:
        assert started.returncode == 0, started.stderr + started.stdout
        restored = source.url_on(port)
        _wait_promoted(restored)  # replayed the archive, promoted: a new timeline, whose WAL must go nowhere
        write_rows(restored, "public.after_restore", 1_000)
        with connection(restored) as conn:
            assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
            assert conn.execute("SELECT count(*) FROM public.ledger").fetchone() == (6_500,)
            conn.execute("SELECT pg_switch_wal()")
        time.sleep(3)  # an archiver would have copied the new timeline's history by now
        new = {p.name for p in source.spool.iterdir()} - spooled_before
        assert not [name for name in new if not name.startswith("00000001")], new
    finally:
        stopped = _shell(stop)
    assert stopped.returncode == 0, stopped.stderr + stopped.stdout
    assert not (target / "postmaster.pid").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands a restored cluster to another OS user")
def test_a_target_the_server_user_cannot_reach_is_refused_before_anything(source: Source, cli,  # type: ignore[no-untyped-def]
                                                                          cluster_dir: Path) -> None:
    closed = cluster_dir / "closed"
    closed.mkdir()
    closed.chmod(0o700)  # root's own folder: embedded_postgres could never start a cluster in it
    with pytest.raises(DbopsError, match=f"cannot reach {closed}/data: {closed} does not let it through"):
        cli(["restore", source.full["id"], "--target", str(closed / "data")])
    assert list(closed.iterdir()) == []


def test_wal_of_a_stray_copy_is_refused_and_later_drills_follow_the_source(  # type: ignore[no-untyped-def]
        source: Source, cli, tmp_path: Path, cluster_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = source.store_copy(tmp_path / "store")
    with pytest.raises(PhysicalRestoreError, match="source's WAL spool"):
        cli(["restore", source.full["id"], "--target", str(tmp_path / "never"), "--archive-to", str(source.spool)],
            store.root)
    # a copy that archives into a spool of its own: its timeline-2 WAL is real, and must never reach the store
    stray_spool = cluster_dir / "stray-spool"
    target = cluster_dir / "stray"
    assert cli(["restore", source.incremental["id"], "--target", str(target), "--archive-to", str(stray_spool)],
               store.root) == 0
    out = capsys.readouterr().out
    assert f"archives its WAL into {stray_spool}" in out
    assert _shell(_printed(out, "start it:")).returncode == 0
    try:
        stray = source.url_on(int(_setting(target / "postgresql.auto.conf", "port")))
        _wait_promoted(stray)
        write_rows(stray, "public.stray", 1_000)
        _switch_and_archive(stray)
    finally:
        _shell(_printed(out, "stop it:"))
    foreign = sorted(p.name for p in wal.spool_backlog(stray_spool) if not p.name.startswith("00000001"))
    assert "00000002.history" in foreign and any(len(n) == 24 for n in foreign)

    with pytest.raises(wal.ForeignWalError, match="00000002.history is on timeline 2, which is not in the history"):
        wal.push_spool(store, source.key, stray_spool)
    assert not [n for n in wal.list_wal(store) if not n.startswith("00000001")]
    assert all((stray_spool / name).exists() for name in foreign)  # refused, kept where it was: nothing lost
    with pytest.raises(wal.ForeignWalError, match="timeline 2"):
        wal.push_file(store, source.key, stray_spool / "00000002.history")

    result = physical_drill(source.url, store, source.key, spool=source.spool, scratch_root=cluster_dir)
    assert result.data_matches, result.problems
    assert result.wal_files_replayed > 0


def test_a_drill_scratch_cluster_ignores_the_sources_alter_system_archiving(source: Source, tmp_path: Path,
                                                                           cluster_dir: Path) -> None:
    store = source.store_copy(tmp_path / "store")
    assert "archive_command" in (source.server.data_dir / "postgresql.auto.conf").read_text()
    result = physical_drill(source.url, store, source.key, backup_id=source.full["id"], pitr=False,
                            scratch_root=cluster_dir, keep=True)
    try:
        with connection(result.restored_url) as conn:  # type: ignore[arg-type]
            assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
    finally:
        remove_scratch(result.scratch_server)
    assert result.data_matches, result.problems



def test_the_drill_scratch_url_keeps_an_encoded_password_as_it_is() -> None:
    """A password with '%' must reach the scratch cluster unchanged (it used to be encoded a second time)."""
    from dbops.pg.connect import parse_url

    scratch = parse_url(_scratch_url("postgresql://app:p%25w%40rd@db.example:5432/shop", 61234))
    assert scratch.password == "p%w@rd"
    assert (scratch.values["host"], scratch.values["port"], scratch.values["dbname"]) == ("127.0.0.1", "61234", "shop")

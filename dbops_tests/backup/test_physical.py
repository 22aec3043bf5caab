"""Physical base backups (full and incremental), WAL archiving and point-in-time recovery, on real servers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from dbops.backup import wal
from dbops.backup.figures import table_figures
from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.manifest import object_key
from dbops.backup.physical import BASE_OBJECT, base_backup, physical_backups
from dbops.backup.store import LocalStore
from dbops.errors import ConfigError
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer, free_port
from dbops.restore.physical import physical_drill, remove_scratch, restore_physical
from dbops_tests.backup.conftest import wal_segment
from dbops_tests.conftest import TEST_SETTINGS, make_test_dir, stop_test_server

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def start_archiving_server(bin_dir: Path | None = None) -> EmbeddedServer:
    home = make_test_dir("pg")
    server = EmbeddedServer(home, free_port(), bin_dir, dict(TEST_SETTINGS), wal_spool=home / "wal-spool")
    server.start()
    return server


@pytest.fixture(scope="module")
def archiving_server() -> Iterator[EmbeddedServer]:
    server = start_archiving_server()
    try:
        yield server
    finally:
        stop_test_server(server)


def _write(url: str, table: str, rows: int) -> None:
    name = sql.Identifier(*table.split("."))
    with connection(url) as conn:
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, payload text)").format(name))
        conn.execute(sql.SQL("INSERT INTO {} SELECT m.top + g, md5(g::text) FROM generate_series(1, %s) g, "
                             "(SELECT coalesce(max(id), 0) AS top FROM {}) m").format(name, name), [rows])


def test_full_incremental_chain_and_pitr_drill(archiving_server: EmbeddedServer, tmp_path: Path,
                                               master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    url = archiving_server.url("postgres")
    spool = archiving_server.wal_spool
    assert spool is not None
    _write(url, "public.ledger", 20_000)

    full = base_backup(url, store, master_key)
    assert full["kind"] == "full" and full["parent"] is None
    assert full["start_lsn"] and full["end_lsn"] and full["start_wal_file"]
    assert {o["name"] for o in full["objects"]} == {BASE_OBJECT, "backup_manifest.zst.enc"}
    assert full["raw_bytes"] > full["stored_bytes"] > 0

    _write(url, "public.ledger", 5_000)
    incr = base_backup(url, store, master_key, incremental=True)
    assert incr["kind"] == "incremental" and incr["parent"] == full["id"]
    assert incr["raw_bytes"] < full["raw_bytes"]  # only the changed blocks
    assert [m["id"] for m in physical_backups(store, master_key)] == [full["id"], incr["id"]]

    _write(url, "public.ledger", 1_000)  # after the last backup: only the WAL archive has it
    pushed = wal.push_spool(store, master_key, spool)
    assert pushed and wal.list_wal(store)

    with connection(url) as conn:
        source = table_figures(conn)  # nothing writes to the ledger from here on: the restore must equal it
    result = physical_drill(url, store, master_key, spool=spool, scratch_root=tmp_path, keep=True)
    try:
        with connection(result.restored_url) as conn:  # type: ignore[arg-type]
            restored = table_figures(conn)
    finally:
        remove_scratch(result.scratch_server)
    assert restored["public.ledger"] == source["public.ledger"]
    assert restored["public.ledger"]["rows"] == 26_000
    assert result.data_matches, result.problems
    assert result.chain == [full["id"], incr["id"]]
    assert result.wal_files_replayed > 0
    assert {"download_verify", "decrypt_unpack", "combine", "pg_verifybackup", "replay", "verify"} <= set(
        result.phases)
    assert result.indexes_checked > 0
    assert result.rows_checked >= 26_000  # ledger rows from before the target time
    assert not any(p.name.startswith("dbops-drill-") for p in tmp_path.iterdir())  # scratch cluster removed


def test_restore_keeps_the_backup_data_and_pg_verifybackup_passes(archiving_server: EmbeddedServer,
                                                                  tmp_path: Path, master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    url = archiving_server.url("postgres")
    _write(url, "public.accounts", 3_000)
    manifest = base_backup(url, store, master_key)
    target = tmp_path / "restored"
    phases = restore_physical(store, master_key, manifest, target)
    assert "pg_verifybackup" in phases
    assert (target / "PG_VERSION").exists() and (target / "backup_label").exists()

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        restore_physical(store, master_key, manifest, tmp_path / "other")


def test_flipped_byte_in_a_base_backup_is_named(archiving_server: EmbeddedServer, tmp_path: Path,
                                                master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = base_backup(archiving_server.url("postgres"), store, master_key)
    path = store.root / object_key(manifest["id"], BASE_OBJECT)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BackupIntegrityError, match=f"{BASE_OBJECT} of backup {manifest['id']}"):
        restore_physical(store, master_key, manifest, tmp_path / "restored")
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").iterdir())


def test_wal_objects_are_encrypted_and_authenticated(archiving_server: EmbeddedServer, tmp_path: Path,
                                                     master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    segment = tmp_path / "000000010000000000000042"
    wal_segment(segment, os.urandom(1 << 16) + b"secret-wal-content" * 1000)
    assert wal.push_file(store, master_key, segment)
    assert not wal.push_file(store, master_key, segment)  # archived twice: kept once
    stored = (store.root / wal.wal_key(segment.name)).read_bytes()
    assert b"secret-wal-content" not in stored
    assert b"".join(wal.fetch(store, master_key, segment.name)) == segment.read_bytes()
    (store.root / wal.wal_key(segment.name)).write_bytes(stored[:-10] + bytes(10))
    with pytest.raises(BackupIntegrityError, match="000000010000000000000042"):
        b"".join(wal.fetch(store, master_key, segment.name))
    with pytest.raises(Exception, match="not a WAL file name"):
        wal.push_file(store, master_key, tmp_path / "notes.txt")


def test_incremental_without_a_full_backup_is_refused(archiving_server: EmbeddedServer, tmp_path: Path,
                                                      master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ConfigError, match="no earlier base backup"):
        base_backup(archiving_server.url("postgres"), store, master_key, incremental=True)
    assert store.list("backups/") == []


def test_postgresql_15_full_and_wal_only(tmp_path: Path, master_key: MasterKey) -> None:
    server = start_archiving_server(PG15_BIN)
    try:
        store = LocalStore(tmp_path / "store")
        url = server.url("postgres")
        _write(url, "public.orders15", 2_000)
        with pytest.raises(ConfigError, match="PostgreSQL 17 or newer"):
            base_backup(url, store, master_key, incremental=True, bin_dir=PG15_BIN)
        full = base_backup(url, store, master_key, bin_dir=PG15_BIN)
        assert full["server_version"].startswith("15")
        _write(url, "public.orders15", 500)
        # no bin_dir: the PostgreSQL 15 programs are found from the backup's server version
        result = physical_drill(url, store, master_key, spool=server.wal_spool, scratch_root=tmp_path)
        assert result.data_matches, result.problems
        assert result.wal_files_replayed > 0
    finally:
        stop_test_server(server)


def test_pg_basebackup_killed_mid_way_leaves_nothing_visible(archiving_server: EmbeddedServer, tmp_path: Path,
                                                             master_key: MasterKey,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "store")
    original = subprocess.Popen

    class KilledEarly(original):  # type: ignore[misc, valid-type]
        def __init__(self, args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(args, **kwargs)
            if "pg_basebackup" in str(args[0]):
                self.kill()

    monkeypatch.setattr(subprocess, "Popen", KilledEarly)
    with pytest.raises(Exception, match="pg_basebackup"):
        base_backup(archiving_server.url("postgres"), store, master_key)
    monkeypatch.undo()
    assert physical_backups(store, master_key) == []
    assert not [n for n in store.list("backups/") if not n.endswith(".partial")]


def test_dagster_base_backup_wal_archive_drill_and_retention(archiving_server: EmbeddedServer, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from dbops.backup.keys import generate_key
    from dbops.defs.backup.assets import backup_retention, restore_drill, wal_archive
    from dbops.defs.backup.assets import base_backup as base_backup_asset
    from dbops.defs.backup.resources import BackupResource
    from dbops.defs.resources import DatabaseResource

    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    monkeypatch.setenv("DBOPS_WAL_SPOOL", str(archiving_server.wal_spool))
    monkeypatch.setenv("DBOPS_BACKUP_KEEP_LAST", "1")
    url = archiving_server.url("postgres")
    _write(url, "public.dagster_ledger", 5_000)
    resources = {"database": DatabaseResource(url=url),
                 "backups": BackupResource(store="local", directory=str(tmp_path / "store"))}
    instance = dg.DagsterInstance.ephemeral()

    def run(assets: list, kind: str = "full") -> dg.ExecuteInProcessResult:  # type: ignore[type-arg]
        config = {"ops": {"base_backup": {"config": {"kind": kind}}}} if base_backup_asset in assets else None
        result = dg.materialize(assets, instance=instance, resources=resources, run_config=config)
        assert result.success
        return result

    first = run([base_backup_asset, wal_archive])
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in first.get_asset_check_evaluations()}
    assert checks == {("base_backup", "backup_fresh"): True, ("wal_archive", "wal_archive_current"): True}
    run([base_backup_asset], kind="incremental")
    _write(url, "public.dagster_ledger", 1_000)

    drill = dg.materialize([restore_drill], instance=instance, resources=resources,
                           run_config={"ops": {"restore_drill": {"config": {"logical": False}}}})
    assert drill.success
    checks = {e.check_name: e.passed for e in drill.get_asset_check_evaluations()}
    assert checks == {"drill_data_matches": True, "drill_rto_under_target": True}
    meta = drill.asset_materializations_for_node("restore_drill")[0].metadata
    assert meta["physical_wal_files_replayed"].value > 0 and meta["physical_rto_seconds"].value > 0
    assert meta["physical_phase_combine_seconds"].value >= 0

    full_id = first.asset_materializations_for_node("base_backup")[0].metadata["backup_id"].value
    chosen = dg.materialize([restore_drill], instance=instance, resources=resources,
                            run_config={"ops": {"restore_drill": {"config": {"backup_id": full_id, "pitr": False}}}})
    chosen_meta = chosen.asset_materializations_for_node("restore_drill")[0].metadata
    assert chosen.success and chosen_meta["physical_backup_id"].value == full_id
    assert "logical_backup_id" not in chosen_meta and "physical_phase_combine_seconds" not in chosen_meta

    run([base_backup_asset])  # a second full chain: keep_last=1 drops the first chain and the WAL before it
    pruned = run([backup_retention]).asset_materializations_for_node("backup_retention")[0].metadata
    assert pruned["deleted_backups"].value == 2 and pruned["deleted_wal_files"].value > 0


def test_base_backup_to_s3_and_drill_from_it(archiving_server: EmbeddedServer, s3_store, tmp_path: Path,  # type: ignore[no-untyped-def]
                                             master_key: MasterKey) -> None:
    url = archiving_server.url("postgres")
    _write(url, "public.s3_ledger", 5_000)
    full = base_backup(url, s3_store, master_key)
    assert s3_store.exists(object_key(full["id"], BASE_OBJECT))
    wal.push_spool(s3_store, master_key, archiving_server.wal_spool)  # type: ignore[arg-type]
    result = physical_drill(url, s3_store, master_key, spool=archiving_server.wal_spool, scratch_root=tmp_path)
    assert result.data_matches, result.problems
    assert result.wal_files_replayed > 0


def test_cli_physical_backup_restore_pitr_and_wal(archiving_server: EmbeddedServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from dbops.backup.cli import main
    from dbops.backup.keys import generate_key
    from dbops.config import Settings
    from dbops.restore.physical import PhysicalRestoreError

    url = archiving_server.url("postgres")
    env = {"DBOPS_DATABASE_URL": url, "DBOPS_BACKUP_DIR": str(tmp_path / "store"), "DBOPS_BACKUP_KEY": generate_key(),
           "DBOPS_HOME": str(tmp_path), "DBOPS_WAL_SPOOL": str(archiving_server.wal_spool)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert main(["backup", "run", "--kind", "full"], settings) == 0
    assert main(["backup", "run", "--kind", "incremental"], settings) == 0
    _write(url, "public.cli_ledger", 2_000)
    with connection(url) as conn:
        conn.execute("SELECT pg_switch_wal()")
    assert main(["drill", "--physical"], settings) == 0  # plants canaries, archives, restores, replays
    assert main(["wal", "push"], settings) == 0
    assert main(["wal", "status"], settings) == 0
    out = capsys.readouterr().out
    assert "incremental base backup" in out and " on " in out and "physical drill of" in out
    assert "WAL file(s) in" in out

    store = LocalStore(tmp_path / "store")
    newest = physical_backups(store, MasterKey.from_env())[-1]
    target = archiving_server.home / "restored"  # the server's OS user must reach it (pytest's tmp_path is 0700)
    assert main(["restore", newest["id"], "--target", str(target), "--pitr", "2999-01-01 00:00:00+00"], settings) == 0
    assert (target / "recovery.signal").exists()
    assert "recovery_target_time = '2999-01-01 00:00:00+00'" in (target / "postgresql.auto.conf").read_text()
    assert any((archiving_server.home / "restored.wal").iterdir())
    with pytest.raises(PhysicalRestoreError, match="not empty"):
        main(["restore", newest["id"], "--target", str(target)], settings)
    assert main(["restore", newest["id"], "--target", "postgresql://x@127.0.0.1/db"], settings) == 2


def test_pitr_without_archived_wal_is_refused(archiving_server: EmbeddedServer, tmp_path: Path,
                                              master_key: MasterKey) -> None:
    from dbops.restore.physical import PhysicalRestoreError, prepare_recovery

    store = LocalStore(tmp_path / "store")
    manifest = base_backup(archiving_server.url("postgres"), store, master_key)
    target = tmp_path / "restored"
    restore_physical(store, master_key, manifest, target)
    with pytest.raises(PhysicalRestoreError, match="no archived WAL after backup"):
        prepare_recovery(store, master_key, manifest, target, "2026-11-25 00:00:00+00")
    assert not (target / "recovery.signal").exists()


def test_drill_of_a_server_without_archiving_restores_to_the_backup_end(pg_server: EmbeddedServer, tmp_path: Path,
                                                                         master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    url = pg_server.url("postgres")
    base_backup(url, store, master_key)
    result = physical_drill(url, store, master_key, scratch_root=tmp_path)
    assert result.data_matches and result.target_time is None and result.wal_files_replayed == 0
    assert result.notes == ["WAL archiving is off on the server: restored to the end of the backup, no PITR"]


def test_client_programs_match_the_server_version(tmp_path: Path) -> None:
    from dbops.pg.commands import client_bin_dir, embedded_major_version

    assert client_bin_dir(tmp_path, 15) == tmp_path  # a configured directory always wins
    assert client_bin_dir(None, embedded_major_version()) is None  # the embedded build
    assert client_bin_dir(None, 15) == PG15_BIN  # Debian's, for a PostgreSQL 15 server


def test_wal_push_to_an_unreachable_store_keeps_the_spool(tmp_path: Path, master_key: MasterKey,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dbops.backup.store import S3Store, StoreError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dbops")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    spool = tmp_path / "spool"
    spool.mkdir()
    wal_segment(spool / "000000010000000000000007", b"wal" * 1000)
    dead = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match="000000010000000000000007"):
        wal.push_spool(dead, master_key, spool)
    assert (spool / "000000010000000000000007").exists()  # pushed again on the next run, nothing lost

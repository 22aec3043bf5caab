"""Physical restores and drills: a base backup chain rebuilt into a data directory, WAL replayed to a point in time,
`dbops restore` and `dbops drill --physical`, on real servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.backup.keys import BackupIntegrityError, MasterKey, generate_key
from dbops.backup.manifest import object_key
from dbops.backup.physical import BASE_OBJECT, base_backup, physical_backups
from dbops.backup.store import LocalStore
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops.restore.drill import physical_drill
from dbops.restore.physical import PhysicalRestoreError, prepare_recovery, restore_physical
from dbops.settings import load_settings
from dbops_tests.conftest import dbops_step
from dbops_tests.stores import write_rows


def test_restore_keeps_the_backup_data_and_pg_verifybackup_passes(archiving_server: EmbeddedServer,
                                                                  tmp_path: Path, master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    url = archiving_server.url("postgres")
    write_rows(url, "public.accounts", 3_000)
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


def test_cli_physical_backup_restore_pitr_and_wal(archiving_server: EmbeddedServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = archiving_server.url("postgres")
    targets = tmp_path / "targets.yml"
    targets.write_text("limits:\n  rto_seconds: 0\n")  # no drill is that fast: the RTO verdict must say so
    env = {"DBOPS_DATABASE_URL": url, "DBOPS_BACKUP_DIR": str(tmp_path / "store"), "DBOPS_BACKUP_KEY": generate_key(),
           "DBOPS_HOME": str(tmp_path), "DBOPS_WAL_SPOOL": str(archiving_server.wal_spool),
           "DBOPS_TARGETS": str(targets)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert dbops_step(["backup", "run", "--kind", "full"], settings) == 0
    assert dbops_step(["backup", "run", "--kind", "incremental"], settings) == 0
    write_rows(url, "public.cli_ledger", 2_000)
    with connection(url) as conn:
        conn.execute("SELECT pg_switch_wal()")
    assert dbops_step(["drill", "--physical"], settings) == 0  # plants canaries, archives, restores, replays
    assert dbops_step(["wal", "push"], settings) == 0
    assert dbops_step(["wal", "status"], settings) == 0
    out = capsys.readouterr().out
    assert "incremental base backup" in out and " on " in out and "physical drill of" in out
    assert "target < 0 s (limits.rto_seconds): MISSED" in out  # printed; the exit code stays the data's verdict
    assert "WAL file(s) in" in out

    store = LocalStore(tmp_path / "store")
    newest = physical_backups(store, MasterKey.from_env(env))[-1]
    target = archiving_server.home / "restored"  # the server's OS user must reach it (pytest's tmp_path is 0700)
    pitr = ["--pitr", "2999-01-01 00:00:00+00"]
    assert dbops_step(["restore", newest["id"], "--target", str(target), *pitr], settings) == 0
    assert (target / "recovery.signal").exists()
    assert "recovery_target_time = '2999-01-01 00:00:00+00'" in (target / "postgresql.auto.conf").read_text()
    assert any((archiving_server.home / "restored.wal").iterdir())
    with pytest.raises(PhysicalRestoreError, match="not empty"):
        dbops_step(["restore", newest["id"], "--target", str(target)], settings)
    assert dbops_step(["restore", newest["id"], "--target", "postgresql://x@127.0.0.1/db"], settings) == 2


def test_pitr_without_archived_wal_is_refused(archiving_server: EmbeddedServer, tmp_path: Path,
                                              master_key: MasterKey) -> None:
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

"""Directory-format parallel dumps (pg_dump --format=directory --jobs): one object per dump file, drilled with
pg_restore --jobs, readable by a plain pg_restore, damage named by verify."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from dbops.backup.figures import table_figures
from dbops.backup.keys import BackupIntegrityError, MasterKey, generate_key
from dbops.backup.logical import DIRECTORY_PREFIX, logical_backup
from dbops.backup.manifest import latest, list_backups, load_manifest, object_key, verify_objects
from dbops.backup.store import LocalStore, S3Store, StoreError
from dbops.backup.stream import decompress, decrypt, encrypt
from dbops.pg.binaries import find_program
from dbops.pg.connect import connection, split_password
from dbops.restore.drill import drill
from dbops.settings import load_settings
from dbops_tests.conftest import dbops_step, new_database


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at a directory of this test's own, to see what staging leaves behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """Where the steps stage a directory-format dump ($DBOPS_HOME/staging), never the temp directory."""
    return tmp_path / "home" / "staging"


def _no_scratch_left(server_url: str) -> bool:
    with connection(server_url) as conn:
        return not conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbops_drill_%'").fetchone()[0]


def test_directory_backup_one_object_per_file_drills_with_matching_data(
        seeded_small: str, local_store: LocalStore, master_key: MasterKey, server_url: str, own_tmp: Path,
        staging: Path) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key, jobs=2, staging_root=staging)
    assert manifest["kind"] == "logical" and manifest["dump_format"] == "directory" and manifest["jobs"] == 2
    files = {o["file"] for o in manifest["objects"]}
    assert "toc.dat" in files and len(files) > 10  # one .dat per table with data
    assert all(o["name"] == f"{DIRECTORY_PREFIX}{o['file']}.zst.enc" and len(o["sha256"]) == 64
               for o in manifest["objects"])
    stored = {n.split("/", 2)[2] for n in local_store.list(f"backups/{manifest['id']}/")}
    assert stored == {o["name"] for o in manifest["objects"]} | {"manifest.json"}
    assert manifest["raw_bytes"] == sum(o["raw_size"] for o in manifest["objects"]) > manifest["stored_bytes"]
    assert not list(own_tmp.iterdir()) and not list(staging.iterdir())  # the staging directory is gone
    with connection(seeded_small) as conn:
        assert manifest["tables"] == table_figures(conn)
    verify_objects(local_store, load_manifest(local_store, manifest["id"], master_key))
    result = drill(server_url, local_store, master_key, staging_root=staging)
    assert result.backup_id == manifest["id"] and result.data_matches, result.problems
    assert result.tables_checked == len(manifest["tables"]) and result.indexes_checked > 50
    assert set(result.phases) == {"download_verify", "decrypt_decompress", "restore", "verify"}
    assert not list(own_tmp.iterdir()) and not list(staging.iterdir()) and _no_scratch_left(server_url)


def test_the_decrypted_directory_passes_a_plain_pg_restore(seeded_small: str, local_store: LocalStore,
                                                           master_key: MasterKey, server_url: str,
                                                           tmp_path: Path, staging: Path) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key, jobs=2, staging_root=staging)
    data_key = master_key.unwrap(manifest["encryption"], manifest["id"])
    plain = tmp_path / "plain"
    plain.mkdir()
    for obj in manifest["objects"]:
        chunks = local_store.get(object_key(manifest["id"], obj["name"]))
        with open(plain / obj["file"], "wb") as out:
            for chunk in decompress(decrypt(chunks, data_key, "x", obj["name"].encode()), "x"):
                out.write(chunk)
    target = new_database(server_url)
    bare, password = split_password(target)
    subprocess.run([str(find_program("pg_restore")), "--jobs=2", "--exit-on-error", "--no-password",
                    f"--dbname={bare}", str(plain)], env={**os.environ, "PGPASSWORD": password or ""}, check=True,
                   capture_output=True, timeout=300)
    with connection(target) as conn:
        assert table_figures(conn) == manifest["tables"]


def test_a_flipped_byte_in_one_object_is_named_by_verify_and_drill(seeded_small: str, local_store: LocalStore,
                                                                   master_key: MasterKey, server_url: str,
                                                                   staging: Path) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key, jobs=2, staging_root=staging)
    victim = max(manifest["objects"], key=lambda o: o["size"])["name"]
    path = local_store.root / object_key(manifest["id"], victim)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BackupIntegrityError, match=f"object {victim} of backup {manifest['id']} fails its sha256"):
        verify_objects(local_store, manifest)
    with pytest.raises(BackupIntegrityError, match=victim):
        drill(server_url, local_store, master_key, staging_root=staging)
    assert _no_scratch_left(server_url)


def test_objects_of_one_backup_cannot_be_swapped() -> None:
    """One data key encrypts every object of a directory dump; each object's name is authenticated with it."""
    key = os.urandom(32)
    sealed = list(encrypt([b"table data"], key, b"dump.d/3001.dat.zst.enc"))
    assert b"".join(decrypt(sealed, key, "x", b"dump.d/3001.dat.zst.enc")) == b"table data"
    with pytest.raises(BackupIntegrityError, match="fails authentication"):
        list(decrypt(sealed, key, "x", b"dump.d/3002.dat.zst.enc"))


def test_a_failed_upload_removes_objects_staging_and_pg_dump(seeded_small: str, local_store: LocalStore,
                                                             master_key: MasterKey, own_tmp: Path, staging: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    first = logical_backup(seeded_small, local_store, master_key)
    real_put = LocalStore.put
    calls = []

    def put_then_fail(self, key, chunks, progress=None):  # type: ignore[no-untyped-def]
        calls.append(key)
        if len(calls) == 2:
            raise StoreError(f"injected failure writing {key}")
        return real_put(self, key, chunks, progress)

    monkeypatch.setattr(LocalStore, "put", put_then_fail)
    with pytest.raises(StoreError, match="injected failure"):
        logical_backup(seeded_small, local_store, master_key, jobs=2, staging_root=staging)
    monkeypatch.undo()
    assert [m["id"] for m in list_backups(local_store, master_key)] == [first["id"]]
    assert latest(local_store, master_key)["id"] == first["id"]
    leftovers = [p for p in (local_store.root / "backups").rglob("*") if p.is_file()]
    assert {p.relative_to(local_store.root / "backups").parts[0] for p in leftovers} == {first["id"]}
    assert not list(own_tmp.iterdir()) and not list(staging.iterdir())
    assert not [c for c in psutil.Process().children(recursive=True) if c.name() == "pg_dump"]


def test_s3_directory_backup_and_drill(seeded_small: str, s3_store: S3Store, master_key: MasterKey,
                                       server_url: str, staging: Path) -> None:
    manifest = logical_backup(seeded_small, s3_store, master_key, jobs=2, staging_root=staging)
    keys = s3_store.list("backups/")
    assert len(keys) == len(manifest["objects"]) + 1
    result = drill(server_url, s3_store, master_key, staging_root=staging)
    assert result.data_matches and result.backup_id == manifest["id"]


def test_cli_backup_run_jobs(seeded_small: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    env = {"DBOPS_DATABASE_URL": seeded_small, "DBOPS_BACKUP_DIR": str(tmp_path / "store"),
           "DBOPS_BACKUP_KEY": generate_key(), "DBOPS_HOME": str(tmp_path)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    assert dbops_step(["backup", "run", "--jobs", "2"], settings) == 0
    assert dbops_step(["backup", "verify"], settings) == 0
    assert dbops_step(["drill"], settings) == 0
    out = capsys.readouterr().out
    assert "object(s) intact" in out and "RTO" in out
    manifest = latest(LocalStore(tmp_path / "store"), MasterKey.from_env(env))
    assert manifest is not None and manifest["dump_format"] == "directory"

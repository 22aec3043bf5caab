"""Logical backups to a local directory and to a real S3 server, verified and drilled, and every listed fault."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dbops.backup.keys import BackupIntegrityError, MasterKey, generate_key
from dbops.backup.logical import DUMP_OBJECT, logical_backup
from dbops.backup.manifest import latest, list_backups, load_manifest, object_key, verify_objects
from dbops.backup.store import LocalStore, S3Store, StoreError
from dbops.backup.stream import decompress, decrypt
from dbops.errors import CommandFailed, ConfigError
from dbops.pg.binaries import find_program
from dbops.pg.connect import connection, split_password
from dbops.restore.drill import drill
from dbops.restore.logical import restore_logical
from dbops_tests.conftest import new_database


def test_local_backup_verifies_and_drills_with_matching_data(seeded_small: str, local_store: LocalStore,
                                                             master_key: MasterKey, server_url: str) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key)
    assert latest(local_store, master_key)["id"] == manifest["id"]
    assert manifest["tables"]["app.tenants"]["rows"] == 20
    assert sum(t["rows"] for t in manifest["tables"].values()) > 20_000
    assert manifest["stored_bytes"] < manifest["raw_bytes"]
    assert manifest["encryption"]["key_id"] == master_key.key_id and "wrapped_key" in manifest["encryption"]
    verify_objects(local_store, load_manifest(local_store, manifest["id"], master_key))
    result = drill(server_url, local_store, master_key)
    assert result.data_matches, result.problems
    assert result.tables_checked == len(manifest["tables"]) and result.indexes_checked > 50
    assert set(result.phases) == {"download_verify", "decrypt_decompress", "restore", "verify"}
    assert 0 < result.rto_seconds < 1800
    with connection(server_url) as conn:
        assert not conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbops_drill_%'").fetchone()[0]


def test_the_stored_dump_is_a_plain_pg_restore_archive(seeded_small: str, local_store: LocalStore,
                                                       master_key: MasterKey, server_url: str, tmp_path: Path) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key)
    data_key = master_key.unwrap(manifest["encryption"], manifest["id"])
    plain = tmp_path / "dump.pgc"
    with open(plain, "wb") as out:
        for chunk in decompress(decrypt(local_store.get(object_key(manifest["id"], DUMP_OBJECT)), data_key, "x"), "x"):
            out.write(chunk)
    target = new_database(server_url)
    bare, password = split_password(target)
    subprocess.run([str(find_program("pg_restore")), "--exit-on-error", "--no-password", f"--dbname={bare}",
                    str(plain)], env={**os.environ, "PGPASSWORD": password or ""}, check=True, capture_output=True)
    with connection(target) as conn:
        assert conn.execute("SELECT count(*) FROM app.orders").fetchone()[0] == manifest["tables"][
            "app.orders_default"]["rows"] + sum(v["rows"] for k, v in manifest["tables"].items()
                                                if k.startswith("app.orders_2"))


def test_s3_backup_and_drill_through_seaweedfs(seeded_small: str, s3_store: S3Store, master_key: MasterKey,
                                                server_url: str) -> None:
    manifest = logical_backup(seeded_small, s3_store, master_key)
    keys = s3_store.list("backups/")
    assert keys == [f"backups/{manifest['id']}/{DUMP_OBJECT}", f"backups/{manifest['id']}/manifest.json"]
    raw = s3_store.client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]
    assert all(o["Key"].startswith("nightly/backups/") for o in raw)
    result = drill(server_url, s3_store, master_key)
    assert result.data_matches and result.backup_id == manifest["id"]


def _damage(store: LocalStore, backup_id: str, how: str) -> None:
    path = store.root / object_key(backup_id, DUMP_OBJECT)
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) - 100]))
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("how, message", [("flip", "fails its sha256 check"), ("truncate", "has .* bytes"),
                                          ("missing", "is missing")])
def test_damaged_object_fails_verify_and_drill_naming_it(seeded_small: str, local_store: LocalStore,
                                                         master_key: MasterKey, server_url: str, how: str,
                                                         message: str) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key)
    _damage(local_store, manifest["id"], how)
    with pytest.raises(BackupIntegrityError, match=f"object {DUMP_OBJECT} of backup {manifest['id']} {message}"):
        verify_objects(local_store, manifest)
    with pytest.raises(BackupIntegrityError, match=DUMP_OBJECT):
        drill(server_url, local_store, master_key)
    with connection(server_url) as conn:
        assert not conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbops_drill_%'").fetchone()[0]


def test_a_flipped_byte_is_caught_by_decryption_too(seeded_small: str, local_store: LocalStore,
                                                    master_key: MasterKey, server_url: str) -> None:
    """Even when the manifest's sha256 is not consulted, the authenticated chunks refuse damaged data."""
    manifest = logical_backup(seeded_small, local_store, master_key)
    _damage(local_store, manifest["id"], "flip")
    target = new_database(server_url)
    with pytest.raises(BackupIntegrityError, match="fails authentication"):
        restore_logical(local_store, master_key, manifest, target)


def test_wrong_missing_key_and_edited_manifest(seeded_small: str, local_store: LocalStore, master_key: MasterKey,
                                               server_url: str) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key)
    other = MasterKey.from_env({"DBOPS_BACKUP_KEY": generate_key()})
    wrong_key = f"was encrypted with key {master_key.key_id}, the key given is {other.key_id}"
    with pytest.raises(BackupIntegrityError, match=wrong_key):
        drill(server_url, local_store, other)  # named as a wrong key, not as tampering
    with pytest.raises(BackupIntegrityError, match=wrong_key):
        restore_logical(local_store, other, manifest, new_database(server_url))
    with pytest.raises(ConfigError, match="DBOPS_BACKUP_KEY"):
        MasterKey.from_env({})
    with pytest.raises(ConfigError, match="32 bytes"):
        MasterKey.from_env({"DBOPS_BACKUP_KEY": base64.b64encode(b"short").decode()})
    path = local_store.root / object_key(manifest["id"], "manifest.json")
    edited = json.loads(path.read_text())
    edited["tables"]["app.tenants"]["rows"] = 19
    path.write_text(json.dumps(edited))
    with pytest.raises(BackupIntegrityError, match=f"{manifest['id']}: manifest signature does not verify"):
        drill(server_url, local_store, master_key)


def on_every_chunk(monkeypatch: pytest.MonkeyPatch, store_class: type, hook) -> None:  # type: ignore[no-untyped-def]
    """Call ``hook`` each time ``store_class.put`` reports bytes stored (after a chunk or an S3 part): an upload
    interrupted in its middle."""
    real_put = store_class.put

    def put(self, key, chunks, progress=None):  # type: ignore[no-untyped-def]
        def stored(n: int) -> None:
            hook(n)
            if progress is not None:
                progress(n)
        return real_put(self, key, chunks, stored)

    monkeypatch.setattr(store_class, "put", put)


def test_pg_dump_killed_midway_leaves_latest_unchanged(seeded_small: str, local_store: LocalStore,
                                                       master_key: MasterKey, monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    first = logical_backup(seeded_small, local_store, master_key)
    killed = []

    def kill_pg_dump(stored: int) -> None:
        for child in psutil.Process().children(recursive=True):
            if child.name() == "pg_dump" and not killed:
                child.kill()
                killed.append(child.pid)

    on_every_chunk(monkeypatch, LocalStore, kill_pg_dump)
    with pytest.raises(CommandFailed, match="pg_dump failed"):
        logical_backup(seeded_small, local_store, master_key)
    monkeypatch.undo()
    assert killed
    assert latest(local_store, master_key)["id"] == first["id"] and len(list_backups(local_store, master_key)) == 1
    leftovers = [p for p in (local_store.root / "backups").rglob("*") if p.is_file()]
    assert sorted(p.parent.name for p in leftovers) == [first["id"], first["id"]]


def test_s3_unreachable_mid_upload_leaves_latest_unchanged(seeded_small: str, seaweed, master_key: MasterKey,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbops_tests.stores import start_seaweed

    own = start_seaweed()  # a server of this test's own, to stop in the middle of an upload
    try:
        own.client().create_bucket(Bucket="dbops-midway")
        store = S3Store("dbops-midway", "", endpoint_url=own.endpoint, part_size=5 << 20)
        first = logical_backup(seeded_small, store, master_key)
        with connection(seeded_small) as conn:  # make the next dump several parts long, incompressible
            conn.execute("CREATE TABLE public.noise AS SELECT g, decode(string_agg(md5(random()::text || g || i), ''),"
                         " 'hex') AS blob FROM generate_series(1, 400) g, generate_series(1, 1000) i GROUP BY g")
        stopped = threading.Event()

        def stop_after_first_part(stored: int) -> None:
            if not stopped.is_set():
                stopped.set()
                own.stop()

        on_every_chunk(monkeypatch, S3Store, stop_after_first_part)
        with pytest.raises(StoreError, match="S3 upload of .* failed"):
            logical_backup(seeded_small, store, master_key)
        monkeypatch.undo()
        assert stopped.is_set()
        with pytest.raises(StoreError, match="S3 listing"):
            list_backups(store, master_key)  # still down: a clear error, not a hang
        own.start()  # the same data directory: what did the interrupted backup leave?
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the volume server registers with the master a moment after S3 answers:
            try:  # until then reads fail (an error, never a backup silently left out of the list)
                if list_backups(store, master_key):
                    break
            except StoreError:
                pass
            time.sleep(0.5)
        assert [m["id"] for m in list_backups(store, master_key)] == [first["id"]]
        assert latest(store, master_key)["id"] == first["id"]
    finally:
        own.stop()
        shutil.rmtree(own.home, ignore_errors=True)  # its data directory: a test leaves nothing in /tmp
        with connection(seeded_small) as conn:
            conn.execute("DROP TABLE IF EXISTS public.noise")


def test_disk_full_on_the_local_store(seeded_small: str, local_store: LocalStore, master_key: MasterKey,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = logical_backup(seeded_small, local_store, master_key)
    real_put = LocalStore.put

    def put_onto_a_full_disk(self, key, chunks, progress=None):  # type: ignore[no-untyped-def]
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(path.name + ".partial").symlink_to("/dev/full")  # the kernel answers ENOSPC
        return real_put(self, key, chunks, progress)

    monkeypatch.setattr(LocalStore, "put", put_onto_a_full_disk)
    with pytest.raises(StoreError, match="is full while writing"):
        logical_backup(seeded_small, local_store, master_key)
    monkeypatch.undo()
    assert [m["id"] for m in list_backups(local_store, master_key)] == [first["id"]]
    assert not list((local_store.root / "backups").rglob("*.partial"))

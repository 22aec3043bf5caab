"""Trusting the backup store: every reader verifies a manifest (key, signature, folder, prefix, object names) before
using it; prune deletes only what verified manifests name; unfinished writes are cleaned up; a silent S3 endpoint
fails fast."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dbops.backup.keys import BackupIntegrityError, MasterKey, generate_key
from dbops.backup.manifest import (
    MANIFEST,
    ManifestRejected,
    latest,
    load_manifest,
    object_key,
    read_store,
    save_manifest,
)
from dbops.backup.physical import _parent_for_incremental
from dbops.backup.retention import prune
from dbops.backup.store import LocalStore, S3Store, Store
from dbops.backup.stream import CHUNK
from dbops.s3server import S3Server as SeaweedS3
from dbops_tests.conftest import run_dbops
from dbops_tests.stores import ACCESS_KEY, SECRET_KEY

NOW = datetime.now(UTC)
CLUSTER = "7400000000000000001"


def genuine(store: Store, key: MasterKey, kind: str, days_ago: float, parent: str | None = None) -> dict[str, Any]:
    """A small backup as dbops writes one: an object, then its signed manifest."""
    finished = NOW - timedelta(days=days_ago)
    backup_id = f"{finished:%Y%m%dT%H%M%SZ}-{kind}-{uuid.uuid4().hex[:6]}"
    name = "dump.pgc.zst.enc" if kind == "logical" else "base.tar.zst.enc"
    data = os.urandom(2000)
    store.write_bytes(object_key(backup_id, name), data)
    manifest: dict[str, Any] = {
        "format": 1, "id": backup_id, "kind": kind, "parent": parent, "system_identifier": CLUSTER,
        "started_at": finished.isoformat(), "finished_at": finished.isoformat(), "duration_seconds": 1.0,
        "objects": [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                     "raw_size": len(data)}],
        "raw_bytes": len(data), "stored_bytes": len(data),
        "encryption": {"algorithm": "AES-256-GCM", "chunk_bytes": CHUNK, **key.wrap(os.urandom(32), backup_id)},
    }
    save_manifest(store, key, manifest)
    return manifest


def forge(store: LocalStore, like: dict[str, Any], when: datetime, kind: str | None = None,
          objects: list[dict[str, Any]] | None = None) -> str:
    """A manifest someone without the key wrote: plausible fields, a bogus signature."""
    forged_id = f"{when:%Y%m%dT%H%M%SZ}-{kind or like['kind']}-f0f0f0"
    body = {**like, "id": forged_id, "kind": kind or like["kind"], "finished_at": when.isoformat(),
            "objects": objects if objects is not None else like["objects"], "signature": "0" * 64}
    path = store.root / "backups" / forged_id / MANIFEST
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(body))
    return forged_id


def cli_env(tmp_path: Path, key: str, **extra: str) -> dict[str, str]:
    """`dbops backup ...` on a store only: the database URL points nowhere and is never used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOPS_")}
    env.update(DBOPS_HOME=str(tmp_path / "home"), DBOPS_DATABASE_URL="postgresql://nobody@127.0.0.1:9/nothing",
               DBOPS_BACKUP_KEY=key, **extra)
    return env


def stored_files(store: LocalStore) -> set[str]:
    return {str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file()}


# item 5: listing, latest and prune trust only verified manifests; names stay inside their folder

def test_forged_manifest_dated_2099_cannot_make_prune_delete_genuine_backups(tmp_path: Path) -> None:
    key_text = generate_key()
    key = MasterKey.from_env({"DBOPS_BACKUP_KEY": key_text})
    store = LocalStore(tmp_path / "store")
    logical = genuine(store, key, "logical", 3)
    full = genuine(store, key, "full", 2)
    incremental = genuine(store, key, "incremental", 1, parent=full["id"])
    genuine_files = stored_files(store)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    forged = [
        forge(store, logical, future),  # would be "the newest logical backup"
        forge(store, full, future),  # would be "the newest full chain"
        # an old one, so prune would delete it, naming the genuine backup's objects
        forge(store, logical, datetime(2000, 1, 1, tzinfo=UTC), objects=[
            {"name": f"../{logical['id']}/dump.pgc.zst.enc", "size": 1, "sha256": "0"},
            {"name": f"../{full['id']}/{MANIFEST}", "size": 1, "sha256": "0"}]),
    ]
    env = cli_env(tmp_path, key_text, DBOPS_BACKUP_DIR=str(store.root), DBOPS_BACKUP_KEEP_LAST="1")

    result = run_dbops(["backup", "prune"], env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert stored_files(store) >= genuine_files, "a genuine backup lost an object"
    for forged_id in forged:
        assert (store.root / "backups" / forged_id / MANIFEST).exists()  # reported, never deleted
        assert f"ignored backup {forged_id}: manifest signature does not verify" in result.stderr.splitlines()
    assert "kept 3 backup(s)" in result.stdout and "deleted 2" not in result.stdout

    listed = run_dbops(["backup", "list"], env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [logical["id"], full["id"], incremental["id"]]
    assert len(listed.stderr.splitlines()) == 3

    assert latest(store, key, "logical")["id"] == logical["id"]
    assert latest(store, key, ("full", "incremental"))["id"] == incremental["id"]
    facts = {"version_num": 180000, "server_version": "18", "summarize_wal": "on", "system_identifier": CLUSTER}
    assert _parent_for_incremental(store, key, facts)["id"] == incremental["id"]  # never the forged full backup


def test_object_names_stay_inside_their_backups_folder(tmp_path: Path, master_key: MasterKey) -> None:
    """Even a correctly signed manifest may only name objects in its own folder (a bug must not become a deletion)."""
    store = LocalStore(tmp_path / "store")
    victim = genuine(store, master_key, "logical", 2)
    escaping = genuine(store, master_key, "logical", 1)
    escaping["objects"].append({"name": f"../{victim['id']}/dump.pgc.zst.enc", "size": 1, "sha256": "0"})
    with pytest.raises(BackupIntegrityError, match="is not an object name inside backup"):
        save_manifest(store, master_key, escaping)  # dbops never signs such a name
    path = store.root / object_key(escaping["id"], MANIFEST)
    escaping["signature"] = master_key.sign(escaping)  # ... but suppose something did
    path.write_text(json.dumps(escaping))
    with pytest.raises(ManifestRejected, match="names object '../.*' outside its folder"):
        load_manifest(store, escaping["id"], master_key)
    with pytest.raises(BackupIntegrityError, match="is not a backup id"):
        object_key("../elsewhere", "dump.pgc.zst.enc")
    with pytest.raises(ManifestRejected, match="is not a backup id"):
        load_manifest(store, "../x", master_key)

    before = stored_files(store)
    result = prune(store, master_key, keep_last=None, keep_days=0.5)  # both are older than half a day
    assert result.ids == [] and [i.backup_id for i in result.ignored] == [escaping["id"]]
    assert stored_files(store) == before  # the victim is the newest verified backup; the other folder is left alone


def test_no_verified_backup_is_an_error_not_a_silent_none(tmp_path: Path, master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    assert latest(store, master_key) is None
    assert latest(store, lambda: pytest.fail("an empty store needs no key")) is None
    only = genuine(store, master_key, "logical", 1)
    forge(store, only, datetime(2099, 1, 1, tzinfo=UTC))
    shutil.rmtree(store.root / "backups" / only["id"])
    with pytest.raises(BackupIntegrityError, match=r"no logical backup in .* verifies: ignored backup "
                                                   r"20990101T000000Z-logical-f0f0f0: manifest signature"):
        latest(store, master_key, "logical")


def test_the_security_audit_reports_a_forged_manifest(tmp_path: Path) -> None:
    from dbops.security.backups import audit_backups

    env = {"DBOPS_BACKUP_KEY": generate_key()}
    store = LocalStore(tmp_path / "store")
    first = genuine(store, MasterKey.from_env(env), "logical", 1)
    forged = forge(store, first, datetime(2099, 1, 1, tzinfo=UTC))
    findings = audit_backups(store, env)
    assert [(f.rule, f.subject) for f in findings] == [("SEC034", f"backup {forged}")]
    (no_key,) = audit_backups(store, {})
    assert no_key.rule == "SEC030" and "cannot be verified" in no_key.evidence


# item 6: a manifest is bound to its folder and to the store's prefix

def test_a_manifest_copied_into_another_backups_folder_does_not_verify(tmp_path: Path) -> None:
    key_text = generate_key()
    key = MasterKey.from_env({"DBOPS_BACKUP_KEY": key_text})
    store = LocalStore(tmp_path / "store")
    older = genuine(store, key, "logical", 2)
    newer = genuine(store, key, "logical", 1)
    shutil.copy(store.root / object_key(older["id"], MANIFEST), store.root / object_key(newer["id"], MANIFEST))
    env = cli_env(tmp_path, key_text, DBOPS_BACKUP_DIR=str(store.root))

    verify = run_dbops(["backup", "verify", newer["id"]], env, timeout=120)
    assert verify.returncode == 1 and verify.stdout == ""
    (line,) = verify.stderr.strip().splitlines()
    assert f"backup {newer['id']}: its folder holds the manifest of backup {older['id']}" in line

    restore = run_dbops(["restore", newer["id"], "--target", "postgresql://nobody@127.0.0.1:9/target"], env,
                        timeout=120)
    assert restore.returncode == 1 and f"holds the manifest of backup {older['id']}" in restore.stderr
    assert len(restore.stderr.strip().splitlines()) == 1

    everything = run_dbops(["backup", "verify"], env, timeout=120)
    assert everything.returncode == 1  # the other backups verify, the copy is named
    assert f"{older['id']}: 1 object(s) intact" in everything.stdout
    assert everything.stderr.strip() == (f"ignored backup {newer['id']}: its folder holds the manifest of backup "
                                         f"{older['id']}")


def test_manifests_are_bound_to_the_s3_prefix_not_to_the_bucket_or_path(tmp_path: Path, seaweed: SeaweedS3,
                                                                        master_key: MasterKey) -> None:
    """The documented choice: moving a local store, replicating a bucket under the same prefix and uploading a
    local store to a bucket root keep verifying; a copy under another prefix does not."""
    client = seaweed.client()
    for bucket in ("dbops-trust-main", "dbops-trust-replica"):
        client.create_bucket(Bucket=bucket)
    nightly = S3Store("dbops-trust-main", "nightly", endpoint_url=seaweed.endpoint)
    backup = genuine(nightly, master_key, "logical", 1)
    assert load_manifest(nightly, backup["id"], master_key)["store_prefix"] == "nightly"

    def copy(source: S3Store, target: S3Store) -> None:
        for name in source.list("backups/"):
            target.write_bytes(name, source.read_bytes(name))

    replica = S3Store("dbops-trust-replica", "nightly", endpoint_url=seaweed.endpoint)
    copy(nightly, replica)
    assert [m["id"] for m in read_store(replica, master_key).backups] == [backup["id"]]

    other = S3Store("dbops-trust-main", "staging", endpoint_url=seaweed.endpoint)
    copy(nightly, other)
    listing = read_store(other, master_key)
    assert listing.backups == []
    assert [str(i) for i in listing.ignored] == [
        f"ignored backup {backup['id']}: it was written under store prefix 'nightly', this store's prefix is "
        "'staging'"]

    local = LocalStore(tmp_path / "store")
    moved = genuine(local, master_key, "logical", 1)
    (tmp_path / "store").rename(tmp_path / "moved")
    local = LocalStore(tmp_path / "moved")
    assert [m["id"] for m in read_store(local, master_key).backups] == [moved["id"]]
    bucket_root = S3Store("dbops-trust-replica", "", endpoint_url=seaweed.endpoint)
    for name in local.list("backups/"):
        bucket_root.write_bytes(name, local.read_bytes(name))
    assert [m["id"] for m in read_store(bucket_root, master_key).backups] == [moved["id"]]


def test_format_1_manifests_still_verify(tmp_path: Path, seaweed: SeaweedS3, s3_store: S3Store,
                                         master_key: MasterKey) -> None:
    """Manifests signed before the prefix was bound: key, signature and folder are still checked."""
    for store in (LocalStore(tmp_path / "store"), s3_store):
        manifest = genuine(store, master_key, "logical", 1)
        del manifest["store_prefix"], manifest["signature"]
        manifest["format"] = 1
        manifest["signature"] = master_key.sign(manifest)
        store.write_bytes(object_key(manifest["id"], MANIFEST), json.dumps(manifest).encode())
        assert load_manifest(store, manifest["id"], master_key)["format"] == 1
        manifest["format"] = 2  # an upgrade without the signature to match is not a way around the binding
        store.write_bytes(object_key(manifest["id"], MANIFEST), json.dumps(manifest).encode())
        with pytest.raises(ManifestRejected, match="signature does not verify"):
            load_manifest(store, manifest["id"], master_key)


# item 7: a wrong key is named as a wrong key

def test_a_wrong_key_is_named_not_reported_as_tampering(tmp_path: Path) -> None:
    right, wrong = generate_key(), generate_key()
    right_id = MasterKey.from_env({"DBOPS_BACKUP_KEY": right}).key_id
    wrong_id = MasterKey.from_env({"DBOPS_BACKUP_KEY": wrong}).key_id
    store = LocalStore(tmp_path / "store")
    backup = genuine(store, MasterKey.from_env({"DBOPS_BACKUP_KEY": right}), "logical", 1)
    env = cli_env(tmp_path, wrong, DBOPS_BACKUP_DIR=str(store.root))

    verify = run_dbops(["backup", "verify", backup["id"]], env, timeout=120)
    assert verify.returncode == 1
    (line,) = verify.stderr.strip().splitlines()
    assert f"backup {backup['id']} was encrypted with key {right_id}, the key given is {wrong_id}" in line
    assert "modified" not in line and "signature" not in line

    listed = run_dbops(["backup", "list"], env, timeout=120)
    assert listed.stdout == "" and listed.stderr.strip() == (
        f"ignored backup {backup['id']}: it was encrypted with key {right_id}, the key given is {wrong_id}")
    pruned = run_dbops(["backup", "prune"], {**env, "DBOPS_BACKUP_KEEP_LAST": "1"}, timeout=120)
    assert pruned.returncode == 0 and (store.root / object_key(backup["id"], MANIFEST)).exists()


# item 10: unfinished writes older than a day are removed by prune, only under backups/ and wal/

def test_prune_removes_partial_files_older_than_a_day(tmp_path: Path, master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    kept = genuine(store, master_key, "logical", 1)
    two_days_ago = time.time() - 2 * 86400
    files = {
        "old_backup": f"backups/{kept['id']}-dead/dump.pgc.zst.enc.partial",
        "old_wal": "wal/000000010000000000000003.zst.enc.partial",
        "fresh_backup": "backups/20991231T000000Z-logical-running/dump.pgc.zst.enc.partial",
        "old_elsewhere": "scratch/notes.partial",
    }
    for label, name in files.items():
        path = store.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
        if label.startswith("old"):
            os.utime(path, (two_days_ago, two_days_ago))

    preview = prune(store, master_key, keep_last=7, keep_days=None, dry_run=True)
    assert sorted(u.name for u in preview.unfinished) == sorted([files["old_backup"], files["old_wal"]])
    assert all((store.root / n).exists() for n in files.values())

    done = prune(store, master_key, keep_last=7, keep_days=None)
    assert len(done.unfinished) == 2 and done.ids == []
    assert not (store.root / files["old_backup"]).exists() and not (store.root / files["old_wal"]).exists()
    assert (store.root / files["fresh_backup"]).exists()  # may be a backup still running
    assert (store.root / files["old_elsewhere"]).exists()  # not dbops' own
    assert [m["id"] for m in read_store(store, master_key).backups] == [kept["id"]]


def test_prune_aborts_unfinished_multipart_uploads_once_old_enough(s3_store: S3Store, master_key: MasterKey,
                                                                   seaweed: SeaweedS3) -> None:
    """SeaweedFS reports each upload's Initiated time, but a test cannot backdate it: the same fresh uploads are
    kept at the default age (a day) and aborted at age 0."""
    client = seaweed.client()
    genuine(s3_store, master_key, "logical", 1)
    mine = ["nightly/backups/20261201T000000Z-logical-dead00/dump.pgc.zst.enc",
            "nightly/wal/000000010000000000000007.zst.enc"]
    theirs = ["nightly/scratch/upload.bin", "other/backups/20261201T000000Z-logical-dead00/dump.pgc.zst.enc"]
    for key in mine + theirs:
        upload = client.create_multipart_upload(Bucket=s3_store.bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=s3_store.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"part")

    def open_uploads() -> list[str]:
        return sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", []))

    assert prune(s3_store, master_key, keep_last=7, keep_days=None).unfinished == []
    assert open_uploads() == sorted(mine + theirs)
    time.sleep(1.1)  # Initiated has a one-second resolution
    done = prune(s3_store, master_key, keep_last=7, keep_days=None, unfinished_after=timedelta(0))
    assert sorted(u.name for u in done.unfinished) == sorted(k.removeprefix("nightly/") for k in mine)
    assert open_uploads() == sorted(theirs)
    assert len(read_store(s3_store, master_key).backups) == 1


# item 11: a silent S3 endpoint fails fast, in one line naming it

@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_silent_s3_endpoint_fails_backup_list_within_60_seconds(tmp_path: Path, silent_endpoint: str) -> None:
    env = cli_env(tmp_path, generate_key(), DBOPS_BACKUP_STORE="s3", DBOPS_BACKUP_BUCKET="dbops-silent",
                  DBOPS_BACKUP_PREFIX="nightly", DBOPS_BACKUP_S3_ENDPOINT=silent_endpoint,
                  AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    began = time.monotonic()
    result = run_dbops(["backup", "list"], env, timeout=300)
    elapsed = time.monotonic() - began
    assert result.returncode != 0
    assert elapsed < 60, f"took {elapsed:.0f} s"
    (line,) = result.stderr.strip().splitlines()
    assert silent_endpoint in line and "timeout" in line.lower(), line
    assert SECRET_KEY not in line

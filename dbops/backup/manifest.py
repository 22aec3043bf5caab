"""Backup manifests: what a backup holds and how to prove it is intact.

A backup is ``backups/<id>/`` in the store: its data objects and ``manifest.json``, written last. A backup without a
manifest is incomplete and never listed, so an interrupted backup can never become "latest". Manifests are signed
with a key derived from the master key; one edited by hand fails verification.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.store import Store, StoreError

PREFIX = "backups/"
MANIFEST = "manifest.json"


def new_backup_id(kind: str) -> str:
    """Sortable by time, then unique: ``20261125T091941Z-full-b62121``."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{kind}-{uuid.uuid4().hex[:6]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def discard(store: Store, key: str) -> None:
    """Best-effort removal of a partial object; the failure that got us here is the one to report."""
    try:
        store.delete(key)
    except Exception:  # noqa: S110 - e.g. the S3 server is the thing that went away
        pass


def object_key(backup_id: str, name: str) -> str:
    return f"{PREFIX}{backup_id}/{name}"


def save_manifest(store: Store, key: MasterKey, manifest: dict[str, Any]) -> None:
    manifest["signature"] = key.sign(manifest)
    store.write_bytes(object_key(manifest["id"], MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode())


def load_manifest(store: Store, backup_id: str, key: MasterKey | None = None) -> dict[str, Any]:
    try:
        raw = store.read_bytes(object_key(backup_id, MANIFEST))
    except StoreError as exc:
        raise BackupIntegrityError(f"backup {backup_id} has no manifest in {store.describe()}",
                                   "it is incomplete or does not exist; see `dbops backup list`") from exc
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BackupIntegrityError(f"the manifest of backup {backup_id} is not valid JSON", "it was damaged") from exc
    if key is not None and not key.verify_signature(manifest):
        raise BackupIntegrityError(f"the manifest of backup {backup_id} was modified (signature mismatch)",
                                   "restore it from a copy, or take a new backup")
    return manifest


def list_backups(store: Store) -> list[dict[str, Any]]:
    """Complete backups (those with a manifest), oldest first. Signatures are checked by verify, not here."""
    out = []
    for name in store.list(PREFIX):
        if name.endswith("/" + MANIFEST):
            backup_id = name[len(PREFIX):-len(MANIFEST) - 1]
            try:
                out.append(load_manifest(store, backup_id))
            except BackupIntegrityError:
                continue
    return sorted(out, key=lambda m: (m.get("finished_at", ""), m["id"]))


def latest(store: Store, kind: str | None = None) -> dict[str, Any] | None:
    backups = [m for m in list_backups(store) if kind is None or m.get("kind") == kind]
    return backups[-1] if backups else None


def verify_objects(store: Store, manifest: dict[str, Any]) -> dict[str, float]:
    """Re-read every object and compare its size and sha256 with the manifest; name the first bad one."""
    checked = {}
    for obj in manifest["objects"]:
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in store.get(object_key(manifest["id"], obj["name"])):
                digest.update(chunk)
                size += len(chunk)
        except StoreError as exc:
            raise BackupIntegrityError(f"object {obj['name']} of backup {manifest['id']} is missing",
                                       "the backup cannot be restored; take a new one") from exc
        if size != obj["size"]:
            raise BackupIntegrityError(
                f"object {obj['name']} of backup {manifest['id']} has {size} bytes, manifest says {obj['size']}",
                "the object is truncated or damaged; take a new backup")
        if digest.hexdigest() != obj["sha256"]:
            raise BackupIntegrityError(
                f"object {obj['name']} of backup {manifest['id']} fails its sha256 check",
                "the object was modified or damaged; take a new backup")
        checked[obj["name"]] = size
    return checked

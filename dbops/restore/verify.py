"""Proving a backup before a restore touches anything: every object read once, checked and decrypted through."""

from __future__ import annotations

from typing import Any

from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.objects import object_plaintext
from dbops.backup.store import ObjectMissing, Store


def verify_backup(store: Store, key: MasterKey, manifest: dict[str, Any]) -> None:
    """Prove every object of a backup intact before a restore touches its target: size and sha256 against the
    manifest and a full decryption (every AES-GCM chunk authenticated, the zstd stream complete), output discarded,
    in one read of each object. The first bad object is named."""
    data_key = key.unwrap(manifest["encryption"], manifest["id"])
    for obj in manifest["objects"]:
        _verify_object(store, data_key, manifest, obj)


def _verify_object(store: Store, data_key: bytes, manifest: dict[str, Any], obj: dict[str, Any]) -> None:
    try:
        for _ in object_plaintext(store, data_key, manifest, obj):
            pass
    except ObjectMissing as exc:
        raise BackupIntegrityError(f"object {obj['name']} of backup {manifest['id']} is missing",
                                   "the backup cannot be restored; take a new one") from exc


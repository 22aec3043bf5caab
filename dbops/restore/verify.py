"""Proving a backup before a restore touches anything: every object read once, checked and decrypted through."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.manifest import object_key
from dbops.backup.store import ObjectMissing, Store
from dbops.backup.stream import decompress, decrypt


def verify_backup(store: Store, key: MasterKey, manifest: dict[str, Any]) -> None:
    """Prove every object of a backup intact before a restore touches its target: size and sha256 against the
    manifest and a full decryption (every AES-GCM chunk authenticated, the zstd stream complete), output discarded,
    in one read of each object. The first bad object is named."""
    data_key = key.unwrap(manifest["encryption"], manifest["id"])
    for obj in manifest["objects"]:
        _verify_object(store, data_key, manifest, obj)


def _verify_object(store: Store, data_key: bytes, manifest: dict[str, Any], obj: dict[str, Any]) -> None:
    name = f"object {obj['name']} of backup {manifest['id']}"
    digest, size = hashlib.sha256(), 0

    def raw() -> Iterator[bytes]:
        nonlocal size
        for chunk in store.get(object_key(manifest["id"], obj["name"])):
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    stream = raw()
    failure: BackupIntegrityError | None = None
    try:
        for _ in decompress(decrypt(stream, data_key, name, object_context(manifest, obj)), name):
            pass
    except ObjectMissing as exc:
        raise BackupIntegrityError(f"{name} is missing", "the backup cannot be restored; take a new one") from exc
    except BackupIntegrityError as exc:
        failure = exc
        for _ in stream:  # read the rest: a damaged object is reported by its checksum first
            pass
    if size != obj["size"] or digest.hexdigest() != obj["sha256"]:
        raise BackupIntegrityError(f"{name} fails its sha256 check ({size} bytes, manifest says {obj['size']})",
                                   "the object was modified or damaged; take a new backup") from failure
    if failure is not None:
        raise failure


def object_context(manifest: dict[str, Any], obj: dict[str, Any]) -> bytes:
    """What an object's encryption authenticates besides its chunks: its name in a directory-format dump (so two
    objects cannot be swapped), nothing in a single-object backup."""
    return str(obj["name"]).encode() if manifest.get("dump_format") == "directory" else b""


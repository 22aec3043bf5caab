"""Reading one stored object of a backup back: fetched, decrypted and decompressed, and held to its manifest entry."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from dbops.backup.keys import BackupIntegrityError
from dbops.backup.manifest import object_key
from dbops.backup.store import Store
from dbops.backup.stream import decompress, decrypt


def object_context(manifest: dict[str, Any], obj: dict[str, Any]) -> bytes:
    """What an object's encryption authenticates besides its chunks: its name in a directory-format dump (so two
    objects cannot be swapped), nothing in a single-object backup."""
    return str(obj["name"]).encode() if manifest.get("dump_format") == "directory" else b""


def object_plaintext(store: Store, data_key: bytes, manifest: dict[str, Any], obj: dict[str, Any]) -> Iterator[bytes]:
    """The plaintext blocks of object ``obj`` of ``manifest``'s backup. After the last block the stored bytes' size
    and sha256 are checked against the manifest; a damaged object is reported by its checksum first (the rest is read
    even when decryption fails). A missing object raises the store's ObjectMissing: the caller says what it means."""
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
        yield from decompress(decrypt(stream, data_key, name, object_context(manifest, obj)), name)
    except BackupIntegrityError as exc:
        failure = exc
        for _ in stream:
            pass
    if size != obj.get("size") or digest.hexdigest() != obj.get("sha256"):
        raise BackupIntegrityError(f"{name} fails its sha256 check ({size} bytes, manifest says {obj.get('size')})",
                                   "the object was modified or damaged; take a new backup") from failure
    if failure is not None:
        raise failure

"""Backup manifests: what a backup holds and how to prove it is intact, and the one reader of the store's backups.

A backup is ``backups/<id>/`` in the store: its data objects and ``manifest.json``, written last. A backup without a
manifest is incomplete and never listed, so an interrupted backup can never become "latest". Manifests are signed
with a key derived from the master key.

Everything that reads backups from the store (``list``, ``latest``, ``prune``, the choice of an incremental's parent,
restores, drills, the security audit) goes through :func:`load_manifest` / :func:`read_store`, which accept a manifest
only when, in this order:

1. it was made with the key given (``encryption.key_id``): a wrong key is named as such, not as tampering;
2. its signature verifies: an edited or forged manifest is rejected;
3. its ``id`` is the name of the folder it was read from, and (format 2) its signed ``store_prefix`` is the store's
   prefix: a manifest copied into another backup's folder, or from another prefix, does not verify there;
4. its object names and parent are plain names inside the backup's folder (no ``..``, no absolute paths).

:func:`read_store` reports every rejected manifest (:class:`Ignored`) and leaves it out, so prune never deletes a
folder whose manifest it could not verify.

The store prefix is bound, the bucket and the local path are not: a local store can be moved on disk, a bucket
replicated or synced to another bucket under the same prefix, and a local store uploaded to a bucket without prefix
(and back). A store copied to a *different* prefix does not verify there: read it with ``DBOPS_BACKUP_PREFIX`` set to
its original prefix. Format-1 manifests (written before the prefix was bound) are still read; for them only the key,
the signature and the folder id are checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dbops.backup.keys import KEY_ENV, BackupIntegrityError, MasterKey
from dbops.backup.store import ObjectMissing, Store

PREFIX = "backups/"
MANIFEST = "manifest.json"
FORMAT = 2  # 2: the store prefix is part of what is signed
PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # a backup id or one component of an object name

KeySource = MasterKey | Callable[[], MasterKey]  # a key, or a function asked for it once there is something to check

log = logging.getLogger("dbops.backup")


class ManifestRejected(BackupIntegrityError):
    """A manifest that does not verify: ``reason`` says why, in words that follow "ignored backup <id>: "."""

    def __init__(self, backup_id: str, reason: str, fix: str, problem: str | None = None,
                 wrong_key: bool = False) -> None:
        self.backup_id, self.reason, self.wrong_key = backup_id, reason, wrong_key
        super().__init__(problem or f"backup {backup_id}: {reason}", fix)


@dataclass(frozen=True)
class Ignored:
    backup_id: str
    reason: str
    wrong_key: bool = False  # made with another master key: not verifiable here, which is not evidence of tampering

    def __str__(self) -> str:
        return f"ignored backup {self.backup_id}: {self.reason}"


@dataclass
class Listing:
    backups: list[dict[str, Any]] = field(default_factory=list)  # verified, oldest first
    ignored: list[Ignored] = field(default_factory=list)  # folders whose manifest does not verify


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


def is_backup_id(value: object) -> bool:
    return isinstance(value, str) and bool(PLAIN.match(value))


def is_object_name(value: object) -> bool:
    """A relative name inside a backup's folder: plain components (``dump.d/toc.dat.zst.enc``), at most two."""
    return isinstance(value, str) and 0 < value.count("/") + 1 <= 2 and all(PLAIN.match(p) for p in value.split("/"))


def object_key(backup_id: str, name: str) -> str:
    """The store key of object ``name`` of a backup; refuses anything that would leave the backup's own folder."""
    if not is_backup_id(backup_id):
        raise BackupIntegrityError(f"{backup_id!r} is not a backup id",
                                   "backup ids are letters, digits, '.', '_' and '-' (see `dbops backup list`)")
    if name != MANIFEST and not is_object_name(name):
        raise BackupIntegrityError(f"{name!r} is not an object name inside backup {backup_id}",
                                   "object names are plain names inside their backup's folder")
    return f"{PREFIX}{backup_id}/{name}"


def _key(source: KeySource) -> MasterKey:
    return source if isinstance(source, MasterKey) else source()


def save_manifest(store: Store, key: MasterKey, manifest: dict[str, Any]) -> None:
    """Sign and write a manifest, bound to its id and to the store's prefix (format 2)."""
    for obj in manifest.get("objects", []):
        object_key(manifest["id"], obj["name"])  # refuse to sign a name prune or restore could not follow
    manifest["format"] = FORMAT
    manifest["store_prefix"] = store.prefix
    manifest["signature"] = key.sign(manifest)
    store.write_bytes(object_key(manifest["id"], MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode())


def load_manifest(store: Store, backup_id: str, key: KeySource) -> dict[str, Any]:
    """The manifest of ``backup_id``, verified as the module docstring says; :class:`ManifestRejected` if not."""
    if not is_backup_id(backup_id):
        raise ManifestRejected(backup_id, "that is not a backup id",
                               "backup ids are letters, digits, '.', '_' and '-' (see `dbops backup list`)",
                               problem=f"{backup_id!r} is not a backup id")
    try:
        raw = store.read_bytes(object_key(backup_id, MANIFEST))
    except ObjectMissing as exc:
        raise ManifestRejected(backup_id, f"it has no manifest in {store.describe()}",
                               "it is incomplete or does not exist; see `dbops backup list`",
                               problem=f"backup {backup_id} has no manifest in {store.describe()}") from exc
    try:
        manifest = json.loads(raw)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        raise ManifestRejected(backup_id, "its manifest is not a JSON object", "it was damaged")
    master = _key(key)
    encryption = manifest.get("encryption")
    made_with = encryption.get("key_id") if isinstance(encryption, dict) else None
    if made_with is not None and made_with != master.key_id:
        raise ManifestRejected(
            backup_id, f"it was encrypted with key {made_with}, the key given is {master.key_id}",
            f"set {KEY_ENV} to the key that made this backup",
            problem=f"backup {backup_id} was encrypted with key {made_with}, the key given is {master.key_id}",
            wrong_key=True)
    if not master.verify_signature(manifest):
        raise ManifestRejected(backup_id, "manifest signature does not verify",
                               "it was modified or forged: restore the folder from a copy, or take a new backup")
    if manifest.get("id") != backup_id:
        raise ManifestRejected(backup_id, f"its folder holds the manifest of backup {manifest.get('id')}",
                               "a manifest verifies only in its own backup's folder: remove the copied one")
    if manifest.get("format", 1) >= FORMAT and manifest.get("store_prefix") != store.prefix:
        raise ManifestRejected(
            backup_id, f"it was written under store prefix {manifest.get('store_prefix')!r}, this store's prefix is "
            f"{store.prefix!r}",
            "manifests are bound to their store prefix: read it with DBOPS_BACKUP_PREFIX set to the prefix it was "
            "written under")
    bad = [obj.get("name") for obj in manifest.get("objects", []) if not is_object_name(obj.get("name"))]
    if bad:
        raise ManifestRejected(backup_id, f"its manifest names object {bad[0]!r} outside its folder",
                               "object names must be plain names inside their backup's folder")
    if manifest.get("parent") is not None and not is_backup_id(manifest["parent"]):
        raise ManifestRejected(backup_id, f"its parent {manifest['parent']!r} is not a backup id",
                               "the manifest is not one dbops wrote")
    return manifest


def read_store(store: Store, key: KeySource) -> Listing:
    """Every backup of the store whose manifest verifies (oldest first), and the ones that do not, with why.

    ``key`` may be a function: it is asked only when the store holds a manifest, so an empty store needs no key.
    A store that cannot be read raises :class:`StoreError`; it never turns into "no backups".
    """
    listing = Listing()
    master: MasterKey | None = None
    for name in store.list(PREFIX):
        if not name.endswith("/" + MANIFEST):
            continue
        folder = name[len(PREFIX):-len(MANIFEST) - 1]
        if not is_backup_id(folder):
            listing.ignored.append(Ignored(folder, "its folder name is not a backup id"))
            continue
        master = master or _key(key)
        try:
            listing.backups.append(load_manifest(store, folder, master))
        except ManifestRejected as exc:
            listing.ignored.append(Ignored(folder, exc.reason, exc.wrong_key))
    listing.backups.sort(key=lambda m: (str(m.get("finished_at", "")), m["id"]))
    return listing


def list_backups(store: Store, key: KeySource) -> list[dict[str, Any]]:
    """The verified backups, oldest first; rejected manifests are logged (use :func:`read_store` to report them)."""
    listing = read_store(store, key)
    for item in listing.ignored:
        log.warning("%s", item)
    return listing.backups


def latest(store: Store, key: KeySource, kind: str | tuple[str, ...] | None = None) -> dict[str, Any] | None:
    """The newest verified backup (of ``kind``); None if the store has none. When none verifies but some folders
    were rejected, that is the answer instead (a wrong key, a tampered manifest), never a silent "no backup"."""
    kinds = (kind,) if isinstance(kind, str) else kind
    listing = read_store(store, key)
    for item in listing.ignored:
        log.warning("%s", item)
    backups = [m for m in listing.backups if kinds is None or m.get("kind") in kinds]
    if not backups and listing.ignored:
        first, more = listing.ignored[0], len(listing.ignored) - 1
        what = "/".join(kinds) + " " if kinds else ""
        raise BackupIntegrityError(
            f"no {what}backup in {store.describe()} verifies: {first}" + (f" (and {more} more)" if more else ""),
            f"set {KEY_ENV} to the key that made them" if first.wrong_key else
            "see `dbops backup verify`: a manifest that does not verify is never used")
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
        except ObjectMissing as exc:
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


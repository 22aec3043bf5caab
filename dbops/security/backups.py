"""Encryption at rest: every backup manifest verifies and says AES-256-GCM, and the master key is not stored beside
the backups."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dbops.backup.keys import KEY_ENV, KEY_FILE_ENV, MasterKey
from dbops.backup.manifest import Listing, read_store
from dbops.backup.store import LocalStore, Store, StoreError, store_from_settings
from dbops.errors import ConfigError
from dbops.security.catalog import A04, A08, control
from dbops.security.findings import A02_CRYPTO, Finding, Severity
from dbops.settings import BackupSettings

KEY_LIKE_SUFFIXES = (".key", ".pem", ".b64")
KEY_LIKE_WORDS = ("master", "backup-key", "backup_key", "secret")
SMALL_OBJECT = 4096

control("SEC030", "backups exist, are readable and verified", A08)
control("SEC031", "backups are encrypted", A04)
control("SEC032", "backup data keys are wrapped, never stored in clear", A04)
control("SEC033", "the backup key is not stored beside the backups", A04)
control("SEC034", "backup manifests verify", A08)


def backup_store_for(backup: BackupSettings) -> Store | None:
    """The store the backup steps write to: the target's, when it is configured (s3, or a local directory that
    exists); None when there is none."""
    if backup.store == "local" and not backup.directory.is_dir():
        return None
    return store_from_settings(backup)


def key_env(backup: BackupSettings) -> dict[str, str]:
    """The target's key as the audit reads it: ``{DBOPS_BACKUP_KEY: ...}`` or ``{DBOPS_BACKUP_KEY_FILE: ...}``."""
    if backup.key is not None and backup.key.is_set:
        return {KEY_ENV: backup.key.resolve()}
    return {KEY_FILE_ENV: str(backup.key_file)} if backup.key_file is not None else {}


def _master_key_text(env: Mapping[str, str]) -> str | None:
    if env.get(KEY_ENV):
        return env[KEY_ENV].strip()
    if env.get(KEY_FILE_ENV):
        try:
            return Path(env[KEY_FILE_ENV]).read_text().strip()
        except OSError:
            return None
    return None


def audit_backups(store: Store | None, env: Mapping[str, str] | None = None) -> list[Finding]:
    """Findings about the backups in ``store`` (None: no store configured); ``env`` holds the key (:func:`key_env`,
    none: the manifests are not verified)."""
    env = {} if env is None else env
    if store is None:
        return [Finding("SEC030", "no backups found", Severity.INFO, A02_CRYPTO, "backups",
                        "no backup store configured: encryption at rest not verified",
                        "set DBOPS_BACKUP_STORE / DBOPS_BACKUP_DIR and take a backup (`dbops backup run`)")]
    out: list[Finding] = []
    try:
        names = store.list("")
        try:
            listing = read_store(store, lambda: MasterKey.from_env(env))
        except ConfigError as exc:  # manifests to verify, but no (valid) key to verify them with
            listing = Listing()
            out.append(Finding("SEC030", "backups not verified", Severity.INFO, A02_CRYPTO, store.describe(),
                               f"the backup manifests cannot be verified: {exc.problem}",
                               exc.fix or "set the backup key"))
    except StoreError as exc:
        return [Finding("SEC030", "backup store unreadable", Severity.INFO, A02_CRYPTO, store.describe(),
                        str(exc), "fix the backup store settings")]
    manifests = listing.backups
    out += [Finding("SEC034", "backup manifest does not verify", Severity.HIGH, A02_CRYPTO,
                   f"backup {item.backup_id}", str(item),
                   "find out who wrote it: restore the folder from a copy, or remove it by hand once understood")
           for item in listing.ignored if not item.wrong_key]
    other_key = [item.backup_id for item in listing.ignored if item.wrong_key]
    if other_key:
        out.append(Finding("SEC030", "backups not verified", Severity.INFO, A02_CRYPTO, store.describe(),
                           f"{len(other_key)} backup(s) were made with another master key ({', '.join(other_key[:3])}"
                           f"{', ...' if len(other_key) > 3 else ''}): not verified",
                           f"audit with the key that made them in {KEY_ENV}"))
    if not manifests and not out:
        return [Finding("SEC030", "no backups found", Severity.INFO, A02_CRYPTO, store.describe(),
                        f"no complete backup in {store.describe()}: encryption at rest not verified",
                        "take a backup (`dbops backup run`) and audit again")]
    for manifest in manifests:
        encryption = manifest.get("encryption") or {}
        if encryption.get("algorithm") != "AES-256-GCM" or not encryption.get("wrapped_key", True):
            out.append(Finding("SEC031", "backup not encrypted", Severity.HIGH, A02_CRYPTO,
                               f"backup {manifest.get('id')}",
                               f"manifest says encryption = {encryption.get('algorithm', 'none')}",
                               "set DBOPS_BACKUP_KEY and take a new encrypted backup; delete the plain one"))
        if any(k in encryption for k in ("key", "data_key", "plain_key")):
            out.append(Finding("SEC032", "backup data key stored in clear", Severity.CRITICAL, A02_CRYPTO,
                               f"backup {manifest.get('id')}", "the manifest holds an unwrapped data key",
                               "delete the backup and take a new one with envelope encryption"))
    key_text = _master_key_text(env)
    beside: list[str] = []
    if env.get(KEY_FILE_ENV) and isinstance(store, LocalStore):
        key_file = Path(env[KEY_FILE_ENV]).resolve()
        if store.root.resolve() in key_file.parents:
            beside.append(f"{KEY_FILE_ENV} points inside the store ({key_file.name})")
    for name in names:
        base = name.rsplit("/", 1)[-1].lower()
        if base.endswith(KEY_LIKE_SUFFIXES) or any(w in base for w in KEY_LIKE_WORDS):
            beside.append(f"object {name} looks like a key file")
            continue
        if key_text and isinstance(store, LocalStore):
            path = store.root / name
            if path.stat().st_size <= SMALL_OBJECT and key_text.encode() in path.read_bytes():
                beside.append(f"object {name} contains the master key")
    for where in beside:
        out.append(Finding("SEC033", "backup key stored beside the backups", Severity.CRITICAL, A02_CRYPTO,
                           store.describe(), where,
                           "move the key to a secret store (environment/KMS), delete it from the backup store and"
                           " rotate it"))
    return out

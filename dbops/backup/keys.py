"""Envelope encryption keys: a master key from the environment wraps a random data key per backup.

The master key is 32 bytes, given base64-encoded in ``DBOPS_BACKUP_KEY`` or as a file named by
``DBOPS_BACKUP_KEY_FILE``. Its id (a hash prefix, not secret) is written in each manifest (``encryption.key_id``) and
checked before the manifest's signature, so a wrong key is reported as "backup X was encrypted with key A, the key
given is B", not as tampering, and rotating the master key only re-wraps the small data keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dbops.errors import ConfigError, DbopsError
from dbops.settings import BackupSettings

KEY_ENV = "DBOPS_BACKUP_KEY"
KEY_FILE_ENV = "DBOPS_BACKUP_KEY_FILE"


class BackupIntegrityError(DbopsError):
    """A stored backup is damaged, incomplete, or not what its manifest says."""


def generate_key() -> str:
    """A new master key, base64, for ``DBOPS_BACKUP_KEY``."""
    return base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class MasterKey:
    secret: bytes

    @classmethod
    def from_settings(cls, backup: BackupSettings) -> MasterKey:
        """The target's key: ``backup.key`` (a secret reference, resolved now) first, else ``backup.key_file``."""
        if backup.key is not None and backup.key.is_set:
            return cls.from_text(backup.key.resolve(), backup.key.env)
        if backup.key_file is not None:
            try:
                raw = backup.key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the backup key file {backup.key_file}: {exc.strerror}",
                                  f"fix {KEY_FILE_ENV} (backup.key_file) or set {KEY_ENV}") from exc
            return cls.from_text(raw, str(backup.key_file))
        name = backup.key.env if backup.key is not None else KEY_ENV
        raise ConfigError(f"no backup encryption key: {name} and {KEY_FILE_ENV} are unset",
                          f"set {name} to 32 random bytes in base64 (`dbops backup keygen` prints one)")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MasterKey:
        """The key in a mapping of ``DBOPS_BACKUP_KEY`` / ``DBOPS_BACKUP_KEY_FILE`` (tests, child environments)."""
        raw = env.get(KEY_ENV)
        if raw:
            return cls.from_text(raw, KEY_ENV)
        if env.get(KEY_FILE_ENV):
            try:
                raw = Path(env[KEY_FILE_ENV]).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the backup key file {env[KEY_FILE_ENV]}: {exc.strerror}",
                                  f"fix {KEY_FILE_ENV} or set {KEY_ENV}") from exc
            return cls.from_text(raw, env[KEY_FILE_ENV])
        raise ConfigError(f"no backup encryption key: {KEY_ENV} and {KEY_FILE_ENV} are unset",
                          f"set {KEY_ENV} to 32 random bytes in base64 (`dbops backup keygen` prints one)")

    @classmethod
    def from_text(cls, raw: str, source: str = KEY_ENV) -> MasterKey:
        """A key from its base64 text; ``source`` (a variable or file name, never the value) names it in errors."""
        if not raw:
            raise ConfigError(f"{source} is empty", "use `dbops backup keygen` to make a key")
        try:
            secret = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"{source} is not valid base64", "use `dbops backup keygen` to make a key") from exc
        if len(secret) != 32:
            raise ConfigError(f"{source} must decode to 32 bytes, got {len(secret)}",
                              "use `dbops backup keygen` to make a key")
        return cls(secret)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"dbops-key-id:" + self.secret).hexdigest()[:16]

    def wrap(self, data_key: bytes, backup_id: str) -> dict[str, str]:
        nonce = os.urandom(12)
        wrapped = AESGCM(self.secret).encrypt(nonce, data_key, b"dbops-data-key:" + backup_id.encode())
        return {"key_id": self.key_id, "nonce": base64.b64encode(nonce).decode(),
                "wrapped_key": base64.b64encode(wrapped).decode()}

    def unwrap(self, wrapped: dict[str, str], backup_id: str) -> bytes:
        if wrapped.get("key_id") != self.key_id:
            raise BackupIntegrityError(
                f"backup {backup_id} was encrypted with key {wrapped.get('key_id')}, the key given is {self.key_id}",
                f"set {KEY_ENV} to the key that made this backup",
            )
        try:
            return AESGCM(self.secret).decrypt(base64.b64decode(wrapped["nonce"]),
                                               base64.b64decode(wrapped["wrapped_key"]),
                                               b"dbops-data-key:" + backup_id.encode())
        except (InvalidTag, KeyError, ValueError) as exc:
            raise BackupIntegrityError(f"the data key of backup {backup_id} cannot be unwrapped",
                                       "the manifest was altered or the key is wrong") from exc

    def sign(self, document: dict[str, Any]) -> str:
        """HMAC over the canonical JSON of a manifest (without its signature): edits by hand are detected."""
        body = json.dumps({k: v for k, v in document.items() if k != "signature"}, sort_keys=True,
                          separators=(",", ":")).encode()
        return hmac.new(hashlib.sha256(b"dbops-manifest:" + self.secret).digest(), body, hashlib.sha256).hexdigest()

    def verify_signature(self, document: dict[str, Any]) -> bool:
        return hmac.compare_digest(self.sign(document), str(document.get("signature", "")))

"""Backup configuration from the environment, validated up front.

| variable | meaning | default |
|---|---|---|
| ``DBOPS_BACKUP_STORE`` | ``local`` or ``s3`` | ``local`` |
| ``DBOPS_BACKUP_DIR`` | local store directory | ``$DBOPS_HOME/backups`` |
| ``DBOPS_BACKUP_BUCKET`` / ``DBOPS_BACKUP_PREFIX`` | S3 bucket and key prefix | — / empty |
| ``DBOPS_BACKUP_S3_ENDPOINT`` / ``_S3_REGION`` / ``_S3_SSE`` | S3 endpoint, region, SSE | AWS / us-east-1 / none |
| ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` | S3 credentials (boto3's usual chain) | |
| ``DBOPS_BACKUP_KEY`` | master key, 32 bytes base64 | |
| ``DBOPS_BACKUP_KEY_FILE`` | file holding the master key (when DBOPS_BACKUP_KEY is unset) | |
| ``DBOPS_BACKUP_KEEP_LAST`` / ``DBOPS_BACKUP_KEEP_DAYS`` | retention | 7 / unset |
| ``DBOPS_DRILL_RTO_SECONDS`` | recovery-time target checked by every drill | 1800 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dbops.backup.keys import MasterKey
from dbops.backup.store import Store, store_from_env
from dbops.errors import ConfigError


def _number(env: dict[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number", f"set {name} to a positive number") from exc
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive", f"set {name} to a positive number")
    return value


@dataclass(frozen=True)
class BackupSettings:
    store: Store
    key_env: dict[str, str]
    keep_last: int | None
    keep_days: float | None
    rto_seconds: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, home: Path | None = None) -> BackupSettings:
        env = dict(os.environ) if env is None else env
        keep_last = _number(env, "DBOPS_BACKUP_KEEP_LAST", 7)
        return cls(
            store=store_from_env(env, (home / "backups") if home else None),
            key_env=env,
            keep_last=int(keep_last) if keep_last else None,
            keep_days=_number(env, "DBOPS_BACKUP_KEEP_DAYS", None),
            rto_seconds=_number(env, "DBOPS_DRILL_RTO_SECONDS", 1800.0) or 1800.0,
        )

    def key(self) -> MasterKey:
        """Read lazily: listing and pruning need no key, backup, verify and restore do."""
        return MasterKey.from_env(self.key_env)

"""What the security audit compares the database with: the access-control matrix, the TLS policy, the backups."""

from pathlib import Path

from dbops.backup.store import Store
from dbops.components.resources import TargetedResource, launch_target
from dbops.security.backups import backup_store_for, key_env


class SecurityResource(TargetedResource):
    """``matrix`` defaults to ``sql/access-control.yml`` (or DBOPS_ACCESS_CONTROL); ``require_tls`` unset means TLS is
    required when ssl is on or the server listens beyond loopback. Backups are read from the
    target's store (DBOPS_BACKUP_*)."""

    matrix: str = ""
    require_tls: bool | None = None
    check_backups: bool = True

    @property
    def matrix_path(self) -> Path:
        return Path(self.matrix) if self.matrix else launch_target(self.target).access_control

    def backup_key_env(self) -> dict[str, str]:
        """The target's backup key, for verifying the manifests (see :func:`dbops.security.backups.key_env`)."""
        return key_env(launch_target(self.target).backup)

    def backup_store(self) -> Store | None:
        return backup_store_for(launch_target(self.target).backup)

"""What the security audit compares the database with: the access-control matrix, the TLS policy, the backups."""

from pathlib import Path

from dbops.backup.store import Store
from dbops.components.resources import TargetedResource, launch_settings, launch_target
from dbops.security.backups import backup_store_for, key_env
from dbops.security.grants import BaselineStore, baseline_path


class SecurityResource(TargetedResource):
    """``matrix`` defaults to the target's ``access_control`` (``sql/access-control.yml`` for the reference schema;
    none for a team database, whose grants are compared with the baseline the first audit records under
    ``$DBOPS_HOME/security/<target>/``); ``require_tls`` unset means TLS is required when ssl is on or the server
    listens beyond loopback. Backups are read from the target's store (DBOPS_BACKUP_*)."""

    matrix: str = ""
    require_tls: bool | None = None
    check_backups: bool = True

    @property
    def matrix_path(self) -> Path | None:
        return Path(self.matrix) if self.matrix else launch_target(self.target).access_control

    @property
    def schemas(self) -> tuple[str, ...]:
        """The target's schemas (empty: every user schema)."""
        return launch_target(self.target).schemas

    def baseline(self) -> BaselineStore | None:
        """The target's grants baseline, when it has no matrix."""
        if self.matrix_path is not None:
            return None
        name = launch_target(self.target).name
        return BaselineStore(baseline_path(launch_settings().home, name), name)

    def backup_key_env(self) -> dict[str, str]:
        """The target's backup key, for verifying the manifests (see :func:`dbops.security.backups.key_env`)."""
        return key_env(launch_target(self.target).backup)

    def backup_store(self) -> Store | None:
        return backup_store_for(launch_target(self.target).backup)

"""What the security audit compares the database with: the access-control matrix, the TLS policy, the backups."""

from pathlib import Path

import dagster as dg

from dbops.security.cli import backup_store_from_env, default_matrix


class SecurityResource(dg.ConfigurableResource):
    """``matrix`` defaults to ``sql/access-control.yml`` (or DBOPS_ACCESS_CONTROL); ``require_tls`` unset means TLS is
    required when ssl is on or the server listens beyond loopback. Backups are read from the DBOPS_BACKUP_* store."""

    matrix: str = ""
    require_tls: bool | None = None
    check_backups: bool = True

    @property
    def matrix_path(self) -> Path:
        return Path(self.matrix) if self.matrix else default_matrix()

    def backup_store(self):  # noqa: ANN201 - dbops.backup.store.Store | None
        return backup_store_from_env()

"""What the security audit compares the database with: the access-control matrix, the TLS policy, the backups."""

from pathlib import Path

import dagster as dg

from dbops.backup.store import Store
from dbops.security.backups import backup_store_from_env
from dbops.security.matrix import default_matrix


class SecurityResource(dg.ConfigurableResource):
    """``matrix`` defaults to ``sql/access-control.yml`` (or DBOPS_ACCESS_CONTROL); ``require_tls`` unset means TLS is
    required when ssl is on or the server listens beyond loopback. Backups are read from the DBOPS_BACKUP_* store."""

    matrix: str = ""
    require_tls: bool | None = None
    check_backups: bool = True

    @property
    def matrix_path(self) -> Path:
        return Path(self.matrix) if self.matrix else default_matrix()

    def backup_store(self) -> Store | None:
        return backup_store_from_env()

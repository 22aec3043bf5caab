"""Where the migrations live and how they are checked; the database itself is the shared ``database`` resource."""

import os
from dataclasses import replace
from pathlib import Path

import dagster as dg

from dbops.config import Settings
from dbops.migrate import Migrator
from dbops.migrate.rehearsal import Thresholds


class MigrationsResource(dg.ConfigurableResource):
    """The versioned SQL folder (Flyway layout) and the migrator's options."""

    locations: str = ""
    out_of_order: bool = False
    lint_exclude: list[str] = []
    # Rehearsal (migration_rehearsal): zero / empty falls back to DBOPS_REHEARSAL_* (see dbops.migrate.rehearsal).
    rehearsal_large_table_mb: float = 0.0
    rehearsal_max_lock_seconds: float = 0.0
    rehearsal_server_url: str = ""  # where scratch copies are restored; default DBOPS_REHEARSAL_SERVER_URL, else
    # the managed database's own server

    @property
    def path(self) -> Path:
        return Path(self.locations) if self.locations else Settings.from_env().migrations_dir

    def migrator(self, url: str) -> Migrator:
        kwargs = {"out_of_order": self.out_of_order}
        if self.lint_exclude:
            kwargs["lint_exclude"] = tuple(self.lint_exclude)
        return Migrator(url, self.path, **kwargs)

    def rehearsal_thresholds(self) -> Thresholds:
        base = Thresholds.from_env()
        return replace(
            base,
            large_table_bytes=int(self.rehearsal_large_table_mb * 1048576) or base.large_table_bytes,
            max_exclusive_seconds=self.rehearsal_max_lock_seconds or base.max_exclusive_seconds,
        )

    def rehearsal_server(self, database_url: str) -> str:
        return self.rehearsal_server_url or os.environ.get("DBOPS_REHEARSAL_SERVER_URL", "") or database_url

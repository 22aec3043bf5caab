"""Resources shared by the lifecycle steps: the managed database, the backup store several steps read (backup,
restore, the migration rehearsal) and the migrations folder (migrate, and the catalog's drift check). Secrets arrive
through ``dg.EnvVar`` or the environment and are resolved at launch."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from dbops.backup.keys import MasterKey
from dbops.backup.manifest import Listing, read_store
from dbops.backup.store import Store, store_from_env
from dbops.config import Settings
from dbops.migrate import Migrator
from dbops.migrate.rehearsal import Thresholds
from dbops.pg.connect import check_url, connection
from dbops.redact import redact_url


class DatabaseResource(dg.ConfigurableResource):
    """The managed PostgreSQL database.

    ``production`` marks a target where destructive or heavy operations (load tests, scratch restores on the same
    server) must be explicitly allowed.
    """

    url: str
    production: bool = False

    @contextmanager
    def connect(self, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
        with connection(check_url(self.url), **kwargs) as conn:
            yield conn

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


class BackupResource(dg.ConfigurableResource):
    """Store and key settings; empty fields fall back to the DBOPS_BACKUP_* environment variables.

    ``rto_target_seconds`` is the recovery-time objective every drill is checked against; ``max_age_hours`` how old
    the newest complete backup may be before ``backup_fresh`` fails; ``max_wal_segments_behind`` how many finished
    WAL files may be missing from the archive before ``wal_archive_current`` fails.
    """

    store: str = ""  # local | s3
    directory: str = ""
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    rto_target_seconds: float = 1800.0
    max_age_hours: float = 26.0
    max_wal_segments_behind: int = 2

    def open_store(self) -> Store:
        env = dict(os.environ)
        for field, var in (("store", "DBOPS_BACKUP_STORE"), ("directory", "DBOPS_BACKUP_DIR"),
                           ("bucket", "DBOPS_BACKUP_BUCKET"), ("prefix", "DBOPS_BACKUP_PREFIX"),
                           ("endpoint_url", "DBOPS_BACKUP_S3_ENDPOINT")):
            value = getattr(self, field)
            if value:
                env[var] = value
        return store_from_env(env, default_root=Settings.from_env().home / "backups")

    def master_key(self) -> MasterKey:
        return MasterKey.from_env()

    @property
    def bin_dir(self) -> Path | None:
        return Settings.from_env().pg_bin

    @property
    def staging_root(self) -> Path:
        """Where a directory-format dump or restore stages its plaintext: $DBOPS_HOME/staging (0700)."""
        return Settings.from_env().staging_root

    @property
    def wal_spool(self) -> Path | None:
        """The spool the server's archive_command fills (the embedded server's, or DBOPS_WAL_SPOOL)."""
        return Settings.from_env().wal_spool


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


def read_verified(context: dg.AssetExecutionContext, store: Store, key: MasterKey) -> Listing:
    """The store's verified backups; each manifest that does not verify is logged (and left alone)."""
    listing = read_store(store, key)
    for item in listing.ignored:
        context.log.warning(str(item))
    return listing


def default_resources() -> dict[str, Any]:
    return {
        "database": DatabaseResource(
            url=dg.EnvVar("DBOPS_DATABASE_URL"),
            production=False,
        ),
    }

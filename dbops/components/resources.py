"""Resources shared by the lifecycle steps: the managed database, the backup store several steps read (backup,
restore, the migration rehearsal) and the migrations folder (migrate, and the catalog's drift check).

One resource object serves every target: an asset of target ``shop`` calls ``database.for_target("shop")`` (the
component closes over its target's name), so many targets share the resource keys without their values clashing. A
field left empty takes the target's value from :func:`dbops.settings.load_settings`, read when the resource is used (a
run's launch); secrets stay references until then."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from dbops.backup.keys import MasterKey
from dbops.backup.manifest import Listing, read_store
from dbops.backup.store import Store, store_from_settings
from dbops.health.targets import Limits, load_targets
from dbops.migrate import BaselineRecord, Migrator, migrator_options
from dbops.migrate.rehearsal import Thresholds
from dbops.pg.connect import check_url, connection
from dbops.redact import redact_url
from dbops.settings import BackupSettings, Settings, TargetSettings, current_settings


def launch_settings() -> Settings:
    """The settings of this process, read now (re-read when a DBOPS_* variable or the config file changed): Dagster
    resources take their values from here, never from the environment directly."""
    return current_settings()


def launch_target(name: str = "") -> TargetSettings:
    """The target called ``name`` (empty: the default target) of :func:`launch_settings`."""
    return launch_settings().target(name or None)


def launch_limits(name: str = "") -> Limits:
    """The thresholds (``limits:``) of target ``name``'s targets file, read now."""
    return load_targets(launch_target(name).targets_file).limits


class TargetedResource(dg.ConfigurableResource):
    """A resource shared by every target; ``for_target`` gives the copy an asset of one target uses."""

    target: str = ""

    def for_target(self, name: str):  # type: ignore[no-untyped-def]
        """This resource bound to target ``name`` (a resource configured for one target keeps it)."""
        return self if self.target else self.model_copy(update={"target": name})


class DatabaseResource(TargetedResource):
    """The managed PostgreSQL database: ``target``'s (empty: the default target) unless ``url`` is given.

    ``production`` marks a target where destructive or heavy operations (load tests, scratch restores on the same
    server) must be explicitly allowed; unset, it is the target's ``production`` setting (``DBOPS_PRODUCTION``).
    """

    url: str = ""
    production: bool | None = None

    @property
    def target_url(self) -> str:
        """The database's URL (with its password: never print it, use ``display_url``)."""
        return check_url(self.url) if self.url else launch_settings().target_url(self.target or None)

    @property
    def is_production(self) -> bool:
        return self.production if self.production is not None else launch_target(self.target).production

    @contextmanager
    def connect(self, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
        with connection(self.target_url, **kwargs) as conn:
            yield conn

    @property
    def display_url(self) -> str:
        return redact_url(self.target_url)


class BackupResource(TargetedResource):
    """Store and key settings; empty fields take the target's ``backup`` settings (DBOPS_BACKUP_*, dbops.yaml).

    The thresholds its checks use (the RTO every drill is checked against, how old the newest backup may be, how many
    WAL files may be missing from the archive) are the target's ``limits`` (its targets file): see ``limits``.
    """

    store: str = ""  # local | s3
    directory: str = ""
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""

    @property
    def limits(self) -> Limits:
        return launch_limits(self.target)

    def backup_settings(self) -> BackupSettings:
        """The target's backup settings with this resource's non-empty fields over them."""
        backup = launch_target(self.target).backup
        s3 = replace(backup.s3, bucket=self.bucket or backup.s3.bucket, prefix=self.prefix or backup.s3.prefix,
                     endpoint=self.endpoint_url or backup.s3.endpoint)
        return replace(backup, store=self.store or backup.store,
                       directory=Path(self.directory) if self.directory else backup.directory, s3=s3)

    def open_store(self) -> Store:
        return store_from_settings(self.backup_settings())

    def master_key(self) -> MasterKey:
        return MasterKey.from_settings(self.backup_settings())

    @property
    def bin_dir(self) -> Path | None:
        return launch_settings().pg_bin

    @property
    def staging_root(self) -> Path:
        """Where a directory-format dump or restore stages its plaintext: $DBOPS_HOME/staging (0700)."""
        return launch_settings().staging_root

    @property
    def wal_spool(self) -> Path | None:
        """The spool the server's archive_command fills (the embedded server's, or DBOPS_WAL_SPOOL)."""
        return launch_target(self.target).wal_spool


class MigrationsResource(TargetedResource):
    """The versioned SQL folder (Flyway layout) and the migrator's options."""

    locations: str = ""
    out_of_order: bool = False
    lint_exclude: list[str] = []
    # Rehearsal (migration_rehearsal): zero / empty takes the target's rehearsal settings (DBOPS_REHEARSAL_*).
    rehearsal_large_table_mb: float = 0.0
    rehearsal_max_lock_seconds: float = 0.0
    rehearsal_server_url: str = ""  # where scratch copies are restored; default DBOPS_REHEARSAL_SERVER_URL, else
    # the managed database's own server

    @property
    def path(self) -> Path:
        return Path(self.locations) if self.locations else launch_target(self.target).migrations

    def _own(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"out_of_order": self.out_of_order}
        if self.lint_exclude:
            kwargs["lint_exclude"] = tuple(self.lint_exclude)
        return kwargs

    def options(self) -> dict[str, Any]:
        """The migrator's keyword arguments: the target's migrate settings (``migrator_options``), then this
        resource's own (for a migrator built elsewhere, e.g. the rehearsal's)."""
        return {**migrator_options(launch_target(self.target)), **self._own()}

    @property
    def baseline_record(self) -> BaselineRecord:
        """Where a baseline of this target records the schema it adopted ($DBOPS_HOME/migrate/<target>)."""
        settings = launch_settings()
        return BaselineRecord.of(settings.home, settings.target(self.target or None).name, settings.pg_bin)

    def migrator(self, url: str) -> Migrator:
        return Migrator.for_target(url, launch_target(self.target), locations=self.path, record=self.baseline_record,
                                   **self._own())

    def rehearsal_thresholds(self) -> Thresholds:
        base = Thresholds.from_settings(launch_target(self.target).rehearsal)
        return replace(
            base,
            large_table_bytes=int(self.rehearsal_large_table_mb * 1048576) or base.large_table_bytes,
            max_exclusive_seconds=self.rehearsal_max_lock_seconds or base.max_exclusive_seconds,
        )

    def exclude_roles(self) -> tuple[str, ...]:
        """Roles whose statements the query replay leaves out (the target's ``profile.exclude_roles``)."""
        return tuple(launch_target(self.target).profile.exclude_roles)

    def rehearsal_server(self, database_url: str) -> str:
        server = launch_target(self.target).rehearsal.server_url
        return self.rehearsal_server_url or (server.resolve() if server else "") or database_url


def read_verified(context: dg.AssetExecutionContext, store: Store, key: MasterKey) -> Listing:
    """The store's verified backups; each manifest that does not verify is logged (and left alone)."""
    listing = read_store(store, key)
    for item in listing.ignored:
        context.log.warning(str(item))
    return listing


def default_resources() -> dict[str, Any]:
    return {
        "database": DatabaseResource(),  # the default target's URL and production flag, read at launch
    }

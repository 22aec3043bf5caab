"""The typed settings: frozen dataclasses, one section per lifecycle step, built by ``load_settings``.

Secrets are :class:`SecretRef` values: the name of the environment variable that holds the secret, resolved only when
it is used (the way Dagster's ``EnvVar`` is), so a Settings object can be printed, logged or compared without ever
containing a password.

``Settings`` keeps the attributes and methods of the former ``dbops.config.Settings`` (``port``, ``db_name``,
``target_url()``, ``server()``, ...): they act on the default target.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from dbops.errors import ConfigError, UnknownTarget
from dbops.pg.connect import check_url, with_database
from dbops.pg.server import EmbeddedServer
from dbops.settings.options import runs_reference_schema

DAGSTER_DB_NAME = "dagster"
MASK = "***"


@dataclass(frozen=True)
class SecretRef:
    """A secret by reference: ``env`` names the variable; ``environ`` is the environment it is read from at use."""

    env: str
    environ: Mapping[str, str] = field(repr=False, compare=False, hash=False)

    @property
    def is_set(self) -> bool:
        return bool(self.environ.get(self.env))

    def resolve(self) -> str:
        """The secret, read now. Never print it; pass it to the program that needs it."""
        value = self.environ.get(self.env)
        if not value:
            raise ConfigError(f"{self.env} is unset", f"export {self.env} where dbops runs, or fix the name")
        return value

    def __str__(self) -> str:
        return MASK if self.is_set else f"<unset: {self.env}>"

    def __repr__(self) -> str:
        return f"SecretRef({self.env!r}: {self})"


@dataclass(frozen=True)
class DagsterSettings:
    url: SecretRef | None  # None: database `dagster` on the default target's server
    home: Path


@dataclass(frozen=True)
class SeedSettings:
    scale: float


@dataclass(frozen=True)
class LoadTestSettings:
    workloads: Path
    replay_statements: int


@dataclass(frozen=True)
class MigrateSettings:
    default_schema: str
    table: str
    baseline_on_migrate: bool
    baseline_version: str
    placeholder_replacement: bool
    placeholders: tuple[tuple[str, str], ...]  # (name, value), sorted


@dataclass(frozen=True)
class ProfileSettings:
    exclude_roles: tuple[str, ...]
    review_dir: Path
    scratch_url: SecretRef | None


@dataclass(frozen=True)
class PartitionSettings:
    tables: tuple[str, ...]  # none: every range-partitioned table with a date/timestamp key in the target's schemas
    ahead_daily: int
    ahead_monthly: int
    lock_timeout_s: float
    retention_days: int | None  # None: partitions are kept
    drop_detached: bool


@dataclass(frozen=True)
class MatviewSettings:
    views: tuple[str, ...]  # none: every materialized view of the target's schemas
    max_age_hours: float


@dataclass(frozen=True)
class LogSettings:
    """The server log pgBadger reads (the ``log_report`` asset)."""

    path: Path | None  # None: the embedded server's log, else the file the server names (logging_collector on)
    line_prefix: str | None  # None: the server's log_line_prefix
    format: str | None  # None: from the file's suffix or the server's log_destination
    top: int
    max_errors: int | None  # None: ERROR lines do not fail the check
    max_fatal: int
    retention_weeks: int
    anonymize: bool


@dataclass(frozen=True)
class ValidationSettings:
    expectations: Path | None  # None: only the rules derived from the database's constraints
    start_date: date | None  # None: from the data (the oldest row), else backfill_days before today
    backfill_days: int
    time_columns: tuple[tuple[str, str], ...]  # (schema.table, column), sorted


@dataclass(frozen=True)
class RehearsalSettings:
    enabled: bool
    large_table_mb: float
    max_lock_seconds: float
    sample_ms: float
    server_url: SecretRef | None  # None: the target's own server
    replay_statements: int = 200
    plan_regression_factor: float = 2.0

    @property
    def large_table_bytes(self) -> int:
        return int(self.large_table_mb * 1048576)

    @property
    def sample_interval(self) -> float:
        """Seconds between lock samples."""
        return self.sample_ms / 1000


@dataclass(frozen=True)
class S3Settings:
    bucket: str | None
    prefix: str
    endpoint: str | None
    region: str | None
    sse: str | None
    access_key_id: SecretRef | None  # None (both): boto3's usual chain (AWS_ACCESS_KEY_ID, ...)
    secret_access_key: SecretRef | None


@dataclass(frozen=True)
class BackupSettings:
    store: str  # local | s3
    directory: Path
    s3: S3Settings
    key: SecretRef | None  # used first when both are set (DBOPS_BACKUP_KEY and DBOPS_BACKUP_KEY_FILE, as before)
    key_file: Path | None
    keep_last: int
    keep_days: float | None


@dataclass(frozen=True)
class SmtpSettings:
    host: str | None
    port: int
    sender: str | None
    recipients: tuple[str, ...]
    user: str | None
    password: SecretRef | None
    starttls: bool


@dataclass(frozen=True)
class HealthSettings:
    """What the health sensor samples besides the database itself."""

    pooler_url: SecretRef | None  # the PgBouncer admin console (None: no pooler figures)
    long_query_seconds: float


@dataclass(frozen=True)
class AlertSettings:
    slack_webhook: SecretRef | None
    webhook_url: SecretRef | None
    log_file: Path
    smtp: SmtpSettings
    failures: bool = True  # failed runs, materializations and checks notify too
    runbook_base: str = "docs/runbooks"  # folder or URL holding <Alert>.md


@dataclass(frozen=True)
class ScheduleSettings:
    enabled: bool
    cron: str


@dataclass(frozen=True)
class TargetSettings:
    """One managed database and everything dbops does to it."""

    name: str
    url: SecretRef | None  # None: a database on the embedded server
    embedded: bool
    db_name: str
    production: bool
    owners: tuple[str, ...]  # Dagster owners of the target's assets (team:<name> or an email)
    schemas: tuple[str, ...]
    migrations: Path
    migrate: MigrateSettings
    access_control: Path | None  # None: no matrix; the first audit records the grants as the baseline
    targets_file: Path
    wal_spool: Path | None
    seed: SeedSettings
    loadtest: LoadTestSettings
    profile: ProfileSettings
    validation: ValidationSettings
    partitions: PartitionSettings
    matviews: MatviewSettings
    logs: LogSettings
    rehearsal: RehearsalSettings
    backup: BackupSettings
    health: HealthSettings
    alerts: AlertSettings
    schedules: Mapping[str, ScheduleSettings]


@dataclass(frozen=True)
class Settings:
    """Everything dbops is configured with: the global options and one :class:`TargetSettings` per database."""

    config_file: Path | None
    project_dir: Path
    home: Path
    default_target: str
    log_level: str
    pg_port: int
    pg_bin: Path | None
    wal_archive: bool
    pgbouncer: Path | None
    dagster: DagsterSettings
    targets: Mapping[str, TargetSettings]
    # dotted key ("targets.shop.backup.keep_last") -> where its value came from ("dbops.yaml:12", "DBOPS_X", "default")
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def target(self, name: str | None = None) -> TargetSettings:
        """The target called ``name`` (the default target when None); a clear error naming the closest one."""
        name = name or self.default_target
        if name in self.targets:
            return self.targets[name]
        close = difflib.get_close_matches(name, list(self.targets), n=1)
        hint = f"did you mean {close[0]}?" if close else "use one of " + ", ".join(self.targets)
        raise UnknownTarget(f"no target named {name!r}", hint)

    # --- the former dbops.config.Settings, for the default target ----------------------------------------------------

    @property
    def port(self) -> int:
        return self.pg_port

    @property
    def db_name(self) -> str:
        return self.target().db_name

    @property
    def migrations_dir(self) -> Path:
        return self.target().migrations

    @property
    def embedded(self) -> bool:
        """True when the default target is a database on dbops' own server."""
        return self.target().embedded

    @property
    def database_url(self) -> str | None:
        """The default target's URL when it is external (resolved now: never print it), else None."""
        ref = self.target().url
        return check_url(ref.resolve()) if ref else None

    @property
    def dagster_database_url(self) -> str | None:
        return check_url(self.dagster.url.resolve()) if self.dagster.url else None

    @property
    def wal_spool(self) -> Path | None:
        return self.target().wal_spool

    @property
    def server_wal_spool(self) -> Path | None:
        """The spool the embedded server's archive_command fills (shared by every target on that server)."""
        default = self.target()
        if default.embedded:
            return default.wal_spool
        return self.home / "wal-spool" if self.wal_archive else None

    @property
    def staging_root(self) -> Path:
        """Where a parallel dump or restore stages its plaintext files: private (0700), never the system temp dir."""
        return self.home / "staging"

    @property
    def dagster_home(self) -> Path:
        return self.dagster.home

    def server(self) -> EmbeddedServer:
        """dbops' embedded server (a ConfigError when no target lives on it)."""
        if not any(t.embedded for t in self.targets.values()):
            raise ConfigError(
                "every target is external (DBOPS_DATABASE_URL or url_env), so dbops does not run a server of its own",
                "unset DBOPS_DATABASE_URL, or give a target `embedded: true`, to use the embedded server",
            )
        return EmbeddedServer(self.home, self.pg_port, self.pg_bin, wal_spool=self.server_wal_spool)

    def runs_reference_schema(self, name: str | None = None) -> bool:
        """The target's migrations are the checkout's reference schema (`sql/migrations`), as opposed to a team's."""
        return runs_reference_schema(self.target(name).migrations, self.project_dir)

    def target_url(self, name: str | None = None) -> str:
        """URL of a target's database (with its password: never print it, use ``redact_url``)."""
        target = self.target(name)
        if target.url is not None:
            return check_url(target.url.resolve())
        return self.server().url(target.db_name)

    def dagster_url(self) -> str:
        if self.dagster.url is not None:
            return check_url(self.dagster.url.resolve())
        return with_database(self.target_url(), DAGSTER_DB_NAME)

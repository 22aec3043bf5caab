"""Everything Dagster needs before it starts: the database up, its URL in the environment, and DAGSTER_HOME ready.

Both `dbops ui` and `dbops run` go through :func:`prepare_environment`, so a run started from the CLI lands in the
same PostgreSQL instance storage the UI reads.
"""

from __future__ import annotations

import os
import shutil
from urllib.parse import unquote, urlsplit

from dbops.config import DAGSTER_DB_NAME, Settings, project_dir
from dbops.errors import ConfigError
from dbops.pg.connect import database_name, ensure_database
from dbops.redact import register_secret


def ensure_embedded(settings: Settings) -> bool:
    """Start the embedded server if dbops runs its own, and create the target and ``dagster`` databases."""
    if not settings.embedded:
        return False
    server = settings.server()
    started = server.start()
    admin = server.url("postgres")
    ensure_database(admin, settings.db_name)
    ensure_database(admin, DAGSTER_DB_NAME)
    return started


def dagster_storage_env(url: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables dagster.yaml reads, from a PostgreSQL URL."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ConfigError(
            "Dagster's storage URL needs a host name (a Unix-socket URL is not supported by dagster-postgres)",
            "set DBOPS_DAGSTER_DATABASE_URL=postgresql://user:password@host:port/dagster",
        )
    password = unquote(parts.password or "")
    register_secret(password)
    return {
        "DAGSTER_PG_USERNAME": unquote(parts.username or "postgres"),
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_PG_HOST": parts.hostname,
        "DAGSTER_PG_PORT": str(parts.port or 5432),
        "DAGSTER_PG_DB": database_name(url),
    }


def ensure_demo_backup_key(settings: Settings) -> None:
    """On the embedded server only: a generated backup key in $DBOPS_HOME/secrets (0600) when none is configured.

    A real deployment sets DBOPS_BACKUP_KEY (or DBOPS_BACKUP_KEY_FILE) from its secret store, never beside the
    backups.
    """
    if not settings.embedded or os.environ.get("DBOPS_BACKUP_KEY") or os.environ.get("DBOPS_BACKUP_KEY_FILE"):
        return
    from dbops.backup.keys import generate_key

    path = settings.home / "secrets" / "backup.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(generate_key() + "\n")
    os.environ["DBOPS_BACKUP_KEY_FILE"] = str(path)


def prepare_environment(settings: Settings | None = None) -> Settings:
    """Make the current process (and its children) ready to load dbops' definitions against the right database."""
    settings = settings or Settings.from_env()
    ensure_embedded(settings)
    ensure_demo_backup_key(settings)
    target = settings.target_url()
    dagster_url = settings.dagster_url()
    ensure_database(dagster_url, database_name(dagster_url))
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    source = project_dir() / "dagster.yaml"
    if not source.exists():
        raise ConfigError(f"{source} is missing", "run dbops from its checkout or set DBOPS_PROJECT_DIR")
    shutil.copyfile(source, home / "dagster.yaml")
    os.environ.update(dagster_storage_env(dagster_url))
    os.environ["DBOPS_DATABASE_URL"] = target
    if settings.wal_spool is not None:  # the URL above makes later Settings "external": keep the embedded spool
        os.environ["DBOPS_WAL_SPOOL"] = str(settings.wal_spool)
    os.environ["DBOPS_MIGRATIONS"] = str(settings.migrations_dir)
    os.environ["DAGSTER_HOME"] = str(home)
    if settings.embedded:  # dbops' tooling connects as the superuser; the application as its own roles
        os.environ.setdefault("DBOPS_PROFILE_EXCLUDE_ROLES", "postgres,dbops_owner,dbops_migrator")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
    register_secret(urlsplit(target).password)
    return settings

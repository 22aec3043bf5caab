"""Everything Dagster needs before it starts: the database up (:mod:`dbops.embedded`), its URL in the environment, the
demo's backup key, and DAGSTER_HOME ready.

Both `dbops ui` and `dbops run` go through :func:`prepare_environment`, so a run started from the CLI lands in the
same PostgreSQL instance storage the UI reads.
"""

from __future__ import annotations

import os

from dbops.backup.keys import generate_key
from dbops.config import Settings, project_dir
from dbops.embedded import ensure_embedded
from dbops.errors import ConfigError
from dbops.pg.connect import database_name, ensure_database, parse_url
from dbops.private import private_dir, write_private


def dagster_storage_env(url: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables dagster.yaml reads, from a PostgreSQL URL."""
    parsed = parse_url(url)  # registers the password with dbops.redact
    if not parsed.host or parsed.host.startswith("/") or "," in parsed.host:
        raise ConfigError(
            "Dagster's storage URL needs one host name (a Unix-socket URL is not supported by dagster-postgres)",
            "set DBOPS_DAGSTER_DATABASE_URL=postgresql://user:password@host:port/dagster",
        )
    return {
        "DAGSTER_PG_USERNAME": parsed.user or "postgres",
        "DAGSTER_PG_PASSWORD": parsed.password or "",
        "DAGSTER_PG_HOST": parsed.host,
        "DAGSTER_PG_PORT": str(parsed.port or 5432),
        "DAGSTER_PG_DB": database_name(url),
    }


def ensure_demo_backup_key(settings: Settings) -> None:
    """On the embedded server only: a generated backup key in $DBOPS_HOME/secrets (0600) when none is configured.

    A real deployment sets DBOPS_BACKUP_KEY (or DBOPS_BACKUP_KEY_FILE) from its secret store, never beside the
    backups.
    """
    if not settings.embedded or os.environ.get("DBOPS_BACKUP_KEY") or os.environ.get("DBOPS_BACKUP_KEY_FILE"):
        return
    path = settings.home / "secrets" / "backup.key"
    if not path.exists():
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(generate_key() + "\n")
    os.environ["DBOPS_BACKUP_KEY_FILE"] = str(path)


def prepare_environment(settings: Settings | None = None) -> Settings:
    """Make the current process (and its children) ready to load dbops' definitions against the right database.

    The umask becomes 077: Dagster (and every run it starts) then writes its event log, compute logs and run files
    under DAGSTER_HOME readable by their owner only; they hold statement texts and step output.
    """
    os.umask(0o077)
    settings = settings or Settings.from_env()
    ensure_embedded(settings)
    ensure_demo_backup_key(settings)
    target = settings.target_url()
    dagster_url = settings.dagster_url()
    ensure_database(dagster_url, database_name(dagster_url))
    home = private_dir(settings.dagster_home)
    source = project_dir() / "dagster.yaml"
    if not source.exists():
        raise ConfigError(f"{source} is missing", "run dbops from its checkout or set DBOPS_PROJECT_DIR")
    write_private(home / "dagster.yaml", source.read_bytes())
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
    parse_url(target)  # registers its password with dbops.redact
    return settings

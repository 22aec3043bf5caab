"""Everything Dagster needs before it starts: the database up (:mod:`dbops.embedded`), the demo's backup key, and
DAGSTER_HOME ready.

Both `dbops ui` and `dbops run` go through :func:`prepare_environment`, so a run started from the CLI lands in the
same PostgreSQL instance storage the UI reads. No DBOPS_* variable is written back: Dagster's resources read their
values with :func:`dbops.settings.load_settings` at launch, which derives the same ones (the embedded server's URL from
its password file, the demo key's path). What is set is Dagster's own interface: the DAGSTER_PG_* variables
``dagster.yaml`` reads for the instance storage, DAGSTER_HOME, and its and GX's telemetry switches.
"""

from __future__ import annotations

import os
from pathlib import Path

from dbops.backup.keys import generate_key
from dbops.embedded import ensure_embedded
from dbops.errors import ConfigError
from dbops.pg.connect import database_name, ensure_database, parse_url
from dbops.private import private_dir, write_private
from dbops.settings import Settings, load_settings

# dagster.yaml of the local instance, copied into DAGSTER_HOME by prepare_environment.
INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")


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
    """On the embedded server only: a generated backup key in $DBOPS_HOME/secrets (0600) when none is configured
    (the settings' default ``backup.key_file`` of an embedded target, with no ``backup.key_env``).

    A real deployment sets DBOPS_BACKUP_KEY (or DBOPS_BACKUP_KEY_FILE) from its secret store, never beside the
    backups.
    """
    default = settings.home / "secrets" / "backup.key"
    for target in settings.targets.values():
        backup = target.backup
        if not target.embedded or backup.key is not None or backup.key_file != default or default.exists():
            continue
        private_dir(default.parent)
        fd = os.open(default, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(generate_key() + "\n")


def prepare_environment(settings: Settings | None = None) -> Settings:
    """Make the current process (and its children) ready to load dbops' definitions against the right database.

    The umask becomes 077: Dagster (and every run it starts) then writes its event log, compute logs and run files
    under DAGSTER_HOME readable by their owner only; they hold statement texts and step output.
    """
    os.umask(0o077)
    settings = settings or load_settings()
    ensure_embedded(settings)
    ensure_demo_backup_key(settings)
    target = settings.target_url()
    dagster_url = settings.dagster_url()
    ensure_database(dagster_url, database_name(dagster_url))
    home = private_dir(settings.dagster_home)
    # The instance's template lives in the package, not at the project's root: `dg dev` warns about a dagster.yaml in
    # the working directory that is not DAGSTER_HOME's.
    source = INSTANCE_TEMPLATE
    if not source.exists():
        raise ConfigError(f"{source} is missing", "reinstall dbops (pip install -e .)")
    write_private(home / "dagster.yaml", source.read_bytes())
    # Dagster's interface, not dbops' configuration: dagster.yaml's instance storage and its home.
    os.environ.update(dagster_storage_env(dagster_url))
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
    parse_url(target)  # registers its password with dbops.redact
    return settings

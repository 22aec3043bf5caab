"""Where dbops finds its database, its files and its secrets: the environment, read once and validated.

| variable | meaning | default |
|---|---|---|
| ``DBOPS_DATABASE_URL`` | the managed database; when set, dbops never starts a server of its own | embedded |
| ``DBOPS_DAGSTER_DATABASE_URL`` | Dagster's instance storage | database ``dagster`` on the same server |
| ``DBOPS_HOME`` | state directory (embedded cluster, Dagster home, private staging) | ``./.dbops`` |
| ``DBOPS_PG_PORT`` | TCP port of the embedded server (loopback only) | 55432 |
| ``DBOPS_DB_NAME`` | name of the managed database on the embedded server | ``dbops`` |
| ``DBOPS_PG_BIN`` | PostgreSQL bin directory to use instead of the embedded build | |
| ``DBOPS_MIGRATIONS`` | folder of versioned SQL migrations | ``sql/migrations`` |
| ``DBOPS_WAL_ARCHIVE`` | ``on``/``off``: the embedded server archives WAL into ``$DBOPS_HOME/wal-spool`` | ``on`` |
| ``DBOPS_WAL_SPOOL`` | spool directory a server's ``archive_command`` copies WAL into (external servers) | |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dbops.errors import ConfigError
from dbops.pg.connect import check_url, with_database
from dbops.pg.server import EmbeddedServer

DEFAULT_PORT = 55432
DEFAULT_DB_NAME = "dbops"
DAGSTER_DB_NAME = "dagster"


def project_dir() -> Path:
    """The checkout holding ``sql/`` and ``dagster.yaml``: ``DBOPS_PROJECT_DIR``, else the package's parent."""
    explicit = os.environ.get("DBOPS_PROJECT_DIR")
    if explicit:
        return Path(explicit).absolute()
    here = Path(__file__).resolve().parent.parent
    if (here / "sql").is_dir():
        return here
    return Path.cwd()



def positive_number(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    """``env[name]`` as a positive number, ``default`` when unset or empty; a clear error otherwise."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None or value <= 0:
        example = f", e.g. {default:g}" if default else ""
        raise ConfigError(f"{name}={raw!r} is not a positive number", f"set {name} to a positive number{example}")
    return value

@dataclass(frozen=True)
class Settings:
    home: Path
    port: int
    db_name: str
    migrations_dir: Path
    database_url: str | None = None
    dagster_database_url: str | None = None
    pg_bin: Path | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        raw_port = env.get("DBOPS_PG_PORT", str(DEFAULT_PORT))
        try:
            port = int(raw_port)
            if not 1 <= port <= 65535:
                raise ValueError
        except ValueError as exc:
            raise ConfigError(
                f"DBOPS_PG_PORT={raw_port!r} is not a TCP port", "use a number from 1024 to 65535"
            ) from exc
        url = env.get("DBOPS_DATABASE_URL") or None
        if url is not None:
            check_url(url)
        dagster_url = env.get("DBOPS_DAGSTER_DATABASE_URL") or None
        if dagster_url is not None:
            check_url(dagster_url)
        home = Path(env.get("DBOPS_HOME") or Path.cwd() / ".dbops").absolute()
        migrations = Path(env.get("DBOPS_MIGRATIONS") or project_dir() / "sql" / "migrations")
        pg_bin = Path(env["DBOPS_PG_BIN"]) if env.get("DBOPS_PG_BIN") else None
        return cls(
            home=home,
            port=port,
            db_name=env.get("DBOPS_DB_NAME", DEFAULT_DB_NAME),
            migrations_dir=migrations,
            database_url=url,
            dagster_database_url=dagster_url,
            pg_bin=pg_bin,
        )

    @property
    def embedded(self) -> bool:
        """True when dbops runs its own server (no DBOPS_DATABASE_URL)."""
        return self.database_url is None

    def server(self) -> EmbeddedServer:
        if not self.embedded:
            raise ConfigError(
                "DBOPS_DATABASE_URL is set, so dbops does not run a server of its own",
                "unset DBOPS_DATABASE_URL to use the embedded server",
            )
        return EmbeddedServer(self.home, self.port, self.pg_bin, wal_spool=self.wal_spool)

    @property
    def wal_spool(self) -> Path | None:
        """Where the server's archive_command leaves WAL for `dbops wal push --spool` (None: no spool)."""
        explicit = os.environ.get("DBOPS_WAL_SPOOL")
        if explicit:
            return Path(explicit).absolute()
        if self.embedded and os.environ.get("DBOPS_WAL_ARCHIVE", "on").lower() not in ("off", "0", "false", "no"):
            return self.home / "wal-spool"
        return None

    @property
    def staging_root(self) -> Path:
        """Where a parallel dump or restore stages its plaintext files: private (0700), never the system temp dir
        (see :mod:`dbops.staging`)."""
        return self.home / "staging"

    def target_url(self) -> str:
        """URL of the managed database (with its password: never print it, use ``redact_url``)."""
        if self.database_url:
            return self.database_url
        return self.server().url(self.db_name)

    def dagster_url(self) -> str:
        if self.dagster_database_url:
            return self.dagster_database_url
        return with_database(self.target_url(), DAGSTER_DB_NAME)

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster").absolute()

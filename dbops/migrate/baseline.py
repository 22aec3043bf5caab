"""What a baseline adopted: the schema of the database at the moment it was baselined, kept where dbops keeps state.

A baseline says "versions up to V are already in this database" without any file to show what that means, so drift
could never be judged on a baselined database. Each baseline dbops makes therefore records the schema it adopted: a
schema-only ``pg_dump`` (plain SQL, owners and grants included) in ``<home>/migrate/<target>/baseline.sql`` beside
``baseline.json`` (version, history table, database, when, and the database's own settings such as its
``search_path``, which a dump without ``--create`` leaves out). The drift check restores that into its scratch
database, baselines it at the same version and applies the later migrations: what the live schema should be.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql

from dbops.errors import DbopsError
from dbops.migrate.files import MigrationError
from dbops.pg.binaries import client_bin_dir, find_program
from dbops.pg.connect import connection, database_name, server_major, split_password
from dbops.programs import run_command
from dbops.redact import redact

_SETTINGS = """
SELECT unnest(setconfig) FROM pg_db_role_setting
WHERE setrole = 0 AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class Captured:
    """A dump taken for a baseline that is not committed yet, and the database's settings (``name=value``)."""

    path: Path
    settings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BaselineRecord:
    """The record of one target's baseline: ``folder`` holds ``baseline.sql`` and ``baseline.json``."""

    folder: Path
    bin_dir: Path | None = None  # PostgreSQL's programs (DBOPS_PG_BIN); None: found as for backups

    @classmethod
    def of(cls, home: Path, target: str, bin_dir: Path | None = None) -> BaselineRecord:
        return cls(Path(home) / "migrate" / target, bin_dir)

    @property
    def sql_path(self) -> Path:
        return self.folder / "baseline.sql"

    @property
    def meta_path(self) -> Path:
        return self.folder / "baseline.json"

    def meta(self) -> dict[str, Any] | None:
        """What the record says (version, history, database, recorded_at), or None when there is no record."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise MigrationError(f"cannot read the baseline record {self.meta_path}: {exc}",
                                 "restore it from a backup of dbops' home, or baseline the database again") from exc
        return meta if self.sql_path.is_file() else None

    def _programs(self, url: str, name: str) -> Path:
        return find_program(name, client_bin_dir(self.bin_dir, server_major(url)))

    def capture(self, url: str) -> Captured:
        """Dump ``url``'s schema to a temporary file beside the record; :meth:`keep` makes it the record."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.sql_path.with_suffix(".sql.tmp")
        bare, password = split_password(url)
        try:
            run_command([self._programs(url, "pg_dump"), "--schema-only", "--no-password", "-f", tmp, "-d", bare],
                        password=password, timeout=600, what="pg_dump --schema-only (baseline record)")
        except DbopsError as exc:
            tmp.unlink(missing_ok=True)
            raise MigrationError(f"cannot record the schema the baseline adopts: {redact(exc.problem)}",
                                 "nothing was baselined; fix the cause (DBOPS_PG_BIN for PostgreSQL's programs) and "
                                 "baseline again") from exc
        with connection(url) as conn:
            settings = [str(r[0]) for r in conn.execute(_SETTINGS)]
        return Captured(tmp, settings)

    def keep(self, captured: Captured, *, version: str, history: str, url: str) -> None:
        """Make ``captured`` the record of a baseline at ``version`` (after the baseline row is committed)."""
        meta = {"version": version, "history": history, "database": database_name(url),
                "database_settings": captured.settings,
                "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
        tmp_meta = self.meta_path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(captured.path, self.sql_path)
        os.replace(tmp_meta, self.meta_path)

    @staticmethod
    def discard(captured: Captured) -> None:
        captured.path.unlink(missing_ok=True)

    def restore(self, url: str) -> None:
        """Run the recorded schema in the (empty) database at ``url``, with the database settings it had: the
        schema as it was when baselined (settings apply to the connections opened after this)."""
        meta = self.meta() or {}
        bare, password = split_password(url)
        try:
            run_command([self._programs(url, "psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1",
                         "--single-transaction", "-f", self.sql_path, "-d", bare],
                        password=password, timeout=600, what="psql (baseline record)")
        except DbopsError as exc:
            raise MigrationError(f"cannot restore the baseline record {self.sql_path}: {redact(exc.problem)}",
                                 "check that the roles it names exist on this server") from exc
        with connection(url) as conn:
            database = sql.Identifier(database_name(url))
            for setting in meta.get("database_settings", []):
                name, _, value = str(setting).partition("=")
                if not _SETTING_NAME.match(name):
                    raise MigrationError(f"the baseline record {self.meta_path} holds a malformed setting {name!r}",
                                         "remove it from database_settings")
                # set_config then FROM CURRENT: the value goes over as a parameter, never spliced into the SQL
                conn.execute("SELECT set_config(%s, %s, false)", [name, value])
                conn.execute(sql.SQL("ALTER DATABASE {} SET {} FROM CURRENT").format(database, sql.SQL(name)))

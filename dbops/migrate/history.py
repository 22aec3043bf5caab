"""The ``flyway_schema_history`` table: created with Flyway's own layout so Flyway and dbops can read each other's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from dbops.migrate.files import Version

BASELINE_DESCRIPTION = "<< Flyway Baseline >>"


@dataclass(frozen=True)
class AppliedRow:
    installed_rank: int
    version: Version | None
    description: str
    type: str
    script: str
    checksum: int | None
    installed_by: str
    installed_on: datetime
    execution_time: int
    success: bool

    @property
    def repeatable(self) -> bool:
        return self.version is None and self.type == "SQL"


class HistoryTable:
    """Reads and writes one history table (``schema.table``) over a given connection."""

    def __init__(self, schema: str, table: str) -> None:
        self.schema = schema
        self.table = table
        self.ident = sql.Identifier(schema, table)

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def exists(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{self.schema}"."{self.table}"']).fetchone()
        return bool(row and row[0])

    def create(self, conn: psycopg.Connection[Any]) -> None:
        """Flyway's DDL for PostgreSQL, in its own schema (created when missing)."""
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " installed_rank INT NOT NULL, version VARCHAR(50), description VARCHAR(200) NOT NULL,"
                " type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL, checksum INTEGER,"
                " installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT now(),"
                " execution_time INTEGER NOT NULL, success BOOLEAN NOT NULL,"
                " CONSTRAINT {} PRIMARY KEY (installed_rank))"
            ).format(self.ident, sql.Identifier(f"{self.table}_pk"))
        )
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (success)").format(
                sql.Identifier(f"{self.table}_s_idx"), self.ident
            )
        )

    def rows(self, conn: psycopg.Connection[Any]) -> list[AppliedRow]:
        if not self.exists(conn):
            return []
        cur = conn.execute(
            sql.SQL(
                "SELECT installed_rank, version, description, type, script, checksum, installed_by, installed_on,"
                " execution_time, success FROM {} ORDER BY installed_rank"
            ).format(self.ident)
        )
        out = []
        for rank, version, desc, type_, script, checksum, by, on, ms, success in cur:
            out.append(AppliedRow(rank, Version.parse(version) if version else None, desc, type_, script, checksum,
                                  by, on, ms, success))
        return out

    def insert(self, conn: psycopg.Connection[Any], *, version: Version | None, description: str, type_: str,
               script: str, checksum: int | None, installed_by: str, execution_ms: int, success: bool) -> int:
        """Append a row with the next installed_rank (callers hold the migration lock)."""
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {} (installed_rank, version, description, type, script, checksum, installed_by,"
                " execution_time, success)"
                " SELECT coalesce(max(installed_rank), 0) + 1, %s, %s, %s, %s, %s, %s, %s, %s FROM {}"
                " RETURNING installed_rank"
            ).format(self.ident, self.ident),
            [str(version) if version is not None else None, description[:200], type_, script[:1000], checksum,
             installed_by[:100], execution_ms, success],
        ).fetchone()
        return int(row[0]) if row else 0

    def finish(self, conn: psycopg.Connection[Any], rank: int, *, execution_ms: int, success: bool) -> None:
        """Complete a row written before its migration ran (no-transaction files): its outcome and duration."""
        conn.execute(
            sql.SQL("UPDATE {} SET success = %s, execution_time = %s WHERE installed_rank = %s").format(self.ident),
            [success, execution_ms, rank],
        )

    def running_elsewhere(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether another session of this database holds the migration lock (a run is applying files now)."""
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid <> pg_backend_pid() AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = ((hashtext(%s)::bigint >> 32) & 4294967295)::oid"
            " AND objid = (hashtext(%s)::bigint & 4294967295)::oid)",
            [self.lock_key(), self.lock_key()],
        ).fetchone()
        return bool(row and row[0])

    def delete_failed(self, conn: psycopg.Connection[Any]) -> int:
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE NOT success").format(self.ident))
        return cur.rowcount

    def realign(self, conn: psycopg.Connection[Any], rank: int, checksum: int, description: str) -> None:
        conn.execute(
            sql.SQL("UPDATE {} SET checksum = %s, description = %s WHERE installed_rank = %s").format(self.ident),
            [checksum, description[:200], rank],
        )

    def lock_key(self) -> str:
        return f"dbops.migrate:{self.schema}.{self.table}"

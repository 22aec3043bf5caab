"""Physical integrity: every btree index checked with amcheck, and constraints PostgreSQL never verified.

``bt_index_check`` takes only an AccessShareLock, so it can run on a live primary. The thorough mode adds
``heapallindexed``: every heap tuple must be found in the index, which catches an index missing rows (the silent
kind of corruption that makes a UNIQUE constraint stop working).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dbops.errors import DbopsError
from dbops.validate.catalog import NotValidConstraint, not_valid_constraints, resolve_schemas

# Leaf btree indexes (relkind 'i'): partitioned parents ('I') have no storage of their own. Temporary tables of
# other sessions cannot be read, and an index being built concurrently (not valid yet) is skipped.
INDEXES_SQL = """
SELECT n.nspname, c.relname, t.relname, c.oid::regclass::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = c.relam
WHERE am.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid AND i.indisready
  AND c.relpersistence <> 't' AND n.nspname = ANY(%s)
ORDER BY 1, 2
"""


class AmcheckUnavailable(DbopsError):
    """The amcheck extension cannot be used."""


@dataclass(frozen=True)
class IndexProblem:
    index: str
    table: str
    error: str


@dataclass
class IndexReport:
    checked: int = 0
    thorough: bool = False
    seconds: float = 0.0
    problems: list[IndexProblem] = field(default_factory=list)
    not_valid: list[NotValidConstraint] = field(default_factory=list)
    schemas: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        """Why nothing was checked (no btree index in the schemas), else None."""
        if self.checked:
            return None
        return f"no btree index in {', '.join(self.schemas) or 'no schema'}"


def ensure_amcheck(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    except psycopg.Error as exc:
        raise AmcheckUnavailable(
            f"cannot create extension amcheck: {str(exc).strip().splitlines()[0]}",
            "run CREATE EXTENSION amcheck as a superuser once (it ships with PostgreSQL contrib)",
        ) from exc


def check_indexes(
    conn: psycopg.Connection[Any], schemas: list[str] | tuple[str, ...] = (), *, thorough: bool = False
) -> IndexReport:
    """Run ``bt_index_check`` on every btree index of ``schemas`` (none: every user schema); each failure names the
    index and the error."""
    ensure_amcheck(conn)
    resolved = resolve_schemas(conn, schemas)
    report = IndexReport(thorough=thorough, schemas=tuple(resolved))
    started = time.monotonic()
    for schema, index, table, regclass in conn.execute(INDEXES_SQL, (resolved,)).fetchall():
        try:
            conn.execute("SELECT bt_index_check(%s::regclass, %s)", (regclass, thorough))
        except psycopg.errors.IndexCorrupted as exc:
            report.problems.append(IndexProblem(f"{schema}.{index}", f"{schema}.{table}", _first_line(exc)))
        except psycopg.errors.DataCorrupted as exc:
            report.problems.append(IndexProblem(f"{schema}.{index}", f"{schema}.{table}", _first_line(exc)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise AmcheckUnavailable(
                f"not allowed to run bt_index_check on {schema}.{index}: {_first_line(exc)}",
                "GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean) TO the dbops role, and "
                "pg_read_all_data (or ownership) on the tables",
            ) from exc
        report.checked += 1
    report.not_valid = not_valid_constraints(conn, resolved)
    report.seconds = time.monotonic() - started
    return report


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

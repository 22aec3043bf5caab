"""The first day worth validating: the day of the oldest row of a target's time-partitioned tables.

``integrity_validation``'s daily partitions start at the target's ``validation.start_date`` when it is set; unset,
they start at the oldest day of its data, found here and kept in ``$DBOPS_HOME/validation/<target>.json`` so a code
location loads cheaply and its partitions stay put; when the data cannot tell (the database is down, empty, or too slow
to answer), at ``backfill_days`` before today, with the reason, and nothing is cached (the next load looks again).

The search is cheap on purpose: only the range-partitioned tables whose key is a date or timestamp (and the tables of
``validation.time_columns``) are read; the partitions of a table are read in the order of their bounds and the first
one holding a row ends the search (its oldest row is the table's, but for the DEFAULT partition, read too); every
statement runs under a short ``statement_timeout`` on a connection with a short ``connect_timeout``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from dbops.errors import DbopsError
from dbops.pg.connect import connection
from dbops.settings import TargetSettings
from dbops.validate.catalog import resolve_schemas

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 5000

# Range-partitioned tables whose first key column is a date or timestamp (as the validation's catalog reads them).
PARTITIONED_SQL = """
SELECT n.nspname, c.relname, a.attname
FROM pg_partitioned_table pt
JOIN pg_class c ON c.oid = pt.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
WHERE pt.partstrat = 'r' AND NOT c.relispartition AND n.nspname = ANY(%s)
  AND a.atttypid IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype)
ORDER BY 1, 2
"""

# A table's partitions with their bounds (`FOR VALUES FROM (...) TO (...)`, `DEFAULT`), printed under TimeZone UTC:
# a date or timestamp bound in ISO form, which sorts as text.
PARTITIONS_SQL = """
SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = %s::regclass
"""
LOWER_BOUND = re.compile(r"^FOR VALUES FROM \('([^']*)'\) TO ")


# A configured time column: the table exists and the column is a date or timestamp.
COLUMN_SQL = """
SELECT 1 FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped
  AND a.atttypid IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype)
"""


@dataclass(frozen=True)
class StartDay:
    """The first daily partition and where it came from: ``config``, ``data``, ``cache`` or ``fallback``."""

    day: date
    source: str
    reason: str

    def render(self) -> str:
        return f"first partition {self.day} ({self.source}: {self.reason})"


def day_of(value: Any) -> date | None:
    """The UTC day of a date, a timestamp (its wall-clock day) or a timestamptz."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    raise TypeError(f"not a date or timestamp: {value!r}")


def _min_of(conn: psycopg.Connection[Any], schema: str, table: str, column: str) -> date | None:
    stmt = sql.SQL("SELECT min({}) FROM {}").format(sql.Identifier(column), sql.Identifier(schema, table))
    row = conn.execute(stmt).fetchone()
    return day_of(row[0]) if row else None


def oldest_of_partitioned(conn: psycopg.Connection[Any], schema: str, table: str, column: str) -> date | None:
    """The day of the oldest row of a range-partitioned table. Its partitions are read in the order of their lower
    bounds (MINVALUE first) until one holds a row: no later partition can hold an older one. The DEFAULT partition,
    and a partition whose bound does not read as one day or instant (a key of several columns), can hold any day:
    they are always read. None: no row."""
    qualified = sql.Identifier(schema, table).as_string(None)
    parts = conn.execute(PARTITIONS_SQL, (qualified,)).fetchall()
    if not parts:
        return _min_of(conn, schema, table, column)
    ordered: list[tuple[str, str, str]] = []  # (lower bound, schema, name); "" is MINVALUE
    anywhere: list[tuple[str, str]] = []
    for part_schema, part_name, bound in parts:
        bound = bound or ""
        lower = LOWER_BOUND.match(bound)
        if lower:
            ordered.append((lower.group(1), part_schema, part_name))
        elif bound.startswith("FOR VALUES FROM (MINVALUE) TO "):
            ordered.append(("", part_schema, part_name))
        else:
            anywhere.append((part_schema, part_name))
    found: list[date] = []
    for _, part_schema, part_name in sorted(ordered):
        day = _min_of(conn, part_schema, part_name, column)
        if day is not None:
            found.append(day)
            break
    for part_schema, part_name in anywhere:
        day = _min_of(conn, part_schema, part_name, column)
        if day is not None:
            found.append(day)
    return min(found) if found else None


def oldest_day(url: str, target: TargetSettings) -> tuple[date | None, list[str]]:
    """(the day of the oldest row of ``target``'s time-partitioned tables and configured time columns, the tables
    read); None when none of them has a row. Raises a DbopsError or psycopg.Error when the database cannot tell."""
    tables: list[str] = []
    days: list[date] = []
    with connection(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(STATEMENT_TIMEOUT_MS)))
        conn.execute("SET TimeZone = 'UTC'")
        schemas = resolve_schemas(conn, target.schemas)
        for schema, table, column in conn.execute(PARTITIONED_SQL, (schemas,)).fetchall():
            tables.append(f"{schema}.{table}")
            day = oldest_of_partitioned(conn, schema, table, column)
            if day is not None:
                days.append(day)
        for name, column in target.validation.time_columns:
            if name in tables or conn.execute(COLUMN_SQL, (name, column)).fetchone() is None:
                continue  # a misconfigured time column is the validation's to report, by name
            schema, _, table = name.partition(".")
            tables.append(name)
            day = _min_of(conn, schema, table, column)
            if day is not None:
                days.append(day)
    return (min(days) if days else None), tables


def database_of(url: str) -> str:
    """Which database a URL names (host, port, database; never the user or password), to tell caches apart."""
    parts = urlsplit(url)
    host = parts.hostname or "local"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


def cache_file(home: Path, target: str) -> Path:
    return home / "validation" / f"{target}.json"


def read_cache(path: Path, database: str) -> date | None:
    """The day cached for ``database``; None when there is none, it is of another database, or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return date.fromisoformat(data["first_day"]) if data.get("database") == database else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_cache(path: Path, database: str, day: date, tables: list[str]) -> None:
    """Written whole or not at all (a temporary file renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"first_day": day.isoformat(), "database": database, "tables": tables,
              "found_at": datetime.now(UTC).isoformat(timespec="seconds")}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(record, out, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def first_partition_day(target: TargetSettings, url: Callable[[], str], home: Path, today: date | None = None,
                        log: Callable[[str], None] | None = None) -> StartDay:
    """The first daily partition of ``target``: ``validation.start_date``; else the day cached in ``home`` for its
    database; else the day of its oldest row (cached); else ``backfill_days`` before today, with the reason.

    ``url`` is called only when the settings do not fix the day (resolving it can fail: the failure is a reason to
    fall back, never an error). The newest first partition is yesterday (today is still being written)."""
    say = log or (lambda _line: None)
    today = today or datetime.now(UTC).date()
    validation = target.validation
    if validation.start_date is not None:
        return StartDay(validation.start_date, "config", "validation.start_date")
    fallback = today - timedelta(days=validation.backfill_days)
    try:
        resolved = url()
    except (DbopsError, OSError, ValueError) as exc:
        result = StartDay(fallback, "fallback", f"no database URL ({exc}); {validation.backfill_days} days before "
                                                "today")
        say(result.render())
        return result
    database = database_of(resolved)
    path = cache_file(home, target.name)
    cached = read_cache(path, database)
    if cached is not None:
        return StartDay(cached, "cache", str(path))
    try:
        oldest, tables = oldest_day(resolved, target)
    except (DbopsError, psycopg.Error) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result = StartDay(fallback, "fallback", f"the oldest row could not be read ({why}); "
                                                f"{validation.backfill_days} days before today")
        say(result.render())
        return result
    if oldest is None:
        where = f"no row in {', '.join(tables)}" if tables else \
            "no range-partitioned table with a date or timestamp key, no validation.time_columns"
        result = StartDay(fallback, "fallback", f"{where}; {validation.backfill_days} days before today")
        say(result.render())
        return result
    day = min(oldest, today - timedelta(days=1))
    result = StartDay(day, "data", f"oldest row of {', '.join(tables)}")
    try:
        write_cache(path, database, day, tables)
    except OSError as exc:
        result = StartDay(day, "data", f"{result.reason}; not cached: {exc}")
    say(result.render())
    return result

"""The families postgres_exporter (prometheus-community, release 0.20.1) exposes for what dbops measures too, under
its names, label names and types, so a Grafana dashboard or an alert rule written for postgres_exporter works
unchanged against ``dbops metrics serve``.

One scrape is one connection to the target database (statement timeout 5 s, lock timeout 100 ms), the families read
in turn, each in its own statement. The collector of postgres_exporter each family mirrors (its collector/ file):

- ``pg_up``: the exporter's own gauge (exporter/server.go);
- stat_database (pg_stat_database.go): ``pg_stat_database_*{datid,datname}``, every database of the server;
- stat_activity (pg_stat_activity.go): ``pg_stat_activity_count``, ``pg_stat_activity_max_tx_duration``
  ``{datname,state,usename,application_name,backend_type,wait_event_type,wait_event}``;
- locks (pg_locks.go): ``pg_locks_count{datname,mode}``;
- replication_slots (pg_replication_slots.go): ``pg_replication_slots_active``, ``_pg_wal_lsn_diff``
  ``{slot_name,database}``, ``_slot_current_wal_lsn``, ``_slot_confirmed_flush_lsn``, ``_slot_is_active``,
  ``_safe_wal_size_bytes{slot_name,slot_type}``, ``_wal_status{slot_name,slot_type,wal_status}``;
- database (pg_database.go): ``pg_database_size_bytes``, ``pg_database_connection_limit{datname}``;
- settings (pg_setting.go): ``pg_settings_<name>`` (``_seconds`` / ``_bytes`` for times and sizes);
- stat_bgwriter (pg_stat_bgwriter.go): ``pg_stat_bgwriter_*_total`` (from PostgreSQL 17 the four columns left);
- stat_checkpointer (pg_stat_checkpointer.go): ``pg_stat_checkpointer_*_total`` (PostgreSQL 17+);
- replication (pg_replication.go): ``pg_replication_lag_seconds``, ``_is_replica``, ``_last_replay_seconds``;
- stat_archiver (pg_stat_archiver.go): ``pg_stat_archiver_archived_count``, ``_failed_count``, ``_last_archive_age``;
- database_wraparound (pg_database_wraparound.go): ``pg_database_wraparound_age_datfrozenxid_seconds``,
  ``_age_datminmxid_seconds{datname}``;
- stat_user_tables (pg_stat_user_tables.go): ``pg_stat_user_tables_*{datname,schemaname,relname}``, the target
  database's tables;
- every collector (collector.go): ``pg_scrape_collector_success``, ``pg_scrape_collector_duration_seconds``
  ``{collector}``.

Counters keep the exporter's sample names: most have no ``_total`` (``pg_stat_database_xact_commit``), the bgwriter,
checkpointer and ``pg_stat_database_active_time_seconds_total`` ones do. A server that does not answer gives
``pg_up 0`` and no other family, as the exporter; a collector whose statement fails (a view the role may not read, a
lock it would wait for) is left out of that scrape with ``pg_scrape_collector_success 0``, never an exception. Where
the exporter would fail a whole collector for one database the role may not connect to (``pg_database_size``), that
database alone is left out. Needs PostgreSQL 13+ (pg_replication_slots.wal_status, safe_wal_size).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from psycopg.rows import dict_row

from dbops.errors import DbopsError
from dbops.pg.connect import connect
from dbops.redact import redact

GAUGE = "gauge"
COUNTER = "counter"
# The scrape session gives up rather than add load: a statement over 5 s is cancelled, a lock never waited for.
SCRAPE_TIMEOUTS = "SET statement_timeout = '5s'; SET lock_timeout = '100ms'"
PG_UP_HELP = "1 if this scrape could connect to the PostgreSQL server, 0 if not"


class _KeptNameCounter(str):
    """The type ``counter`` of a family whose samples keep the family's own name, as the Go client writes every
    counter: prometheus_client's text encoder appends ``_total`` to the TYPE line of a family whose type ``==
    "counter"`` (``exposition.generate_latest``), which this one is not equal to, while it is written as ``counter``
    in the text and in the OpenMetrics exposition."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _KeptNameCounter)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = str.__hash__


KEPT_NAME_COUNTER = _KeptNameCounter(COUNTER)


class ExactCounterFamily(Metric):
    """A counter whose samples are named exactly as the family (``pg_stat_database_xact_commit``), where
    :class:`prometheus_client.core.CounterMetricFamily` would name them ``..._total``."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, GAUGE)  # validates the name; the type is set below
        self.type = KEPT_NAME_COUNTER
        self._labelnames = tuple(labels)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.add_sample(self.name, dict(zip(self._labelnames, labels, strict=True)), value)

    def _restricted_metric(self, names: Iterable[str]) -> Metric | None:  # registry.restricted_registry (?name[]=)
        wanted = set(names)
        samples = [s for s in self.samples if s.name in wanted]
        if not samples:
            return None
        copy = ExactCounterFamily(self.name, self.documentation, self._labelnames)
        copy.samples = samples
        return copy


def family(kind: str, name: str, documentation: str, labels: Sequence[str] = ()) -> Metric:
    """An empty family named as the exporter names it: a gauge, a counter whose name ends in ``_total`` (samples
    ``<name>``: CounterMetricFamily), or any other counter (samples ``<name>``, no suffix added)."""
    if kind == GAUGE:
        return GaugeMetricFamily(name, documentation, labels=list(labels))
    if name.endswith("_total"):
        return CounterMetricFamily(name, documentation, labels=list(labels))
    return ExactCounterFamily(name, documentation, labels)


@dataclass(frozen=True)
class Column:
    """One metric read from one column of a row: ``pg_<subsystem>_<name>`` of ``kind``."""

    column: str
    name: str
    kind: str
    help: str
    skip_null: bool = False  # the exporter leaves the sample out when the column is NULL (else it writes 0)


def columns(table: str, suffix: str = "", skip_null: bool = False) -> tuple[Column, ...]:
    """The columns of a table of lines ``<column> <gauge|counter> <help>``, each metric named ``<column><suffix>``."""
    out = []
    for line in table.strip().splitlines():
        column, kind, text = line.split(maxsplit=2)
        if kind not in (GAUGE, COUNTER):
            raise ValueError(f"{column}: type {kind!r} is neither {GAUGE} nor {COUNTER}")
        out.append(Column(column, column + suffix, kind, text, skip_null))
    return tuple(out)


class Families:
    """The families of one collector, by name, samples added row by row."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def add(self, kind: str, name: str, documentation: str, labels: dict[str, str], value: Any) -> None:
        metric = self._by_name.get(name)
        if metric is None:
            metric = self._by_name[name] = family(kind, name, documentation, list(labels))
        metric.add_metric(list(labels.values()), _number(value))  # type: ignore[attr-defined]

    def add_columns(self, prefix: str, columns: Sequence[Column], row: dict[str, Any], labels: dict[str, str]) -> None:
        for col in columns:
            value = row.get(col.column)
            if value is None and col.skip_null:
                continue
            self.add(col.kind, prefix + col.name, col.help, labels, value)

    def metrics(self) -> list[Metric]:
        return [m for m in self._by_name.values() if m.samples]


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)


def _rows(conn: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        return cur.fetchall()


def _text(value: Any, missing: str = "") -> str:
    return missing if value is None else str(value)


def _no_labels(row: dict[str, Any]) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class ColumnCollector:
    """A collector that is one statement whose every row gives ``columns`` under ``prefix``, labelled by
    ``labels(row)``; on a server older than ``since`` (server_version_num) it reads nothing."""

    prefix: str
    sql: str
    columns: Sequence[Column]
    labels: Callable[[dict[str, Any]], dict[str, str]] = _no_labels
    since: int = 0

    def __call__(self, conn: psycopg.Connection[Any], version: int) -> list[Metric]:
        if version < self.since:
            return []
        out = Families()
        for row in _rows(conn, self.sql):
            out.add_columns(self.prefix, self.columns, row, self.labels(row))
        return out.metrics()


# ---- stat_database ------------------------------------------------------------------------------------------------

_STAT_DATABASE_COLUMNS = columns("""
numbackends    gauge    Sessions connected to this database now (a current count; the rest are cumulative)
xact_commit    counter  Transactions committed in this database since the statistics reset
xact_rollback  counter  Transactions rolled back in this database since the statistics reset
blks_read      counter  Data blocks this database had to read, not finding them in shared buffers
blks_hit       counter  Block requests of this database served from shared buffers (OS cache hits not counted)
tup_returned   counter  Rows returned by scans in this database's queries
tup_fetched    counter  Live rows fetched through index scans in this database's queries
tup_inserted   counter  Rows inserted into this database's tables
tup_updated    counter  Rows updated in this database's tables
tup_deleted    counter  Rows deleted from this database's tables
conflicts      counter  Queries on this database cancelled by a conflict with WAL replay (only on a standby)
temp_files     counter  Temporary files this database's queries created, for any reason (log_temp_files aside)
temp_bytes     counter  Bytes this database's queries wrote to temporary files (log_temp_files aside)
deadlocks      counter  Deadlocks detected in this database
blk_read_time  counter  Milliseconds this database's backends spent reading data file blocks (track_io_timing)
blk_write_time counter  Milliseconds this database's backends spent writing data file blocks (track_io_timing)
stats_reset    counter  Unix time in seconds of the last reset of this database's statistics (0 if never)
""")
_ACTIVE_TIME = Column("active_time_seconds", "active_time_seconds_total", COUNTER,
                      "Seconds this database's sessions spent running statements")
_STAT_DATABASE_SQL = """
SELECT datid, datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit, tup_returned, tup_fetched,
       tup_inserted, tup_updated, tup_deleted, conflicts, temp_files, temp_bytes, deadlocks, blk_read_time,
       blk_write_time, coalesce(floor(extract(epoch FROM stats_reset)), 0) AS stats_reset,
       active_time / 1000.0 AS active_time_seconds
FROM pg_stat_database
"""
_STAT_DATABASE_SQL_13 = """
SELECT datid, datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit, tup_returned, tup_fetched,
       tup_inserted, tup_updated, tup_deleted, conflicts, temp_files, temp_bytes, deadlocks, blk_read_time,
       blk_write_time, coalesce(floor(extract(epoch FROM stats_reset)), 0) AS stats_reset,
       NULL AS active_time_seconds
FROM pg_stat_database
"""
_REQUIRED = ("datid", "datname", *(c.column for c in _STAT_DATABASE_COLUMNS if c.column != "stats_reset"))


def stat_database(conn: psycopg.Connection[Any], version: int) -> list[Metric]:
    """Every database of the server; the row of the shared objects (no datname) is skipped, as any row with a NULL
    counter (the exporter skips those too)."""
    out = Families()
    active_time = version >= 140000
    for row in _rows(conn, _STAT_DATABASE_SQL if active_time else _STAT_DATABASE_SQL_13):
        if any(row[name] is None for name in _REQUIRED) or (active_time and row["active_time_seconds"] is None):
            continue
        labels = {"datid": str(row["datid"]), "datname": row["datname"]}
        out.add_columns("pg_stat_database_", _STAT_DATABASE_COLUMNS, row, labels)
        if active_time:  # PostgreSQL 14+
            out.add_columns("pg_stat_database_", (_ACTIVE_TIME,), row, labels)
    return out.metrics()


# ---- stat_activity ------------------------------------------------------------------------------------------------

_STAT_ACTIVITY_SQL = """
SELECT pg_database.datname, tmp.state, tmp2.usename, tmp2.application_name, tmp2.backend_type,
       tmp2.wait_event_type, tmp2.wait_event,
       coalesce(count, 0) AS count, coalesce(max_tx_duration, 0) AS max_tx_duration
FROM (VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
             ('fastpath function call'), ('disabled')) AS tmp(state)
CROSS JOIN pg_database
LEFT JOIN (
  SELECT datname, state, usename, application_name, backend_type, wait_event_type, wait_event, count(*) AS count,
         max(extract(epoch FROM now() - xact_start))::float AS max_tx_duration
  FROM pg_stat_activity
  WHERE pid <> pg_backend_pid()
  GROUP BY datname, state, usename, application_name, backend_type, wait_event_type, wait_event
) AS tmp2 ON tmp.state = tmp2.state AND pg_database.datname = tmp2.datname
"""
_ACTIVITY_LABELS = ("datname", "state", "usename", "application_name", "backend_type", "wait_event_type",
                    "wait_event")


def stat_activity(conn: psycopg.Connection[Any], version: int) -> list[Metric]:
    """Sessions by database and state (every state of every database, 0 when none), the scrape's own excluded."""
    merged: dict[tuple[str, ...], list[float]] = {}
    for row in _rows(conn, _STAT_ACTIVITY_SQL):
        key = tuple(_text(row[name]) for name in _ACTIVITY_LABELS)
        count, longest = merged.setdefault(key, [0.0, 0.0])  # NULL and '' labels meet: one series, as Go requires
        merged[key] = [count + _number(row["count"]), max(longest, _number(row["max_tx_duration"]))]
    out = Families()
    for key, (count, longest) in merged.items():
        labels = dict(zip(_ACTIVITY_LABELS, key, strict=True))
        out.add(GAUGE, "pg_stat_activity_count", "Sessions with these labels (the scrape's own left out)", labels,
                count)
        out.add(GAUGE, "pg_stat_activity_max_tx_duration",
                "Seconds the oldest open transaction among these sessions has been running", labels, longest)
    return out.metrics()


# ---- locks --------------------------------------------------------------------------------------------------------

_LOCKS_SQL = """
SELECT pg_database.datname AS datname, tmp.mode AS mode, coalesce(count, 0) AS count
FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), ('shareupdateexclusivelock'),
             ('sharelock'), ('sharerowexclusivelock'), ('exclusivelock'), ('accessexclusivelock'),
             ('sireadlock')) AS tmp(mode)
CROSS JOIN pg_database
LEFT JOIN (
  SELECT database, lower(mode) AS mode, count(*) AS count
  FROM pg_locks WHERE database IS NOT NULL
  GROUP BY database, lower(mode)
) AS tmp2 ON tmp.mode = tmp2.mode AND pg_database.oid = tmp2.database
ORDER BY 1
"""


def locks(conn: psycopg.Connection[Any], version: int) -> list[Metric]:
    out = Families()
    for row in _rows(conn, _LOCKS_SQL):
        if row["datname"] is None or row["mode"] is None:
            continue
        out.add(GAUGE, "pg_locks_count", "Locks on this database's objects in this mode, held or awaited",
                {"datname": row["datname"], "mode": row["mode"]}, row["count"])
    return out.metrics()


# ---- replication_slots --------------------------------------------------------------------------------------------

_SLOTS_SQL = """
SELECT slot_name, database, active,
       CASE pg_is_in_recovery() WHEN 't' THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), restart_lsn)
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) END AS pg_wal_lsn_diff
FROM pg_replication_slots
"""
_SLOT_DETAILS_SQL = """
SELECT slot_name, slot_type,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() - '0/0' ELSE pg_current_wal_lsn() - '0/0' END
         AS current_wal_lsn,
       coalesce(confirmed_flush_lsn, '0/0') - '0/0' AS confirmed_flush_lsn,
       active, safe_wal_size, wal_status
FROM pg_replication_slots
"""


def replication_slots(conn: psycopg.Connection[Any], version: int) -> list[Metric]:
    out = Families()
    prefix = "pg_replication_slots_"
    for row in _rows(conn, _SLOTS_SQL):
        labels = {"slot_name": _text(row["slot_name"]), "database": _text(row["database"])}
        if row["active"] is not None:
            out.add(GAUGE, prefix + "active", "1 if a process is using this replication slot now, 0 if not", labels,
                    row["active"])
        if row["pg_wal_lsn_diff"] is not None:
            out.add(GAUGE, prefix + "pg_wal_lsn_diff",
                    "Bytes of WAL between the server's current position and the slot's restart_lsn", labels,
                    row["pg_wal_lsn_diff"])
    for row in _rows(conn, _SLOT_DETAILS_SQL):
        labels = {"slot_name": _text(row["slot_name"], "unknown"), "slot_type": _text(row["slot_type"], "unknown")}
        if row["current_wal_lsn"] is not None:
            out.add(GAUGE, prefix + "slot_current_wal_lsn", "The server's current WAL position, as a byte offset",
                    labels, row["current_wal_lsn"])
        if row["active"] and row["confirmed_flush_lsn"] is not None:
            out.add(GAUGE, prefix + "slot_confirmed_flush_lsn",
                    "WAL position (byte offset) up to which the slot's consumer confirmed the data",
                    labels, row["confirmed_flush_lsn"])
        if row["active"] is not None:
            out.add(GAUGE, prefix + "slot_is_active", "1 if this replication slot is in use now, 0 if not", labels,
                    row["active"])
        if row["safe_wal_size"] is not None:
            out.add(GAUGE, prefix + "safe_wal_size_bytes", "Bytes of WAL that may still be written before the slot "
                    "risks being lost", labels, row["safe_wal_size"])
        if row["wal_status"] is not None:
            out.add(GAUGE, prefix + "wal_status", "1 for the slot's current WAL availability (wal_status label)",
                    {**labels, "wal_status": row["wal_status"]}, 1)
    return out.metrics()


# ---- database -----------------------------------------------------------------------------------------------------

# The exporter asks pg_database_size() of every database and fails the collector at the first one the role may not
# connect to; here that database alone has no size.
_DATABASE_SQL = """
SELECT datname, datconnlimit,
       CASE WHEN has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'MEMBER')
            THEN pg_database_size(oid) END AS size
FROM pg_database
"""


def database(conn: psycopg.Connection[Any], version: int) -> list[Metric]:
    out = Families()
    for row in _rows(conn, _DATABASE_SQL):
        if row["datname"] is None:
            continue
        labels = {"datname": row["datname"]}
        out.add(GAUGE, "pg_database_connection_limit",
                "Most connections allowed to this database at once (-1: no limit)", labels, row["datconnlimit"])
        if row["size"] is not None:
            out.add(GAUGE, "pg_database_size_bytes", "Size of this database on disk, in bytes", labels, row["size"])
    return out.metrics()


# ---- settings -----------------------------------------------------------------------------------------------------

_SETTINGS_SQL = """
SELECT name, setting, coalesce(unit, '') AS unit, vartype FROM pg_settings
WHERE vartype IN ('bool', 'integer', 'real') AND name NOT IN ('sync_commit_cancel_wait', 'google_dataplex.max_messages')
"""
# pg_settings units -> (the exporter's suffix, factor to seconds or bytes)
_UNITS: dict[str, tuple[str, float]] = {
    "": ("", 1.0),
    "ms": ("seconds", 1e-3), "s": ("seconds", 1.0), "min": ("seconds", 60.0), "h": ("seconds", 3600.0),
    "d": ("seconds", 86400.0),
    "B": ("bytes", 1.0), "kB": ("bytes", 2.0**10), "MB": ("bytes", 2.0**20), "GB": ("bytes", 2.0**30),
    "TB": ("bytes", 2.0**40), "1kB": ("bytes", 2.0**10), "2kB": ("bytes", 2.0**11), "4kB": ("bytes", 2.0**12),
    "8kB": ("bytes", 2.0**13), "16kB": ("bytes", 2.0**14), "32kB": ("bytes", 2.0**15), "64kB": ("bytes", 2.0**16),
    "16MB": ("bytes", 2.0**24), "32MB": ("bytes", 2.0**25), "64MB": ("bytes", 2.0**26),
}
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_]")


def setting_metric(name: str, setting: str, unit: str, vartype: str) -> tuple[str, str, float] | None:
    """(metric name, help, value) of one server setting as the exporter converts it (pgSetting.metric): booleans 1/0,
    times in seconds, sizes in bytes, -1 kept as is; None for a value or unit it cannot convert (it skips those)."""
    metric = "pg_settings_" + _NOT_IN_NAME.sub("_", name.replace(".", "_").replace("-", "_"))
    documentation = f"The server setting {name}"
    if vartype == "bool":
        return metric, documentation + " (1 on, 0 off)", 1.0 if setting == "on" else 0.0
    if unit not in _UNITS:
        return None
    try:
        value = float(setting)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    suffix, factor = _UNITS[unit]
    if suffix:
        metric += "_" + suffix
        documentation += f", in {suffix}"
    return metric, documentation, value if value == -1 else value * factor


def settings(conn: psycopg.Connection[Any], version: int) -> list[Metric]:
    out: dict[str, Metric] = {}
    for row in _rows(conn, _SETTINGS_SQL):
        converted = setting_metric(row["name"], row["setting"], row["unit"], row["vartype"])
        if converted is None or converted[0] in out:
            continue
        name, documentation, value = converted
        out[name] = GaugeMetricFamily(name, documentation, value=value)
    return list(out.values())


# ---- stat_bgwriter, stat_checkpointer -----------------------------------------------------------------------------

_BGWRITER_COLUMNS = columns("""
checkpoints_timed     counter  Checkpoints performed because checkpoint_timeout elapsed
checkpoints_req       counter  Checkpoints performed on request
checkpoint_write_time counter  Milliseconds checkpoints spent writing files to disk
checkpoint_sync_time  counter  Milliseconds checkpoints spent syncing files to disk
buffers_checkpoint    counter  Buffers written by checkpoints
buffers_clean         counter  Buffers written by the background writer
maxwritten_clean      counter  Times the background writer cut a cleaning round short at bgwriter_lru_maxpages
buffers_backend       counter  Buffers written by backends themselves
buffers_backend_fsync counter  Times a backend had to issue an fsync itself
buffers_alloc         counter  Shared buffers allocated
stats_reset           counter  Unix time in seconds of the last reset of these statistics (0 if never)
""", suffix="_total")
_BGWRITER_17 = ("buffers_clean", "maxwritten_clean", "buffers_alloc", "stats_reset")
_BGWRITER_SQL_17 = """
SELECT buffers_clean, maxwritten_clean, buffers_alloc,
       coalesce(floor(extract(epoch FROM stats_reset)), 0) AS stats_reset
FROM pg_stat_bgwriter
"""
_BGWRITER_SQL_OLD = """
SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time, checkpoint_sync_time, buffers_checkpoint,
       buffers_clean, maxwritten_clean, buffers_backend, buffers_backend_fsync, buffers_alloc,
       coalesce(floor(extract(epoch FROM stats_reset)), 0) AS stats_reset
FROM pg_stat_bgwriter
"""


_BGWRITER_NEW = ColumnCollector("pg_stat_bgwriter_", _BGWRITER_SQL_17,
                                tuple(c for c in _BGWRITER_COLUMNS if c.column in _BGWRITER_17))
_BGWRITER_BEFORE_17 = ColumnCollector("pg_stat_bgwriter_", _BGWRITER_SQL_OLD, _BGWRITER_COLUMNS)


def stat_bgwriter(conn: psycopg.Connection[Any], version: int) -> list[Metric]:
    """From PostgreSQL 17 the checkpoint columns moved to pg_stat_checkpointer; the exporter then exposes the four
    that are left."""
    return (_BGWRITER_NEW if version >= 170000 else _BGWRITER_BEFORE_17)(conn, version)


_CHECKPOINTER_COLUMNS = columns("""
num_timed           counter  Checkpoints scheduled because checkpoint_timeout elapsed
num_requested       counter  Checkpoints performed on request
restartpoints_timed counter  Restartpoints scheduled by timeout or after a failed attempt
restartpoints_req   counter  Restartpoints requested
restartpoints_done  counter  Restartpoints completed
write_time          counter  Milliseconds checkpoints and restartpoints spent writing files to disk
sync_time           counter  Milliseconds checkpoints and restartpoints spent syncing files to disk
buffers_written     counter  Buffers written by checkpoints and restartpoints
stats_reset         counter  Unix time in seconds of the last reset of these statistics (0 if never)
""", suffix="_total")
_CHECKPOINTER_SQL = """
SELECT num_timed, num_requested, restartpoints_timed, restartpoints_req, restartpoints_done, write_time, sync_time,
       buffers_written, coalesce(floor(extract(epoch FROM stats_reset)), 0) AS stats_reset
FROM pg_stat_checkpointer
"""


# PostgreSQL 17+ only (the exporter ships this collector off by default, since older servers lack the view).
stat_checkpointer = ColumnCollector("pg_stat_checkpointer_", _CHECKPOINTER_SQL, _CHECKPOINTER_COLUMNS, since=170000)


# ---- replication, stat_archiver, database_wraparound --------------------------------------------------------------

_REPLICATION_SQL = """
SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE greatest(0, extract(epoch FROM (now() - pg_last_xact_replay_timestamp()))) END AS lag_seconds,
       CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS is_replica,
       greatest(0, extract(epoch FROM (now() - pg_last_xact_replay_timestamp()))) AS last_replay_seconds
"""
_REPLICATION_COLUMNS = columns("""
lag_seconds         gauge  Seconds a standby's replay trails its primary (0 on a primary or once replay caught up)
is_replica          gauge  1 if the server is a standby in recovery, 0 if not
last_replay_seconds gauge  Seconds since the last replayed transaction (0 on a primary)
""")

replication = ColumnCollector("pg_replication_", _REPLICATION_SQL, _REPLICATION_COLUMNS)


_ARCHIVER_SQL = """
SELECT archived_count, failed_count, extract(epoch FROM now() - last_archived_time) AS last_archive_age
FROM pg_stat_archiver
"""
_ARCHIVER_COLUMNS = columns("""
archived_count   counter  WAL files archived successfully
failed_count     counter  Failed attempts to archive a WAL file
last_archive_age gauge    Seconds since the last WAL file was archived successfully
""", skip_null=True)

stat_archiver = ColumnCollector("pg_stat_archiver_", _ARCHIVER_SQL, _ARCHIVER_COLUMNS)


_WRAPAROUND_SQL = """
SELECT datname, age(d.datfrozenxid) AS age_datfrozenxid, mxid_age(d.datminmxid) AS age_datminmxid
FROM pg_catalog.pg_database d WHERE d.datallowconn
"""


def database_wraparound(conn: psycopg.Connection[Any], version: int) -> list[Metric]:
    """The exporter names these ``_seconds`` although they count transactions (age()); the names are kept."""
    out = Families()
    for row in _rows(conn, _WRAPAROUND_SQL):
        if row["datname"] is None or row["age_datfrozenxid"] is None or row["age_datminmxid"] is None:
            continue
        labels = {"datname": row["datname"]}
        out.add(GAUGE, "pg_database_wraparound_age_datfrozenxid_seconds",
                "Transactions since this database's datfrozenxid (a count of XIDs despite the name)", labels,
                row["age_datfrozenxid"])
        out.add(GAUGE, "pg_database_wraparound_age_datminmxid_seconds",
                "Multixacts since this database's datminmxid (a count of multixact IDs despite the name)", labels,
                row["age_datminmxid"])
    return out.metrics()


# ---- stat_user_tables ---------------------------------------------------------------------------------------------

_TABLE_COLUMNS = columns("""
seq_scan            counter  Sequential scans started on this table
seq_tup_read        counter  Live rows read by sequential scans of this table
idx_scan            counter  Index scans started on this table
idx_tup_fetch       counter  Live rows of this table fetched by index scans
n_tup_ins           counter  Rows inserted into this table
n_tup_upd           counter  Rows updated in this table (HOT updates included)
n_tup_del           counter  Rows deleted from this table
n_tup_hot_upd       counter  Rows of this table updated as HOT (no new index entry)
n_live_tup          gauge    Estimated live rows in this table
n_dead_tup          gauge    Estimated dead rows in this table
n_mod_since_analyze gauge    Estimated rows of this table changed since its last analyze
last_vacuum         gauge    Unix time in seconds of this table's last manual VACUUM, VACUUM FULL aside (0 if never)
last_autovacuum     gauge    Unix time in seconds of this table's last autovacuum (0 if never)
last_analyze        gauge    Unix time in seconds of this table's last manual ANALYZE (0 if never)
last_autoanalyze    gauge    Unix time in seconds of this table's last autoanalyze (0 if never)
vacuum_count        counter  Manual VACUUMs of this table, VACUUM FULL aside
autovacuum_count    counter  Autovacuums of this table
analyze_count       counter  Manual ANALYZEs of this table
autoanalyze_count   counter  Autoanalyzes of this table
""")
_TABLE_SIZE_COLUMNS = (
    Column("indexes_size", "index_size_bytes", GAUGE, "Disk space of this table's indexes, in bytes"),
    Column("table_size", "table_size_bytes", GAUGE,
           "Disk space of this table with its TOAST data and maps but no index, in bytes"),
)
_TABLES_SQL = """
SELECT current_database() AS datname, schemaname, relname, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_tup_ins,
       n_tup_upd, n_tup_del, n_tup_hot_upd, n_live_tup, n_dead_tup, n_mod_since_analyze,
       coalesce(floor(extract(epoch FROM last_vacuum)), 0) AS last_vacuum,
       coalesce(floor(extract(epoch FROM last_autovacuum)), 0) AS last_autovacuum,
       coalesce(floor(extract(epoch FROM last_analyze)), 0) AS last_analyze,
       coalesce(floor(extract(epoch FROM last_autoanalyze)), 0) AS last_autoanalyze,
       vacuum_count, autovacuum_count, analyze_count, autoanalyze_count
FROM pg_stat_user_tables
"""
# Apart, because the sizes take a lock on each table (the statistics do not): a table held in ACCESS EXCLUSIVE mode
# makes this one statement give up after the lock timeout, and only the two size families are left out.
_TABLE_SIZES_SQL = """
SELECT current_database() AS datname, schemaname, relname, pg_indexes_size(relid) AS indexes_size,
       pg_table_size(relid) AS table_size
FROM pg_stat_user_tables
"""


def _table_labels(row: dict[str, Any]) -> dict[str, str]:
    return {name: _text(row[name], "unknown") for name in ("datname", "schemaname", "relname")}


stat_user_tables = ColumnCollector("pg_stat_user_tables_", _TABLES_SQL, _TABLE_COLUMNS, _table_labels)
stat_user_tables_sizes = ColumnCollector("pg_stat_user_tables_", _TABLE_SIZES_SQL, _TABLE_SIZE_COLUMNS, _table_labels)


# ---- one scrape ---------------------------------------------------------------------------------------------------

Collect = Callable[[psycopg.Connection[Any], int], list[Metric]]
# (the exporter's collector name, one statement's families); a collector may span several statements.
COLLECTORS: tuple[tuple[str, Collect], ...] = (
    ("stat_database", stat_database),
    ("stat_activity", stat_activity),
    ("locks", locks),
    ("replication_slots", replication_slots),
    ("database", database),
    ("settings", settings),
    ("stat_bgwriter", stat_bgwriter),
    ("stat_checkpointer", stat_checkpointer),
    ("replication", replication),
    ("stat_archiver", stat_archiver),
    ("database_wraparound", database_wraparound),
    ("stat_user_tables", stat_user_tables),
    ("stat_user_tables", stat_user_tables_sizes),
)


@dataclass
class Scrape:
    """What one scrape read: ``up``, the families, and the collectors left out with why (redacted)."""

    up: bool
    families: list[Metric] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def metrics(self) -> list[Metric]:
        """``pg_up`` first, then (only when up) every family read."""
        return [GaugeMetricFamily("pg_up", PG_UP_HELP, value=1.0 if self.up else 0.0), *self.families]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def scrape(url: str) -> Scrape:
    """Read every family over one connection to ``url``. Never raises for a database problem: a server that does not
    answer (or a connection lost mid-scrape) is ``up = False`` with no family; a failed statement leaves out its
    collector's families and is named in ``failed``."""
    try:
        conn = connect(url, autocommit=True, application_name="dbops-exporter")
    except (DbopsError, psycopg.Error) as exc:
        return Scrape(up=False, error=_first_line(exc))
    result = Scrape(up=True)
    timings: dict[str, float] = {}
    try:
        conn.execute(SCRAPE_TIMEOUTS)
        version = conn.info.server_version
        for name, collect in COLLECTORS:
            started = time.monotonic()
            try:
                result.families.extend(collect(conn, version))
            except (psycopg.Error, ValueError) as exc:  # ValueError: a value prometheus_client refuses
                if conn.broken or conn.closed:
                    raise
                result.failed.setdefault(name, _first_line(exc))
            timings[name] = timings.get(name, 0.0) + time.monotonic() - started
    except (psycopg.Error, ValueError) as exc:
        return Scrape(up=False, error=_first_line(exc))
    finally:
        conn.close()
    success = family(GAUGE, "pg_scrape_collector_success",
                     "1 if every statement of this collector ran in this scrape, 0 if one failed", ["collector"])
    duration = family(GAUGE, "pg_scrape_collector_duration_seconds", "Seconds this collector took in this scrape",
                      ["collector"])
    for name, seconds in timings.items():
        success.add_metric([name], 0.0 if name in result.failed else 1.0)  # type: ignore[attr-defined]
        duration.add_metric([name], seconds)  # type: ignore[attr-defined]
    result.families.extend((success, duration))
    return result

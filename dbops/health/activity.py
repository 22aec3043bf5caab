"""Sessions and server activity of the managed database: connection slots left, long-running queries, blocked
sessions and who blocks them, autovacuum workers, the oldest xmin holding VACUUM back and who holds it, replication
slots, WAL archiving lag (RPO), temporary files.

Read from the statistics views only (pg_stat_activity, pg_locks, pg_prepared_xacts, pg_replication_slots,
pg_stat_archiver); the sampling session itself is never counted. Every text naming a session carries its statement
redacted and cut to :data:`QUERY_CHARS` characters.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbops.health.figures import Figures
from dbops.redact import redact

ACTIVITY_METRICS: dict[str, str] = {
    "connections_available": "connection slots left for applications: max_connections minus the reserved slots "
                             "minus client connections",
    "connections_reserved": "connection slots reserved for superusers and pg_use_reserved_connections",
    "longest_query_seconds": "run time of the longest-running active statement in this database",
    "long_running_queries": "active statements in this database running longer than health.long_query_seconds "
                            "(60 s by default)",
    "blocked_sessions": "sessions in this database waiting for a lock another session holds",
    "longest_blocked_seconds": "how long the longest-waiting blocked session in this database has waited",
    "autovacuum_workers_busy": "autovacuum workers running on the server",
    "autovacuum_workers_busy_ratio": "autovacuum workers running / autovacuum_max_workers",
    "oldest_xmin_age": "age in transactions of the oldest xmin holding VACUUM back in this database (session, "
                       "prepared transaction or replication slot)",
    "inactive_replication_slots": "replication slots not in use (each retains WAL until it is used or dropped)",
    "replication_slot_retained_bytes": "WAL the most demanding replication slot retains (absent on a standby)",
    "archive_lag_seconds": "seconds since the last archived WAL segment while a newer one waits (when archive_mode "
                           "is on; absent otherwise)",
}

QUERY_CHARS = 200  # of a statement shown in a detail
_FETCH_CHARS = 2000  # of a statement read from the server (redacted whole, then cut)
_WAL_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?$")

_CONNECTIONS = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS clients,
       top.usename, top.application_name, top.sessions
FROM (SELECT 1) AS one LEFT JOIN (
  SELECT usename, application_name, count(*) AS sessions FROM pg_stat_activity
   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
   GROUP BY usename, application_name ORDER BY count(*) DESC, usename, application_name LIMIT 1
) AS top ON true
"""

_QUERIES = """
WITH q AS (
  SELECT pid, usename, application_name, left(query, %(chars)s) AS query,
         extract(epoch FROM clock_timestamp() - query_start)::float8 AS seconds
    FROM pg_stat_activity
   WHERE datname = current_database() AND backend_type = 'client backend' AND state = 'active'
     AND query_start IS NOT NULL AND pid <> pg_backend_pid()
)
SELECT (SELECT count(*) FROM q WHERE seconds > %(long)s) AS long_running, top.*
FROM (SELECT 1) AS one LEFT JOIN (SELECT * FROM q ORDER BY seconds DESC LIMIT 1) AS top ON true
"""

# pg_locks.waitstart (PostgreSQL 14+): when the wait began; null for its first deadlock_timeout.
_BLOCKED = """
WITH b AS (
  SELECT a.pid, a.usename, left(a.query, %(chars)s) AS query, pg_blocking_pids(a.pid) AS blockers,
         extract(epoch FROM clock_timestamp() - coalesce(l.waitstart, a.state_change, a.query_start))::float8
           AS seconds
    FROM pg_stat_activity a
    LEFT JOIN (SELECT pid, min(waitstart) AS waitstart FROM pg_locks WHERE NOT granted GROUP BY pid) l
      ON l.pid = a.pid
   WHERE a.datname = current_database() AND a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()
)
SELECT (SELECT count(*) FROM b WHERE cardinality(blockers) > 0) AS blocked, top.*
FROM (SELECT 1) AS one LEFT JOIN (
  SELECT * FROM b WHERE cardinality(blockers) > 0 ORDER BY seconds DESC LIMIT 1
) AS top ON true
"""

_BLOCKERS = """
SELECT pid, usename, state, backend_type, left(query, %(chars)s) AS query,
       extract(epoch FROM clock_timestamp() - coalesce(state_change, backend_start))::float8 AS seconds
  FROM pg_stat_activity WHERE pid = ANY(%(pids)s) ORDER BY pid
"""

_AUTOVACUUM = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker') AS busy,
       current_setting('autovacuum_max_workers')::int AS max_workers, top.*
FROM (SELECT 1) AS one LEFT JOIN (
  SELECT pid, datname, left(query, %(chars)s) AS query,
         extract(epoch FROM clock_timestamp() - coalesce(xact_start, backend_start))::float8 AS seconds
    FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' ORDER BY seconds DESC LIMIT 1
) AS top ON true
"""

# Whatever holds back the xmin horizon of this database's tables: its sessions' snapshots and transaction IDs (an
# autovacuum worker is ignored by the horizon), the walsenders of physical standbys (hot_standby_feedback), its
# prepared transactions, and the physical slots and this database's logical slots.
_XMIN = """
SELECT * FROM (
  SELECT 'session' AS kind, pid::text AS name, usename::text AS owner, state, backend_type,
         application_name, xact_start AS since, left(query, %(chars)s) AS query,
         greatest(age(backend_xmin), age(backend_xid)) AS age
    FROM pg_stat_activity
   WHERE (datname = current_database() OR (backend_type = 'walsender' AND datname IS NULL))
     AND backend_type <> 'autovacuum worker' AND pid <> pg_backend_pid()
     AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
  UNION ALL
  SELECT 'prepared', gid, owner::text, NULL, NULL, NULL, prepared, NULL, age(transaction)
    FROM pg_prepared_xacts WHERE database = current_database()
  UNION ALL
  SELECT 'slot', slot_name::text, slot_type, CASE WHEN active THEN 'active' ELSE 'inactive' END, NULL, NULL,
         NULL, NULL, greatest(age(xmin), age(catalog_xmin))
    FROM pg_replication_slots
   WHERE (database IS NULL OR database = current_database()) AND (xmin IS NOT NULL OR catalog_xmin IS NOT NULL)
) AS holders ORDER BY age DESC NULLS LAST LIMIT 1
"""

_SLOTS = """
SELECT to_jsonb(s) AS slot, pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() OR s.restart_lsn IS NULL THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::float8 END AS retained
  FROM pg_replication_slots s ORDER BY s.slot_name
"""

_ARCHIVER = """
SELECT current_setting('archive_mode') AS archive_mode, pg_is_in_recovery() AS in_recovery,
       a.archived_count, a.last_archived_wal, a.last_archived_time, a.failed_count, a.last_failed_wal,
       a.last_failed_time, a.stats_reset, pg_postmaster_start_time() AS started, clock_timestamp() AS now,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current_wal,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') END AS current_lsn,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS segment_size,
       has_function_privilege('pg_ls_archive_statusdir()', 'EXECUTE') AS can_list
  FROM pg_stat_archiver a
"""
_READY = "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"

_TEMP_FILES = "SELECT temp_files FROM pg_stat_database WHERE datname = current_database()"
# pg_stat_statements, when its library is loaded and the extension exists in this database (selecting from it
# otherwise raises): the statement that wrote the most temporary blocks since its statistics were reset.
_STATEMENTS_SCHEMA = """
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'pg_stat_statements'
   AND 'pg_stat_statements' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
"""
_TEMP_STATEMENT = """
SELECT left(query, {chars}) AS query, temp_blks_written, calls FROM {schema}.pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND temp_blks_written > 0
 ORDER BY temp_blks_written DESC LIMIT 1
"""


def _statement(text: object) -> str:
    """A statement on one line, passwords masked, at most QUERY_CHARS characters."""
    one_line = " ".join(redact(text or "").split())
    return one_line if len(one_line) <= QUERY_CHARS else one_line[:QUERY_CHARS - 3] + "..."


def _count(n: object, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _secs(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _when(moment: datetime | None) -> str:
    return moment.isoformat(sep=" ", timespec="seconds") if moment else "an unknown time"


def _rows(conn: psycopg.Connection, query: str | sql.Composable, params: dict[str, Any] | None = None
          ) -> list[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


def _one(conn: psycopg.Connection, query: str | sql.Composable, params: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    rows = _rows(conn, query, params)
    return rows[0] if rows else {}


def _connections(conn: psycopg.Connection, out: Figures) -> None:
    r = _one(conn, _CONNECTIONS)
    reserved = int(r["superuser_reserved"]) + int(r["reserved"])
    free = max(int(r["max_connections"]) - reserved - int(r["clients"]), 0)
    out.metrics["connections_reserved"] = float(reserved)
    out.metrics["connections_available"] = float(free)
    held = (f"most held by role {r['usename']}, application {r['application_name'] or '(none)'} "
            f"({_count(r['sessions'], 'session')})" if r["sessions"] else "no client session")
    for_role = f", {r['reserved']} for pg_use_reserved_connections" if r["reserved"] else ""
    out.details["connections_available"] = redact(
        f"{free} of {r['max_connections']} slots free ({r['superuser_reserved']} reserved for superusers{for_role}, "
        f"{_count(r['clients'], 'client session')}); {held}")


def _queries(conn: psycopg.Connection, out: Figures, long_query_seconds: float) -> None:
    r = _one(conn, _QUERIES, {"chars": _FETCH_CHARS, "long": long_query_seconds})
    out.metrics["longest_query_seconds"] = float(r["seconds"] or 0.0) if r["pid"] else 0.0
    out.metrics["long_running_queries"] = float(r["long_running"] or 0)
    if r["pid"]:
        detail = redact(f"pid {r['pid']} (role {r['usename']}, application {r['application_name'] or '(none)'}) "
                        f"running {_secs(r['seconds'] or 0.0)}: {_statement(r['query'])}")
        out.details["longest_query_seconds"] = detail
        if r["long_running"]:
            out.details["long_running_queries"] = detail


def _blocker(row: dict[str, Any] | None, pid: int) -> str:
    if pid == 0:
        return "a prepared transaction (see pg_prepared_xacts)"
    if row is None:
        return f"pid {pid} (gone)"
    state = row["state"] or row["backend_type"] or "unknown state"
    return (f"pid {pid} (role {row['usename']}, {state} for {_secs(row['seconds'] or 0.0)}): "
            f"{_statement(row['query'])}")


def _blocked(conn: psycopg.Connection, out: Figures) -> None:
    r = _one(conn, _BLOCKED, {"chars": _FETCH_CHARS})
    out.metrics["blocked_sessions"] = float(r["blocked"] or 0)
    out.metrics["longest_blocked_seconds"] = float(r["seconds"] or 0.0) if r["pid"] else 0.0
    if not r["pid"]:
        return
    pids = sorted(set(r["blockers"]))
    live = [p for p in pids if p]
    found = {b["pid"]: b for b in _rows(conn, _BLOCKERS, {"chars": _FETCH_CHARS, "pids": live})} if live else {}
    shown = "; ".join(_blocker(found.get(p), p) for p in pids[:3])
    more = f"; and {len(pids) - 3} more" if len(pids) > 3 else ""
    detail = redact(f"pid {r['pid']} (role {r['usename']}) waiting {_secs(r['seconds'] or 0.0)} on "
                    f"{_statement(r['query'])} blocked by {shown}{more}")
    out.details["blocked_sessions"] = detail
    out.details["longest_blocked_seconds"] = detail


def _autovacuum(conn: psycopg.Connection, out: Figures) -> None:
    r = _one(conn, _AUTOVACUUM, {"chars": _FETCH_CHARS})
    busy, workers = float(r["busy"] or 0), int(r["max_workers"] or 0)
    out.metrics["autovacuum_workers_busy"] = busy
    out.metrics["autovacuum_workers_busy_ratio"] = busy / workers if workers else 0.0
    if busy and r["pid"]:
        detail = redact(f"{busy:.0f} of {workers} workers busy; longest: pid {r['pid']} in database "
                        f"{r['datname']} for {_secs(r['seconds'] or 0.0)}: {_statement(r['query'])}")
        out.details["autovacuum_workers_busy"] = detail
        out.details["autovacuum_workers_busy_ratio"] = detail


def _holder(r: dict[str, Any]) -> str:
    if r["kind"] == "prepared":
        return f"prepared transaction '{r['name']}' (owner {r['owner']}, prepared at {_when(r['since'])})"
    if r["kind"] == "slot":
        return f"replication slot '{r['name']}' ({r['owner']}, {r['state']})"
    if r["backend_type"] == "walsender":
        return f"walsender pid {r['name']} (role {r['owner']}, application {r['application_name'] or '(none)'})"
    state = r["state"] or r["backend_type"]
    since = f" since {_when(r['since'])}" if r["since"] else ""
    return f"session pid {r['name']} (role {r['owner']}, {state}{since}): {_statement(r['query'])}"


def _oldest_xmin(conn: psycopg.Connection, out: Figures) -> None:
    r = _one(conn, _XMIN, {"chars": _FETCH_CHARS})
    age = float(r["age"] or 0) if r else 0.0
    out.metrics["oldest_xmin_age"] = age
    if age:
        out.details["oldest_xmin_age"] = redact(f"{_holder(r)}, xmin age {age:.0f}")


def _slot_text(slot: dict[str, Any], retained: float | None) -> str:
    parts = [slot.get("slot_type") or "slot", "active" if slot.get("active") else "inactive"]
    if slot.get("database"):
        parts.append(f"database {slot['database']}")
    if slot.get("inactive_since"):  # PostgreSQL 17+
        parts.append(f"since {_when(datetime.fromisoformat(slot['inactive_since']))}")
    if slot.get("wal_status"):
        parts.append(f"wal_status {slot['wal_status']}")
    if retained is not None:
        parts.append(f"retains {retained / 2**20:.1f} MiB of WAL" if retained >= 2**20 else
                     f"retains {retained:.0f} bytes of WAL")
    return f"replication slot '{slot.get('slot_name')}' ({', '.join(parts)})"


def _slots(conn: psycopg.Connection, out: Figures) -> None:
    rows = _rows(conn, _SLOTS)
    inactive = [r for r in rows if not r["slot"].get("active")]
    out.metrics["inactive_replication_slots"] = float(len(inactive))
    if inactive:
        worst = max(inactive, key=lambda r: r["retained"] or 0.0)
        more = f" and {len(inactive) - 1} more" if len(inactive) > 1 else ""
        out.details["inactive_replication_slots"] = redact(_slot_text(worst["slot"], worst["retained"]) + more)
    in_recovery = rows[0]["in_recovery"] if rows else bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])
    if in_recovery:
        return
    retaining = [r for r in rows if r["retained"] is not None]
    top = max(retaining, key=lambda r: r["retained"], default=None)
    out.metrics["replication_slot_retained_bytes"] = max(float(top["retained"]), 0.0) if top else 0.0
    if top and top["retained"] > 0:
        out.details["replication_slot_retained_bytes"] = redact(_slot_text(top["slot"], top["retained"]))


def _segment_number(name: str | None, segment_size: int) -> int | None:
    """The position of a WAL segment (timeline left out: a promotion keeps counting); None for a history file."""
    match = _WAL_NAME.match(name or "")
    if not match or not segment_size:
        return None
    return int(match[2], 16) * (0x100000000 // segment_size) + int(match[3], 16)


def _segment_name(timeline: str, number: int, segment_size: int) -> str:
    per_log = 0x100000000 // segment_size
    return f"{timeline}{number // per_log:08X}{number % per_log:08X}"


def _archiver(conn: psycopg.Connection, out: Figures) -> None:
    r = _one(conn, _ARCHIVER)
    out.counters["archive_failed_count"] = float(r["failed_count"] or 0)
    if r["failed_count"] and r["last_failed_wal"]:
        out.details["archive_failures_per_minute"] = redact(
            f"archive_command failed on {r['last_failed_wal']} at {_when(r['last_failed_time'])} "
            f"({_count(r['failed_count'], 'failure')} since {_when(r['stats_reset'] or r['started'])}; last archived: "
            f"{r['last_archived_wal'] or 'none'})")
    if r["archive_mode"] not in ("on", "always") or r["in_recovery"]:
        return
    size = int(r["segment_size"] or 0)
    # The segment being written, from the LSN: pg_walfile_name() names the previous one at a segment boundary.
    current = int(r["current_lsn"]) // size if size and r["current_lsn"] is not None else None
    writing = _segment_name(r["current_wal"][:8], current, size) if current is not None else r["current_wal"]
    last = _segment_number(r["last_archived_wal"], size)
    if current is not None and last is not None and last >= current - 1:
        out.metrics["archive_lag_seconds"] = 0.0  # the segment before the one being written is archived
        return
    waiting = int(conn.execute(_READY).fetchone()[0]) if r["can_list"] else None
    if waiting == 0:  # nothing completed waits (a fresh cluster, statistics reset, a history file archived last)
        out.metrics["archive_lag_seconds"] = 0.0
        return
    since = r["last_archived_time"] or r["stats_reset"] or r["started"]
    lag = max((r["now"] - since).total_seconds(), 0.0)
    out.metrics["archive_lag_seconds"] = lag
    if r["last_archived_wal"]:
        what = f"last archived {r['last_archived_wal']} at {_when(r['last_archived_time'])}"
    else:
        what = f"nothing archived since {_when(since)}"
    queued = f"{_count(waiting, 'segment')} waiting" if waiting is not None else "segments waiting"
    failing = (f"; last failure on {r['last_failed_wal']} at {_when(r['last_failed_time'])}"
               if r["last_failed_wal"] else "")
    out.details["archive_lag_seconds"] = redact(
        f"{what}; now writing {writing}, {queued}{failing} ({_secs(lag)} behind)")


def _temp_files(conn: psycopg.Connection, out: Figures) -> None:
    row = conn.execute(_TEMP_FILES).fetchone()
    out.counters["temp_files"] = float(row[0] or 0) if row else 0.0
    schema = conn.execute(_STATEMENTS_SCHEMA).fetchone()
    if not out.counters["temp_files"] or not schema:
        return
    query = sql.SQL(_TEMP_STATEMENT).format(chars=sql.Literal(_FETCH_CHARS), schema=sql.Identifier(schema[0]))
    top = _one(conn, query)
    if top:
        out.details["temp_files_per_minute"] = redact(
            f"most temporary blocks written by: {_statement(top['query'])} ({top['temp_blks_written']} blocks "
            f"over {top['calls']} calls since the pg_stat_statements reset)")


def activity_figures(conn: psycopg.Connection, long_query_seconds: float = 60) -> Figures:
    """The activity figures of the database ``conn`` is connected to (an autocommit connection: each query sees the
    server as it is now)."""
    out = Figures()
    _connections(conn, out)
    _queries(conn, out, long_query_seconds)
    _blocked(conn, out)
    _autovacuum(conn, out)
    _oldest_xmin(conn, out)
    _slots(conn, out)
    _archiver(conn, out)
    _temp_files(conn, out)
    return out

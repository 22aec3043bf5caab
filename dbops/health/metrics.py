"""Health figures of the managed database (and of its host when it is local), sampled once a minute.

Counters (commits, deadlocks, WAL position...) only mean something as rates, so every sample carries its raw
counters and the next one turns them into per-second or per-minute figures. Names follow postgres_exporter's
meaning so the thresholds of awesome-prometheus-alerts / postgres_mixin carry over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg

from dbops.errors import DbopsError
from dbops.health.activity import ACTIVITY_METRICS, activity_figures
from dbops.health.figures import Figures
from dbops.health.pooler import POOLER_METRICS, pooler_figures
from dbops.health.tables import TABLE_METRICS, table_figures
from dbops.pg.connect import connection, parse_url
from dbops.redact import redact

# Figures a sample can hold, with a one-line meaning (also the Prometheus help text).
METRICS: dict[str, str] = {
    "up": "1 when the database answered, 0 when it did not",
    "connections_used": "client connections on the server",
    "max_connections": "the server's max_connections",
    "connections_used_ratio": "client connections / the slots applications can use (max_connections minus the "
                              "reserved ones)",
    "active_sessions": "sessions running a statement in this database",
    "idle_in_transaction_sessions": "sessions idle inside an open transaction in this database",
    "longest_transaction_seconds": "age of the oldest open transaction in this database",
    "lock_waits": "sessions waiting on a lock in this database",
    "deadlocks_per_minute": "deadlocks detected per minute since the previous sample",
    "commits_per_second": "commits per second since the previous sample",
    "rollbacks_per_second": "rollbacks per second since the previous sample",
    "rollback_ratio": "rollbacks / (commits + rollbacks) since the previous sample",
    "cache_hit_ratio": "shared buffer hits / block requests (since the previous sample when there were any)",
    "temp_bytes_per_second": "bytes written to temporary files per second",
    "wal_bytes_per_second": "WAL generated per second (server-wide)",
    "checkpoints_timed_ratio": "timed checkpoints / all checkpoints since the statistics reset",
    "checkpoints_requested": "requested checkpoints since the statistics reset",
    "database_size_bytes": "size of this database",
    "database_growth_bytes_per_second": "change of the database size per second since the previous sample",
    "wraparound_age": "age(datfrozenxid) of this database, in transactions",
    "wraparound_transactions_left": "transactions left before the wraparound limit (2^31 - age)",
    "replication_lag_seconds": "largest replay lag among streaming replicas (absent when there are none)",
    "host_cpu_percent": "host CPU use (local servers only)",
    "host_memory_percent": "host memory use (local servers only)",
    "host_disk_read_bytes_per_second": "host disk reads per second (local servers only)",
    "host_disk_write_bytes_per_second": "host disk writes per second (local servers only)",
    "temp_files_per_minute": "temporary files created per minute since the previous sample",
    "archive_failures_per_minute": "failed archive_command runs per minute since the previous sample",
    **ACTIVITY_METRICS,
    **TABLE_METRICS,
    **POOLER_METRICS,
}
COUNTERS = ("xact_commit", "xact_rollback", "deadlocks", "blks_hit", "blks_read", "temp_bytes", "temp_files",
            "wal_bytes", "database_size_bytes", "disk_read_bytes", "disk_write_bytes", "archive_failed_count")
# The sampling session gives up rather than add load: a statement over this is cancelled, a lock never waited for.
SAMPLE_TIMEOUTS = "SET statement_timeout = '5s'; SET lock_timeout = '100ms'"

WRAPAROUND_LIMIT = 2**31

_SQL = """
SELECT
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS connections_used,
  current_setting('max_connections')::int AS max_connections,
  (SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()) AS active_sessions,
  (SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND state LIKE 'idle in transaction%') AS idle_in_transaction_sessions,
  (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) FROM pg_stat_activity
    WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid())
    AS longest_transaction_seconds,
  (SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock') AS lock_waits,
  d.xact_commit, d.xact_rollback, d.deadlocks, d.blks_hit, d.blks_read, d.temp_bytes, d.temp_files,
  pg_database_size(current_database()) AS database_size_bytes,
  (SELECT age(datfrozenxid) FROM pg_database WHERE datname = current_database()) AS wraparound_age,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') END AS wal_bytes,
  (SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication) AS replication_lag_seconds,
  (SELECT count(*) FROM pg_stat_replication) AS replicas
FROM pg_stat_database d WHERE d.datname = current_database()
"""
_CHECKPOINTER_17 = "SELECT num_timed AS timed, num_requested AS requested FROM pg_stat_checkpointer"
_CHECKPOINTER_OLD = "SELECT checkpoints_timed AS timed, checkpoints_req AS requested FROM pg_stat_bgwriter"


@dataclass
class HealthSample:
    """One sample: the figures to record, and the raw counters the next sample needs for its rates."""

    at: float
    metrics: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    details: dict[str, str] = field(default_factory=dict)  # figure -> what it points at (redacted)

    def state(self) -> dict[str, Any]:
        """What to keep between samples (a sensor cursor)."""
        return {"at": self.at, "counters": self.counters}


def is_local(url: str) -> bool:
    """True when the server runs on this host, so host CPU, memory and disk figures describe it."""
    host = parse_url(url).host or ""
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


def _host_figures(before: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Host CPU over the interval since the previous sample (a minute's average, not a 0.1 s glimpse), memory now,
    and disk counters for the rates."""
    cpu = psutil.cpu_times()
    total = float(sum(cpu))
    busy = total - float(cpu.idle + getattr(cpu, "iowait", 0.0))
    counters = {"cpu_busy_seconds": busy, "cpu_total_seconds": total}
    if before.get("cpu_total_seconds") is not None and total > before["cpu_total_seconds"]:
        cpu_percent = 100.0 * (busy - before["cpu_busy_seconds"]) / (total - before["cpu_total_seconds"])
    else:
        cpu_percent = float(psutil.cpu_percent(interval=0.1))
    metrics = {"host_cpu_percent": cpu_percent, "host_memory_percent": float(psutil.virtual_memory().percent)}
    io = psutil.disk_io_counters()
    if io is not None:
        counters.update(disk_read_bytes=float(io.read_bytes), disk_write_bytes=float(io.write_bytes))
    return metrics, counters


def _rate(now: dict[str, float], before: dict[str, float], name: str, seconds: float) -> float | None:
    if name not in now or name not in before or seconds <= 0:
        return None
    return max(now[name] - before[name], 0.0) / seconds


def collect_health(url: str, previous: dict[str, Any] | None = None, *, host: bool | None = None,
                   now: float | None = None, pooler_url: str | None = None,
                   long_query_seconds: float = 60.0) -> HealthSample:
    """Sample the database at ``url``; ``previous`` is the ``state()`` of the last sample (rates need it);
    ``pooler_url`` is the admin console of the target's PgBouncer, when it has one; a statement running longer than
    ``long_query_seconds`` counts in ``long_running_queries``.

    A server that does not answer gives ``up = 0`` and the error, never an exception: being down is a figure.
    """
    at = time.time() if now is None else now
    sample = HealthSample(at=at)
    extra = Figures()
    try:
        with connection(url, autocommit=True) as conn:
            conn.execute(SAMPLE_TIMEOUTS)
            cur = conn.execute(_SQL)
            row = cur.fetchone()
            if row is None:
                raise DbopsError("pg_stat_database has no row for this database", "check the database URL")
            values = dict(zip([c.name for c in cur.description or []], row, strict=True))
            query = _CHECKPOINTER_17 if conn.info.server_version >= 170000 else _CHECKPOINTER_OLD
            timed, requested = conn.execute(query).fetchone() or (0, 0)
            extra.update(activity_figures(conn, long_query_seconds))
            extra.update(table_figures(conn))
        if pooler_url:
            extra.update(pooler_figures(pooler_url))
    except (DbopsError, psycopg.Error) as exc:
        sample.metrics["up"] = 0.0
        sample.error = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return sample
    m = sample.metrics
    m["up"] = 1.0
    for name in ("connections_used", "max_connections", "active_sessions", "idle_in_transaction_sessions",
                 "longest_transaction_seconds", "lock_waits", "database_size_bytes", "wraparound_age"):
        m[name] = float(values[name] or 0)
    m["wraparound_transactions_left"] = float(WRAPAROUND_LIMIT - m["wraparound_age"])
    total_checkpoints = float(timed or 0) + float(requested or 0)
    m["checkpoints_requested"] = float(requested or 0)
    if total_checkpoints:
        m["checkpoints_timed_ratio"] = float(timed or 0) / total_checkpoints
    if values["replicas"]:
        m["replication_lag_seconds"] = float(values["replication_lag_seconds"] or 0)
    counters = sample.counters
    for name in ("xact_commit", "xact_rollback", "deadlocks", "blks_hit", "blks_read", "temp_bytes", "temp_files",
                 "database_size_bytes"):
        counters[name] = float(values[name] or 0)
    m.update(extra.metrics)
    counters.update(extra.counters)
    sample.details.update(extra.details)
    # saturation counts the reserved slots: applications run out at max_connections - reserved, not at the max
    usable = m["max_connections"] - m.get("connections_reserved", 0.0)
    m["connections_used_ratio"] = m["connections_used"] / usable if usable > 0 else 1.0
    if values["wal_bytes"] is not None:
        counters["wal_bytes"] = float(values["wal_bytes"])
    before = (previous or {}).get("counters") or {}
    if host if host is not None else is_local(url):
        host_metrics, host_counters = _host_figures(before)
        m.update(host_metrics)
        counters.update(host_counters)
    seconds = at - float((previous or {}).get("at") or at)
    hits, reads = counters["blks_hit"], counters["blks_read"]
    d_hits, d_reads = _rate(counters, before, "blks_hit", 1), _rate(counters, before, "blks_read", 1)
    if seconds > 0 and d_hits is not None and d_reads is not None and d_hits + d_reads > 0:
        hits, reads = d_hits, d_reads
    m["cache_hit_ratio"] = hits / (hits + reads) if hits + reads else 1.0
    rates = {
        "commits_per_second": ("xact_commit", 1),
        "rollbacks_per_second": ("xact_rollback", 1),
        "deadlocks_per_minute": ("deadlocks", 60),
        "temp_bytes_per_second": ("temp_bytes", 1),
        "temp_files_per_minute": ("temp_files", 60),
        "archive_failures_per_minute": ("archive_failed_count", 60),
        "wal_bytes_per_second": ("wal_bytes", 1),
        "host_disk_read_bytes_per_second": ("disk_read_bytes", 1),
        "host_disk_write_bytes_per_second": ("disk_write_bytes", 1),
    }
    for metric, (counter, scale) in rates.items():
        value = _rate(counters, before, counter, seconds)
        if value is not None:
            m[metric] = value * scale
    if "database_size_bytes" in before and seconds > 0:
        growth = counters["database_size_bytes"] - before["database_size_bytes"]
        m["database_growth_bytes_per_second"] = growth / seconds
    commits, rollbacks = m.get("commits_per_second"), m.get("rollbacks_per_second")
    if commits is not None and rollbacks is not None and commits + rollbacks > 0:
        m["rollback_ratio"] = rollbacks / (commits + rollbacks)
    return sample

"""The PostgreSQL server log as a report: pgBadger (Debian's ``pgbadger``) in incremental mode over the new lines of
the log, its HTML report kept under a reports folder and its headline figures read back (:mod:`dbops.logs.pgbadger`).
"""

from dbops.logs.pgbadger import (
    LEVELS,
    LogReport,
    LogSource,
    SlowStatement,
    find_pgbadger,
    log_report,
    log_source,
    missing_log_settings,
    server_log_settings,
)

__all__ = [
    "LEVELS",
    "LogReport",
    "LogSource",
    "SlowStatement",
    "find_pgbadger",
    "log_report",
    "log_source",
    "missing_log_settings",
    "server_log_settings",
]

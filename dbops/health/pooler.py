"""PgBouncer saturation, read from its admin console (``SHOW POOLS``) when the target names a pooler.

The admin console (database ``pgbouncer``) speaks only the simple query protocol: psycopg 3 sends a statement with no
parameters as a simple query, so ``SHOW POOLS`` goes out as it is. The console's own pool (database ``pgbouncer``,
the sampling connection itself) is left out. A pooler that does not answer is ``pooler_up = 0`` with the error as its
detail, never an exception.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from dbops.errors import DbopsError
from dbops.health.figures import Figures
from dbops.pg.connect import connection
from dbops.redact import redact

POOLER_METRICS: dict[str, str] = {
    "pooler_up": "1 when the target's PgBouncer admin console answered, 0 when it did not",
    "pooler_clients_waiting": "clients queued in PgBouncer for a server connection (cl_waiting, all pools)",
    "pooler_max_wait_seconds": "how long the oldest client queued in PgBouncer has waited (maxwait, worst pool)",
    "pooler_clients_active": "clients paired with a server connection in PgBouncer (cl_active, all pools)",
    "pooler_servers_active": "server connections in use by PgBouncer's clients (sv_active, all pools)",
}

POOLER_CONNECT_TIMEOUT_S = 5
_ADMIN_DATABASE = "pgbouncer"


def _int(row: dict[str, Any], key: str) -> int:
    return int(row.get(key) or 0)


def _wait_seconds(row: dict[str, Any]) -> float:
    return _int(row, "maxwait") + _int(row, "maxwait_us") / 1e6


def _clients(n: int) -> str:
    return "1 client" if n == 1 else f"{n} clients"


def _pool_text(row: dict[str, Any]) -> str:
    return (f"pool {row.get('database')}/{row.get('user')} ({row.get('pool_mode') or 'unknown'} mode): "
            f"{_clients(_int(row, 'cl_waiting'))} waiting, the oldest for {_wait_seconds(row):.3f} s; "
            f"{_clients(_int(row, 'cl_active'))} active; servers {_int(row, 'sv_active')} active, "
            f"{_int(row, 'sv_idle')} idle, {_int(row, 'sv_used')} used")


def _error_line(exc: Exception) -> str:
    text = exc.problem if isinstance(exc, DbopsError) else str(exc)
    lines = text.strip().splitlines()
    return redact(" ".join(lines[0].split()) if lines else type(exc).__name__)


def pooler_figures(admin_url: str) -> Figures:
    """``SHOW POOLS`` of the PgBouncer whose admin console is ``admin_url`` (e.g.
    ``postgresql://user@127.0.0.1:6432/pgbouncer``; the user must be in its ``stats_users`` or ``admin_users``)."""
    out = Figures()
    try:
        with connection(admin_url, autocommit=True, connect_timeout=POOLER_CONNECT_TIMEOUT_S) as conn:
            rows = conn.cursor(row_factory=dict_row).execute("SHOW POOLS").fetchall()
    except (DbopsError, psycopg.Error, OSError) as exc:
        out.metrics["pooler_up"] = 0.0
        out.details["pooler_up"] = _error_line(exc)
        return out
    pools = [r for r in rows if r.get("database") != _ADMIN_DATABASE]
    m = out.metrics
    m["pooler_up"] = 1.0
    m["pooler_clients_waiting"] = float(sum(_int(r, "cl_waiting") for r in pools))
    m["pooler_max_wait_seconds"] = max((_wait_seconds(r) for r in pools), default=0.0)
    m["pooler_clients_active"] = float(sum(_int(r, "cl_active") for r in pools))
    m["pooler_servers_active"] = float(sum(_int(r, "sv_active") for r in pools))
    if not pools:
        return out
    worst = {
        "pooler_clients_waiting": max(pools, key=lambda r: (_int(r, "cl_waiting"), _wait_seconds(r))),
        "pooler_max_wait_seconds": max(pools, key=lambda r: (_wait_seconds(r), _int(r, "cl_waiting"))),
        "pooler_clients_active": max(pools, key=lambda r: _int(r, "cl_active")),
        "pooler_servers_active": max(pools, key=lambda r: _int(r, "sv_active")),
    }
    for figure, row in worst.items():
        if m[figure]:
            out.details[figure] = redact(_pool_text(row))
    return out

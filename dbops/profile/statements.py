"""pg_stat_statements snapshots and the difference between two of them.

The view is cumulative since its last reset, so the load of "this period" is the difference between two snapshots;
after a reset (``pg_stat_statements_info.stats_reset`` moved, or a counter went down) the new snapshot is the delta.

Statement texts are redacted (:func:`dbops.redact.redact`) as they are read: pg_stat_statements keeps utility
statements verbatim, so an ``ALTER ROLE ... PASSWORD '...'`` would otherwise reach the snapshot file, the printed
table and Dagster's event log. Snapshots are private files (0600 in a 0700 folder).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dbops.errors import DbopsError
from dbops.private import private_dir, write_private
from dbops.redact import redact


class StatsNotLoaded(DbopsError):
    """pg_stat_statements is not in shared_preload_libraries."""


@dataclass(frozen=True)
class StatementStats:
    """Counters of one normalized statement (per user and query id); ``role`` is the user that ran it."""

    key: str
    query: str
    calls: int
    total_ms: float
    rows: int
    blks_hit: int
    blks_read: int
    role: str = ""  # empty in snapshots written before dbops recorded it

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0


@dataclass
class Snapshot:
    stats_reset: str | None
    statements: dict[str, StatementStats] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"stats_reset": self.stats_reset, "statements": [asdict(s) for s in self.statements.values()]}
        )

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        raw = json.loads(text)
        stmts = {s["key"]: StatementStats(**s) for s in raw["statements"]}
        return cls(raw.get("stats_reset"), stmts)


def ensure_extension(conn: psycopg.Connection[Any]) -> None:
    """Create the extension in this database, and say which setting to change when the library is not preloaded."""
    loaded = conn.execute(
        "SELECT 'pg_stat_statements' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'),"
        " ' ', ''), ','))"
    ).fetchone()[0]  # type: ignore[index]
    if not loaded:
        raise StatsNotLoaded(
            "pg_stat_statements is not loaded on this server, so there is no query profile",
            "add pg_stat_statements to shared_preload_libraries in postgresql.conf"
            " (ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements') and restart PostgreSQL",
        )
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


_IGNORED = ("pg_stat_statements", "EXPLAIN ", "pg_catalog.", "information_schema.")


def excluded_roles(raw: str) -> list[str]:
    """Roles whose statements are maintenance, not application traffic, from a comma-separated list (the target's
    ``profile.exclude_roles``, ``DBOPS_PROFILE_EXCLUDE_ROLES``): on the embedded server dbops' own tooling roles,
    whose dumps, seeds and checks would otherwise rank as the slowest "queries"."""
    return [name.strip() for name in raw.split(",") if name.strip()]


def take_snapshot(conn: psycopg.Connection[Any], exclude_roles: list[str] | None = None) -> Snapshot:
    """Counters of the statements run in the connected database (top level only; our own catalog queries and the
    statements of ``exclude_roles`` left out)."""
    ensure_extension(conn)
    reset = conn.execute("SELECT stats_reset::text FROM pg_stat_statements_info").fetchone()
    rows = conn.execute(
        """
        SELECT s.userid::text || ':' || s.queryid::text, s.query, s.calls,
               s.total_exec_time + s.total_plan_time, s.rows, s.shared_blks_hit, s.shared_blks_read,
               coalesce(r.rolname, '')
        FROM pg_stat_statements(true) AS s
        JOIN pg_database AS d ON d.oid = s.dbid
        LEFT JOIN pg_roles AS r ON r.oid = s.userid
        WHERE d.datname = current_database() AND s.toplevel AND s.queryid IS NOT NULL
          AND (r.rolname IS NULL OR r.rolname <> ALL(%s))
        """, [exclude_roles or []]
    ).fetchall()
    snap = Snapshot(reset[0] if reset else None)
    for key, query, calls, total, nrows, hit, read, role in rows:
        if any(marker in query for marker in _IGNORED):
            continue
        snap.statements[key] = StatementStats(key, redact(query), calls, float(total), nrows, hit, read, role)
    return snap


def delta(previous: Snapshot | None, current: Snapshot) -> tuple[list[StatementStats], bool]:
    """The load between two snapshots, and whether the statistics were reset in between."""
    if previous is None:
        return [s for s in current.statements.values() if s.calls > 0], False
    was_reset = previous.stats_reset != current.stats_reset or any(
        s.calls < previous.statements[k].calls for k, s in current.statements.items() if k in previous.statements
    )
    if was_reset:
        return [s for s in current.statements.values() if s.calls > 0], True
    out = []
    for key, s in current.statements.items():
        before = previous.statements.get(key)
        if before is None:
            out.append(s)
            continue
        calls = s.calls - before.calls
        if calls > 0:
            out.append(StatementStats(
                key, s.query, calls, s.total_ms - before.total_ms, s.rows - before.rows,
                s.blks_hit - before.blks_hit, s.blks_read - before.blks_read, s.role,
            ))
    return out, False


@dataclass(frozen=True)
class QueryProfile:
    """The top statements of a period with the numbers worth plotting over time; a period in which no statement ran
    (an idle database) has no mean times: ``p95_mean_ms`` and ``slowest_10pct_mean_ms`` are None (not measured)."""

    top: list[StatementStats]
    total_ms: float
    statements: int
    calls: int
    p95_mean_ms: float | None
    slowest_10pct_mean_ms: float | None
    stats_reset: bool

    @property
    def idle(self) -> bool:
        """No statement ran in the period: there is nothing to judge."""
        return self.statements == 0

    def share(self, s: StatementStats) -> float:
        return s.total_ms / self.total_ms if self.total_ms else 0.0

    def slow_queries_under(self, limit_ms: float) -> bool | None:
        """Whether the mean time of the slowest 10 % of statements is below ``limit_ms``: the targets file's
        ``limits.slow_query_mean_ms`` (``load_targets(target.targets_file).limits.slow_query_mean_ms``); None when no
        statement ran (nothing checked)."""
        return None if self.slowest_10pct_mean_ms is None else self.slowest_10pct_mean_ms < limit_ms


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def build_profile(period: list[StatementStats], was_reset: bool, top_n: int = 20) -> QueryProfile:
    means = [s.mean_ms for s in period]
    slowest = sorted(period, key=lambda s: s.mean_ms, reverse=True)[: max(1, math.ceil(len(period) / 10))]
    slow_calls = sum(s.calls for s in slowest)
    slow_mean = sum(s.total_ms for s in slowest) / slow_calls if slow_calls else 0.0
    return QueryProfile(
        top=sorted(period, key=lambda s: s.total_ms, reverse=True)[:top_n],
        total_ms=float(sum(s.total_ms for s in period)),
        statements=len(period),
        calls=sum(s.calls for s in period),
        p95_mean_ms=percentile(means, 0.95) if period else None,
        slowest_10pct_mean_ms=slow_mean if period else None,
        stats_reset=was_reset,
    )


class SnapshotStore:
    """The previous snapshot, kept as JSON per database so the next profile reports a delta (a private file)."""

    def __init__(self, root: Path, database: str) -> None:
        self.path = Path(root) / f"{database}.pgss.json"

    def load(self) -> Snapshot | None:
        if not self.path.is_file():
            return None
        try:
            return Snapshot.from_json(self.path.read_text())
        except (ValueError, KeyError, TypeError):
            return None  # a damaged snapshot only costs one delta

    def save(self, snap: Snapshot) -> None:
        private_dir(self.path.parent)
        write_private(self.path, snap.to_json())


def profile(conn: psycopg.Connection[Any], store: SnapshotStore | None, top_n: int = 20,
            exclude_roles: tuple[str, ...] | list[str] = (),
            progress: Callable[[str], None] | None = None) -> QueryProfile:
    """Snapshot, diff against the stored snapshot, store the new one (``exclude_roles``: the target's
    ``profile.exclude_roles``; ``progress``: told each phase as it happens, one line each)."""
    say = progress or (lambda message: None)
    started = time.monotonic()
    previous = store.load() if store else None
    say("profiling: snapshot of pg_stat_statements" + (" (delta since the stored snapshot)" if previous else
                                                        " (since the statistics reset)"))
    current = take_snapshot(conn, list(exclude_roles))
    period, was_reset = delta(previous, current)
    if store:
        store.save(current)
    prof = build_profile(period, was_reset, top_n)
    say(f"profiled: {prof.statements} statements, {prof.calls} calls"
        + (" (statistics were reset: counting from the reset)" if was_reset else "")
        + (" — no statement ran in the period" if prof.idle else "")
        + f" ({time.monotonic() - started:.1f} s)")
    return prof

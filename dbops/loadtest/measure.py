"""What the server spent on a load-test step, measured: its CPU time, pg_stat_statements' plan and execution time,
and a settled state (VACUUM ANALYZE done, autovacuum idle) before anything is timed.

Server CPU is read from the operating system, not estimated: the postmaster of the database under test is found as
the parent of this session's backend (``pg_backend_pid()``), accepted only when its start time is the server's
``pg_postmaster_start_time()`` (so a remote server whose backend pid happens to exist here is never mistaken for a
local one), and the CPU of the server is the user + system time of the postmaster and all its children (backends,
autovacuum, checkpointer, WAL writer...) plus the time of children already reaped (the postmaster's
``children_user``/``children_system``, where the time of a backend that exited mid-step goes): psutil reads them from
``/proc/<pid>/stat``. A server on another machine has no such figure (``None``, with the reason).

pg_stat_statements (when its extension exists in the database) gives the second figure, the time the server spent
planning and executing the load test role's statements (``total_plan_time`` is only counted with
``pg_stat_statements.track_planning = on``); it is wall time inside the statements, not CPU: waits for locks or I/O
count, while protocol handling, parsing, commit and WAL flushes do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from dbops.pg.connect import connection


# ---- server CPU --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerProcesses:
    """The postmaster of a server running on this machine."""

    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the server: postmaster, live children and reaped children."""
        try:
            root = psutil.Process(self.pid)
            times = root.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            children = root.children(recursive=False)
        except psutil.Error:
            return 0.0
        for child in children:
            try:
                child_times = child.cpu_times()
            except psutil.Error:  # it exited between the listing and now: its time is in children_* next time
                continue
            total += child_times.user + child_times.system
        return total


def local_server(url: str) -> tuple[ServerProcesses | None, str | None]:
    """The server's postmaster when it runs on this machine, else (None, the reason)."""
    with connection(url) as conn:  # the backend is looked at while the session is open (it exits at close)
        row: Any = conn.execute("SELECT pg_backend_pid(), extract(epoch FROM pg_postmaster_start_time())").fetchone()
        backend, started = int(row[0]), float(row[1])
        try:
            parent = psutil.Process(backend).parent()
        except psutil.Error:
            return None, "the server runs on another machine (its backend is no process here)"
    if parent is None:
        return None, "the backend has no parent process here"
    try:
        if abs(parent.create_time() - started) > 2.0:
            return None, "the backend's pid here belongs to another program (the server runs on another machine)"
    except psutil.Error:
        return None, "the postmaster cannot be read here"
    return ServerProcesses(parent.pid), None


# ---- pg_stat_statements ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatementTimes:
    """Counters of one statement (of one role) in pg_stat_statements."""

    queryid: int
    query: str
    calls: int
    plans: int
    plan_ms: float
    exec_ms: float


@dataclass
class StatementsSnapshot:
    """pg_stat_statements for one role in one database; ``reason`` says why it is empty (not loaded...)."""

    track_planning: bool
    statements: dict[int, StatementTimes] = field(default_factory=dict)
    reason: str | None = None


def statements_snapshot(url: str, role: str) -> StatementsSnapshot:
    """Plan and execution time of ``role``'s statements in this database so far (needs pg_stat_statements)."""
    with connection(url) as conn:
        loaded: Any = conn.execute(
            "SELECT 'pg_stat_statements' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'),"
            " ' ', ''), ','))").fetchone()
        if not loaded[0]:
            return StatementsSnapshot(False, reason="pg_stat_statements is not in shared_preload_libraries")
        # Never created here: a load test leaves the database's extensions as they were (dbops' profile step, or
        # the operator, creates it).
        installed: Any = conn.execute("SELECT to_regclass('pg_stat_statements') IS NOT NULL").fetchone()
        if not installed[0]:
            return StatementsSnapshot(False, reason="the pg_stat_statements extension is not created in this database"
                                                    " (CREATE EXTENSION pg_stat_statements, or run dbops profile)")
        track: Any = conn.execute("SELECT current_setting('pg_stat_statements.track_planning')::bool").fetchone()
        rows = conn.execute(
            "SELECT s.queryid, s.query, s.calls, s.plans, s.total_plan_time, s.total_exec_time"
            " FROM pg_stat_statements(true) AS s JOIN pg_database AS d ON d.oid = s.dbid"
            " JOIN pg_roles AS r ON r.oid = s.userid"
            " WHERE d.datname = current_database() AND r.rolname = %s AND s.queryid IS NOT NULL", [role]).fetchall()
    snap = StatementsSnapshot(bool(track[0]))
    for queryid, query, calls, plans, plan_ms, exec_ms in rows:
        old = snap.statements.get(int(queryid))  # toplevel true/false rows of one statement are summed
        base = (old.calls, old.plans, old.plan_ms, old.exec_ms) if old else (0, 0, 0.0, 0.0)
        snap.statements[int(queryid)] = StatementTimes(int(queryid), " ".join(str(query).split()), base[0] + calls,
                                                       base[1] + plans, base[2] + plan_ms, base[3] + exec_ms)
    return snap


def statements_delta(before: StatementsSnapshot, after: StatementsSnapshot) -> list[StatementTimes]:
    """What each statement cost between two snapshots, the costliest first."""
    out = []
    for key, now in after.statements.items():
        old = before.statements.get(key)
        calls = now.calls - (old.calls if old else 0)
        if calls <= 0:
            continue
        out.append(StatementTimes(key, now.query, calls, now.plans - (old.plans if old else 0),
                                  now.plan_ms - (old.plan_ms if old else 0.0),
                                  now.exec_ms - (old.exec_ms if old else 0.0)))
    return sorted(out, key=lambda s: s.plan_ms + s.exec_ms, reverse=True)


def statements_summary(delta: list[StatementTimes], transactions: int, track_planning: bool,
                       limit: int = 12) -> dict[str, Any]:
    """Per-transaction plan and execution time, and the statements that cost most (plan and exec apart)."""
    plan = sum(s.plan_ms for s in delta)
    execute = sum(s.exec_ms for s in delta)
    per_tx = (lambda ms: round(ms / transactions, 4)) if transactions else (lambda ms: None)
    return {
        "track_planning": track_planning,
        "plan_ms_per_tx": per_tx(plan) if track_planning else None,
        "exec_ms_per_tx": per_tx(execute),
        "plan_share": round(plan / (plan + execute), 3) if track_planning and plan + execute else None,
        "statements": [{"query": s.query[:160], "calls": s.calls, "plans": s.plans,
                        "mean_plan_ms": round(s.plan_ms / s.calls, 4) if track_planning else None,
                        "mean_exec_ms": round(s.exec_ms / s.calls, 4),
                        "total_plan_ms": round(s.plan_ms, 1) if track_planning else None,
                        "total_exec_ms": round(s.exec_ms, 1)} for s in delta[:limit]],
    }


# ---- settled state -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settled:
    """How the database was brought to rest before a timed part."""

    settled: bool  # autovacuum stayed idle for ``quiet_s`` before the timeout
    vacuum_s: float  # the VACUUM ANALYZE
    waited_s: float  # the wait for autovacuum
    autovacuum_seen: int  # most autovacuum workers seen at one look
    quiet_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"settled": self.settled, "vacuum_analyze_s": round(self.vacuum_s, 1),
                "autovacuum_wait_s": round(self.waited_s, 1), "autovacuum_workers_seen": self.autovacuum_seen,
                "quiet_s": self.quiet_s}


def autovacuum_busy(url: str) -> int:
    """Autovacuum workers running now, on the whole server (pg_stat_activity and pg_stat_progress_vacuum)."""
    with connection(url) as conn:
        row: Any = conn.execute(
            "SELECT greatest((SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'),"
            " (SELECT count(*) FROM pg_stat_progress_vacuum AS v JOIN pg_stat_activity AS a USING (pid)"
            " WHERE a.backend_type = 'autovacuum worker'))").fetchone()
    return int(row[0])


def settle(url: str, *, vacuum: bool = True, quiet_s: float = 3.0, timeout_s: float = 120.0,
           poll_s: float = 0.5, busy: Callable[[str], int] = autovacuum_busy) -> Settled:
    """``VACUUM ANALYZE`` the database, then wait until no autovacuum worker ran for ``quiet_s`` seconds in a row
    (at most ``timeout_s``; ``settled`` says whether it got there)."""
    started = time.monotonic()
    if vacuum:
        with connection(url) as conn:
            conn.execute("VACUUM ANALYZE")
    vacuumed = time.monotonic()
    deadline = vacuumed + timeout_s
    quiet_since: float | None = None
    seen = 0
    while True:
        now = time.monotonic()
        workers = busy(url)
        seen = max(seen, workers)
        if workers:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        if quiet_since is not None and now - quiet_since >= quiet_s:
            return Settled(True, vacuumed - started, now - vacuumed, seen, quiet_s)
        if now >= deadline:
            return Settled(False, vacuumed - started, now - vacuumed, seen, quiet_s)
        time.sleep(poll_s)

"""Verification of candidate indexes on a scratch copy: baseline, build, re-measure, drop.

The copy: a restored copy from the backup drill when one is given (``scratch_url``); otherwise a template clone
(``CREATE DATABASE scratch TEMPLATE target``), which PostgreSQL allows only while nobody else is connected to the
target. When the operator's sessions are connected we terminate nothing: we fall back to ``pg_dump -Fc`` of the target
and ``pg_restore`` into the scratch database without foreign-key constraints (measuring reads does not need them, and
restoring them would re-check every row). The scratch database is dropped afterwards.

Parameters are real values: each ``$n`` is sampled from the column it is compared with (random rows of the table);
LIMIT/OFFSET parameters get 20/0. A statement whose parameters cannot all be sampled is not verified.

The copy lives on the same server, so running a statement there is running it on that server: each one runs in
:func:`dbops.profile.plans.sandbox` as the role that ran it (read-only, statement timeout, rolled back), and one
that calls a volatile or user-defined function is never run (:func:`dbops.profile.plans.unsafe_functions`). The
pg_dump copy keeps owners and privileges so those roles can read it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dbops.errors import DbopsError
from dbops.pg.binaries import find_program
from dbops.pg.connect import connection, database_name, split_password, with_database
from dbops.profile.candidates import Candidate, StatementShape
from dbops.profile.plans import sandbox
from dbops.programs import run_command
from dbops.staging import staging_dir

SAMPLES = 5
REPEATS = 3
STATEMENT_TIMEOUT_MS = 30_000
MIN_SPEEDUP = 2.0


@dataclass(frozen=True)
class Measurement:
    candidate: Candidate
    queries: int
    before_ms: float
    after_ms: float
    index_bytes: int
    build_ms: float

    @property
    def speedup(self) -> float:
        return self.before_ms / self.after_ms if self.after_ms > 0 else float("inf")

    @property
    def helped(self) -> bool:
        return self.speedup >= MIN_SPEEDUP


class VerificationFailed(DbopsError):
    """The scratch copy could not be made."""


@contextmanager
def scratch_copy(target_url: str, bin_dir: Path | None = None,
                 staging_root: Path | None = None) -> Iterator[tuple[str, str]]:
    """A throw-away copy of the target on the same server; yields (url, method) and drops it after.

    When the target is in use (no TEMPLATE copy), the copy goes through a pg_dump file: plaintext data, so it is
    written in a private staging directory under ``staging_root`` (``$DBOPS_HOME/staging``), never in TMPDIR."""
    name = f"dbops_scratch_{uuid.uuid4().hex[:10]}"
    admin = with_database(target_url, "postgres")
    method = "template"
    with connection(admin) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(database_name(target_url))))
        except psycopg.errors.ObjectInUse:
            method = "pg_dump"
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise VerificationFailed(
                "cannot create a scratch database to verify index advice",
                "grant CREATEDB to this role, or pass a restored copy (scratch URL) to verify on",
            ) from exc
    url = with_database(target_url, name)
    try:
        if method == "pg_dump":
            if staging_root is None:
                raise VerificationFailed("the target is in use, so the scratch copy needs a pg_dump, and no private "
                                         "staging directory was given", "pass staging_root ($DBOPS_HOME/staging)")
            _dump_restore(target_url, url, bin_dir, staging_root)
        yield url, method
    finally:
        with connection(admin) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _dump_restore(source_url: str, dest_url: str, bin_dir: Path | None, staging_root: Path) -> None:
    src, password = split_password(source_url)
    dst, _ = split_password(dest_url)
    with staging_dir(staging_root) as tmp:
        dump = Path(tmp) / "target.dump"
        listing = Path(tmp) / "restore.list"
        run_command([find_program("pg_dump", bin_dir), "-Fc", "--no-password", "-f", dump, "-d", src],
                    password=password, timeout=3600, what="pg_dump (scratch copy)")
        entries = run_command([find_program("pg_restore", bin_dir), "-l", dump], what="pg_restore -l").stdout
        listing.write_text("\n".join(line for line in entries.splitlines() if " FK CONSTRAINT " not in line))
        run_command([find_program("pg_restore", bin_dir), "--no-password", "-L", listing, "-d", dst, dump],
                    password=password, timeout=3600, what="pg_restore (scratch copy)")
    with connection(dest_url) as conn:
        conn.execute("ANALYZE")


def sample_parameters(conn: psycopg.Connection[Any], shape: StatementShape, query_params: int,
                      samples: int = SAMPLES) -> list[list[Any]] | None:
    """``samples`` parameter lists of real values, or None when a parameter has no known column."""
    by_table: dict[str, list[tuple[int, str]]] = {}
    for number in range(1, query_params + 1):
        if number in shape.limit_params:
            continue
        if number not in shape.params:
            return None
        table, column = shape.params[number]
        by_table.setdefault(table, []).append((number, column))
    rows_by_table: dict[str, list[tuple[Any, ...]]] = {}
    for table, cols in by_table.items():
        stmt = sql.SQL("SELECT {} FROM {} TABLESAMPLE SYSTEM (10) REPEATABLE (42) LIMIT {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for _, c in cols), sql.Identifier(*table.split(".", 1)),
            sql.Literal(samples))
        rows = conn.execute(stmt).fetchall()
        if not rows:
            rows = conn.execute(sql.SQL("SELECT {} FROM {} LIMIT {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for _, c in cols), sql.Identifier(*table.split(".", 1)),
                sql.Literal(samples))).fetchall()
        if not rows:
            return None
        rows_by_table[table] = rows
    out = []
    for i in range(samples):
        values: dict[int, Any] = {}
        for table, cols in by_table.items():
            row = rows_by_table[table][i % len(rows_by_table[table])]
            for (number, _), value in zip(cols, row, strict=True):
                values[number] = value
        for number in shape.limit_params:
            values[number] = 20 if number == min(shape.limit_params) else 0
        out.append([values[n] for n in range(1, query_params + 1)])
    return out


def _to_psycopg(query: str) -> str:
    """pg_stat_statements' ``$n`` placeholders as psycopg's positional ``%s`` (percent signs escaped)."""
    import re

    return re.sub(r"\$(\d+)", lambda m: "%s", query.replace("%", "%%"))


def _param_order(query: str) -> list[int]:
    import re

    return [int(n) for n in re.findall(r"\$(\d+)", query)]


def time_query(conn: psycopg.Connection[Any], query: str, params: list[list[Any]], role: str,
               repeats: int = REPEATS) -> float:
    """Median wall-clock ms over the parameter lists (best of ``repeats`` each, after one warm-up), in a read-only,
    rolled-back sandbox as ``role``."""
    order = _param_order(query)
    text = _to_psycopg(query)
    timings = []
    with sandbox(conn, role, STATEMENT_TIMEOUT_MS):
        for values in params:
            args = [values[n - 1] for n in order]
            conn.execute(text, args).fetchall()  # type: ignore[arg-type]
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                conn.execute(text, args).fetchall()  # type: ignore[arg-type]
                best = min(best, (time.perf_counter() - start) * 1000)
            timings.append(best)
    return statistics.median(timings)


def measure_candidate(conn: psycopg.Connection[Any], candidate: Candidate,
                      workload: list[tuple[str, list[list[Any]], str]]) -> Measurement:
    """Baseline the affected queries (text, parameter lists, role), build the index, ANALYZE, re-measure, drop the
    index."""
    before = sum(time_query(conn, q, p, r) for q, p, r in workload)
    table = sql.Identifier(*candidate.table.split(".", 1))
    index = sql.Identifier(candidate.schema, candidate.name)
    start = time.perf_counter()
    conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
        sql.Identifier(candidate.name), table, sql.SQL(", ").join(sql.Identifier(c) for c in candidate.columns)))
    build_ms = (time.perf_counter() - start) * 1000
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    try:
        size = int(conn.execute(
            "SELECT coalesce(sum(pg_relation_size(c.oid)), 0) FROM pg_class AS c"
            " WHERE c.oid = to_regclass(%s) OR c.oid IN (SELECT inhrelid FROM pg_inherits"
            " WHERE inhparent = to_regclass(%s))",
            (index.as_string(conn), index.as_string(conn)),
        ).fetchone()[0])  # type: ignore[index]
        after = sum(time_query(conn, q, p, r) for q, p, r in workload)
    finally:
        conn.execute(sql.SQL("DROP INDEX {}").format(index))
    return Measurement(candidate, len(workload), before, after, size, build_ms)

"""Index advice: findings on existing indexes, candidates from the top statements, verification, review migrations.

Ranking: verified candidates that helped (by measured speedup) first, then findings on existing indexes
(unindexed foreign keys, duplicates, unused), then candidates that could not be verified or did not help.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql

from dbops.migrate.numbering import history_versions
from dbops.pg.connect import connection
from dbops.profile.candidates import Candidate, ColumnResolver, analyze_statement, candidates_for, is_covered
from dbops.profile.indexes import Finding, foreign_key_count, index_findings, list_indexes
from dbops.profile.plans import unsafe_functions
from dbops.profile.review import write_migration
from dbops.profile.statements import QueryProfile, StatementStats
from dbops.profile.verify import Measurement, measure_candidate, sample_parameters, scratch_copy
from dbops.redact import redact

MIN_TABLE_ROWS = 10_000  # below this a sequential scan is as good as an index


@dataclass
class Advice:
    candidate: Candidate
    queries: list[StatementStats]
    measurement: Measurement | None = None
    migration: Path | None = None
    note: str = ""

    @property
    def verified(self) -> bool:
        return self.measurement is not None and self.measurement.helped


@dataclass
class AdviceReport:
    advice: list[Advice] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    scratch_method: str | None = None
    foreign_keys: int = 0  # foreign keys judged (unindexed or not): 0 means the check had nothing to check

    @property
    def verified(self) -> list[Advice]:
        return [a for a in self.advice if a.verified]


def propose(conn: psycopg.Connection[Any], statements: list[StatementStats]) -> list[Advice]:
    """Candidates for the given statements, merged per index, minus those an existing index already covers."""
    resolver = ColumnResolver(conn)
    existing = [(f"{i.schema}.{i.table}", i.columns) for i in list_indexes(conn) if i.method == "btree"]
    big = {
        r[0] for r in conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p', 'm') AND (CASE WHEN c.relkind = 'p' THEN (SELECT sum(greatest(p.reltuples,"
            " 0)) FROM pg_inherits AS i JOIN pg_class AS p ON p.oid = i.inhrelid WHERE i.inhparent = c.oid)"
            " ELSE c.reltuples END) >= %s",
            (MIN_TABLE_ROWS,),
        ).fetchall()
    }
    merged: dict[Candidate, Advice] = {}
    for stmt in statements:
        shape = analyze_statement(resolver, stmt.query)
        if shape is None:
            continue
        for cand in candidates_for(shape):
            if cand.table not in big or is_covered(cand, existing):
                continue
            merged.setdefault(cand, Advice(cand, [])).queries.append(stmt)
    return list(merged.values())


def partitions_of(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Direct partitions of a partitioned table (empty for a plain table)."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_partition_tree(to_regclass(%s)) AS t"
        " JOIN pg_class AS c ON c.oid = t.relid JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE t.level = 1 ORDER BY 1",  # one level: sub-partitioned trees are not handled
        (psycopg.sql.Identifier(*table.split(".", 1)).as_string(conn),),
    ).fetchall()
    return [r[0] for r in rows]


def _param_count(query: str) -> int:
    numbers = [int(n) for n in re.findall(r"\$(\d+)", query)]
    return max(numbers, default=0)


def verify(target_url: str, advice: list[Advice], *, scratch_url: str | None = None,
           bin_dir: Path | None = None, staging_root: Path | None = None,
           progress: Callable[[str], None] | None = None) -> str | None:
    """Measure every candidate on a scratch copy (or the given restored copy); returns how the copy was made
    (``progress``: told of the copy and of each candidate as it is verified, with what it measured)."""
    if not advice:
        return None
    say = progress or (lambda message: None)

    def run(url: str) -> None:
        with connection(url) as conn:
            resolver = ColumnResolver(conn)
            for number, item in enumerate(advice, 1):
                started = time.monotonic()
                say(f"verifying candidate {number}/{len(advice)} on the copy: index on {item.candidate.describe()}")
                workload = []
                refused = []
                for stmt in item.queries:
                    shape = analyze_statement(resolver, stmt.query)
                    if shape is None or not shape.read_only:
                        continue
                    if not stmt.role:
                        refused.append("the role that ran it is unknown")
                        continue
                    unsafe = unsafe_functions(conn, stmt.query)
                    if unsafe:  # executing it would do what it does: never run it
                        refused.append("it calls " + ", ".join(unsafe))
                        continue
                    params = sample_parameters(conn, shape, _param_count(stmt.query))
                    if params is not None:
                        workload.append((stmt.query, params, stmt.role))
                if not workload:
                    item.note = "not verified: " + ("; ".join(dict.fromkeys(refused)) if refused else
                                                    "no read-only statement with sampleable parameters")
                    say(f"candidate {number}/{len(advice)}: {redact(item.note)}")
                    continue
                try:
                    item.measurement = measure_candidate(conn, item.candidate, workload)
                except psycopg.Error as exc:
                    item.note = f"not verified: {str(exc).strip().splitlines()[0]}"
                    say(f"candidate {number}/{len(advice)}: {redact(item.note)}")
                    continue
                m = item.measurement
                if not m.helped:
                    item.note = f"measured {m.speedup:.1f}x: not worth an index"
                say(f"candidate {number}/{len(advice)}: {m.before_ms:.2f} ms -> {m.after_ms:.2f} ms ({m.speedup:.1f}x, "
                    f"{'verified' if m.helped else 'not worth an index'}; {time.monotonic() - started:.1f} s)")

    if scratch_url:
        say(f"verifying {len(advice)} candidates on the given restored copy")
        run(scratch_url)
        return "given copy"
    started = time.monotonic()
    say(f"making a scratch copy of the target to verify {len(advice)} candidates on")
    with scratch_copy(target_url, bin_dir, staging_root) as (url, method):
        say(f"scratch copy made ({method}, {time.monotonic() - started:.1f} s)")
        run(url)
    return method


def advise(target_url: str, prof: QueryProfile, *, review_dir: Path, migrations_dir: Path | None = None,
           scratch_url: str | None = None, bin_dir: Path | None = None, verify_candidates: bool = True,
           staging_root: Path | None = None, history: tuple[str, str] | None = None,
           progress: Callable[[str], None] | None = None) -> AdviceReport:
    """The whole advice: findings, candidates for the top statements, verification, review migrations.

    ``history``: the target's migration history table (``migrate.default_schema``, ``migrate.table``); a review
    migration is numbered after its versions and the pending files of ``migrations_dir``. ``progress``: told each
    phase as it happens (findings, candidates, each verification, migrations), one line each."""
    say = progress or (lambda message: None)
    started = time.monotonic()
    say("judging existing indexes and foreign keys")
    with connection(target_url) as conn:
        findings = index_findings(conn)
        fk_count = foreign_key_count(conn)
        say(f"{len(findings)} findings on existing indexes ({fk_count} foreign keys judged); proposing candidates for "
            f"{len(prof.top)} top statements ({time.monotonic() - started:.1f} s)")
        advice = propose(conn, prof.top)
    say(f"{len(advice)} candidate indexes" + ("" if verify_candidates or not advice else " (not verified)"))
    report = AdviceReport(findings=findings, foreign_keys=fk_count)
    if verify_candidates:
        report.scratch_method = verify(target_url, advice, scratch_url=scratch_url, bin_dir=bin_dir,
                                       staging_root=staging_root, progress=say)
    applied: list[str] | None = None
    for item in advice:
        m = item.measurement
        if m is not None and m.helped:
            with connection(target_url) as conn:
                parts = partitions_of(conn, item.candidate.table)
                if applied is None:
                    applied = history_versions(conn, *history) if history else []
            item.migration = write_migration(review_dir, migrations_dir, item.candidate, m.speedup, m.before_ms,
                                             m.after_ms, m.index_bytes, parts, applied)
            say(f"review migration written: {item.migration}")
    report.advice = sorted(advice, key=lambda a: (not a.verified, -(a.measurement.speedup if a.measurement else 0)))
    return report

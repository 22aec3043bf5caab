"""The maintenance facts the query profile reports beside its statements: scans, dead tuples, bloat and vacuum per
table, sequences near exhaustion, the cache hit ratio and the wraparound age (the sampled health figures of the
running database are dbops.health.metrics).

Bloat is measured with pgstattuple when the extension is installed (it reads every page, so only tables up to
``EXACT_BLOAT_MAX_BYTES``), else estimated from the dead-tuple share in the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

SEQUENCE_DANGER = 0.9
WRAPAROUND_WARN_LEFT = 10_000_000
EXACT_BLOAT_MAX_BYTES = 256 * 1024 * 1024


@dataclass
class TableFacts:
    cache_hit_ratio: float | None
    xid_age: int
    xid_left: int
    tables: list[dict[str, Any]] = field(default_factory=list)
    sequences: list[dict[str, Any]] = field(default_factory=list)
    bloat_method: str = "estimate"

    @property
    def sequences_in_danger(self) -> list[dict[str, Any]]:
        return [s for s in self.sequences if s["used"] >= SEQUENCE_DANGER]


def table_facts(conn: psycopg.Connection[Any]) -> TableFacts:
    hit = conn.execute(
        "SELECT sum(blks_hit)::float8 / nullif(sum(blks_hit) + sum(blks_read), 0) FROM pg_stat_database"
        " WHERE datname = current_database()"
    ).fetchone()[0]  # type: ignore[index]
    age = int(conn.execute("SELECT age(datfrozenxid) FROM pg_database WHERE datname = current_database()")
              .fetchone()[0])  # type: ignore[index]
    tables = [
        dict(zip(("table", "seq_scan", "idx_scan", "live", "dead", "last_vacuum", "last_autovacuum", "bytes"), r,
                 strict=True))
        for r in conn.execute(
            """
            SELECT schemaname || '.' || relname, seq_scan, coalesce(idx_scan, 0), n_live_tup, n_dead_tup,
                   last_vacuum::text, last_autovacuum::text, pg_table_size(relid)
            FROM pg_stat_user_tables ORDER BY pg_table_size(relid) DESC
            """
        ).fetchall()
    ]
    method = "estimate"
    has_pgstattuple = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple'").fetchone()
    for t in tables:
        total = t["live"] + t["dead"]
        t["bloat_ratio"] = round(t["dead"] / total, 4) if total else 0.0
        if has_pgstattuple and t["bytes"] <= EXACT_BLOAT_MAX_BYTES:
            try:
                row = conn.execute(
                    "SELECT (dead_tuple_percent + free_percent) / 100 FROM pgstattuple(%s::regclass)",
                    (t["table"],),
                ).fetchone()
                t["bloat_ratio"] = round(float(row[0]), 4)  # type: ignore[index]
                method = "pgstattuple"
            except psycopg.Error:
                pass
    sequences = [
        {"sequence": r[0], "last_value": r[1], "max_value": r[2], "used": float(r[3])}
        for r in conn.execute(
            """
            SELECT schemaname || '.' || sequencename, last_value, max_value,
                   coalesce(last_value, 0)::numeric / max_value
            FROM pg_sequences ORDER BY 4 DESC
            """
        ).fetchall()
    ]
    return TableFacts(
        cache_hit_ratio=None if hit is None else float(hit),
        xid_age=age,
        xid_left=2**31 - age,
        tables=tables,
        sequences=sequences,
        bloat_method=method,
    )

"""Migration files for verified advice, written for an operator's review and never applied by dbops.

Format: ``V<version>__<description>.sql``, first line ``-- dbops:no-transaction`` because ``CREATE INDEX
CONCURRENTLY`` cannot run inside a transaction. The version comes after the highest one the target has: applied or
baselined (its history table, ``migrate.default_schema``.``migrate.table``), pending (its migrations folder) or already
written for review, and is spelled in the target's own style: ``V021__`` after ``V020__`` (zero padding kept), ``V9__``
after ``V8__``, ``V1.3__`` after ``V1.2__``. So the file can be moved into the migrations folder as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from psycopg import sql

from dbops.migrate.numbering import folder_versions, next_version
from dbops.profile.candidates import Candidate


def review_dir(explicit: str | None, default: Path) -> Path:
    """Where migrations for review go: ``explicit``, else the target's ``profile.review_dir``."""
    return Path(explicit) if explicit else default


def _q(*parts: str) -> str:
    return sql.Identifier(*parts).as_string(None)


def migration_text(candidate: Candidate, speedup: float, before_ms: float, after_ms: float, size: int,
                   partitions: list[str] | None = None) -> str:
    """The migration; a partitioned table gets the documented pattern (CONCURRENTLY is refused on its parent):
    an invalid index ``ON ONLY`` the parent, each partition's index built concurrently, then attached."""
    cols = ", ".join(_q(c) for c in candidate.columns)
    head = (
        "-- dbops:no-transaction\n"
        f"-- Verified by dbops advise on a scratch copy: {before_ms:.2f} ms -> {after_ms:.2f} ms"
        f" ({speedup:.1f}x faster) for the affected queries; index size {size:,} bytes.\n"
        "-- Review before moving this file into the target's migrations folder: dbops never applies it by itself.\n"
    )
    table = _q(*candidate.table.split(".", 1))
    if not partitions:
        return head + f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_q(candidate.name)} ON {table} ({cols});\n"
    lines = [f"CREATE INDEX IF NOT EXISTS {_q(candidate.name)} ON ONLY {table} ({cols});"]
    for part in partitions:
        child = Candidate(part, candidate.columns)
        lines.append(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_q(child.name)} ON {_q(*part.split('.', 1))} ({cols});")
        lines.append(f"ALTER INDEX {_q(candidate.schema, candidate.name)} ATTACH PARTITION"
                     f" {_q(child.schema, child.name)};")
    return head + "\n".join(lines) + "\n"


def write_migration(review_dir: Path, migrations_dir: Path | None, candidate: Candidate, speedup: float,
                    before_ms: float, after_ms: float, size: int, partitions: list[str] | None = None,
                    applied: Iterable[str] = ()) -> Path:
    """Write (or rewrite, keeping its version) the review migration for one candidate; a new one is numbered after
    ``applied`` (the history's versions), the pending files of ``migrations_dir`` and the review folder's files."""
    review_dir = Path(review_dir)
    review_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"__add_index_{candidate.name}.sql"
    existing = sorted(review_dir.glob(f"V*{suffix}"))
    if existing:
        path = existing[0]
    else:
        path = review_dir / f"V{next_version([*applied, *folder_versions(review_dir, migrations_dir)])}{suffix}"
    path.write_text(migration_text(candidate, speedup, before_ms, after_ms, size, partitions))
    return path

"""Schema drift: the live schema compared with the schema its migrations produce.

The migrations are replayed into a scratch database on the same server (so roles, extensions and the server version
are the same), both are snapshotted, and every structural difference is drift: an index created by hand, a column
altered outside a migration, a policy dropped in a hurry. The scratch database is always dropped afterwards.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbops.catalog.diff import Change, diff
from dbops.catalog.introspect import snapshot
from dbops.migrate import Migrator
from dbops.pg.connect import connection, drop_database, ensure_database, with_database


@dataclass
class DriftReport:
    changes: list[Change]
    expected_version: str | None

    @property
    def drifted(self) -> bool:
        return bool(self.changes)

    def lines(self) -> list[str]:
        """Each difference phrased from the live database's point of view."""
        wording = {"added": "only in the live database", "removed": "missing from the live database",
                   "changed": "differs from the migrations"}
        return [f"{c.kind} {c.name} {wording[c.action]}" + (f" ({c.detail})" if c.detail else "")
                for c in self.changes]


def replay_snapshot(url: str, locations: Path | list[Path], *,
                    schemas: list[str] | None = None) -> tuple[dict[str, Any], str | None]:
    """Apply every migration to a new scratch database on ``url``'s server and snapshot it; drop it after."""

    scratch = f"dbops_replay_{uuid.uuid4().hex[:10]}"
    ensure_database(url, scratch)
    try:
        scratch_url = with_database(url, scratch)
        result = Migrator(scratch_url, locations).apply()
        with connection(scratch_url) as conn:
            return snapshot(conn, schemas), result.current_version
    finally:
        drop_database(url, scratch)


# Extensions dbops' own steps create in the databases they inspect (profile, integrity); not schema drift.
TOOL_EXTENSIONS = ("amcheck", "pg_stat_statements", "pgstattuple", "pg_buffercache")


def detect_drift(url: str, locations: Path | list[Path], *, schemas: list[str] | None = None) -> DriftReport:
    """Compare the live schema of ``url`` with a fresh replay of ``locations``.

    Partitions are ignored (a daily job adds them) and so are dbops' own tool extensions.
    """
    expected, version = replay_snapshot(url, locations, schemas=schemas)
    with connection(url) as conn:
        live = snapshot(conn, schemas)
    for snap in (expected, live):
        snap["extensions"] = {k: v for k, v in snap["extensions"].items() if k not in TOOL_EXTENSIONS}
    return DriftReport(diff(expected, live, partitions=False), version)

"""Schema drift: the live schema compared with the schema its migrations produce.

The migrations are replayed into a scratch database on the same server (so roles, extensions and the server version
are the same), both are snapshotted, and every structural difference is drift: an index created by hand, a column
altered outside a migration, a policy dropped in a hurry. The scratch database is always dropped afterwards.

A baselined database (its history starts with a BASELINE row) is replayed from the schema its baseline adopted (the
record :class:`~dbops.migrate.BaselineRecord` keeps), baselined at the same version, then brought forward by the later
migrations. Without that record there is nothing to compare with: the report says so (``unchecked``) instead of
reporting the whole adopted schema as drift.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbops.catalog.diff import Change, diff
from dbops.catalog.introspect import snapshot
from dbops.migrate import BaselineRecord, Migrator, Version, migrator_options
from dbops.migrate.history import AppliedRow, HistoryTable
from dbops.pg.connect import connection, database_name, drop_database, ensure_database, with_database
from dbops.settings.model import TargetSettings


@dataclass
class DriftReport:
    changes: list[Change]
    expected_version: str | None
    baseline: str | None = None  # the version the live database was baselined at (its replay starts from the record)
    unchecked: str | None = None  # why nothing was compared (then ``changes`` is empty and means nothing)

    @property
    def drifted(self) -> bool:
        return bool(self.changes)

    def lines(self) -> list[str]:
        """Each difference phrased from the live database's point of view."""
        wording = {"added": "only in the live database", "removed": "missing from the live database",
                   "changed": "differs from the migrations"}
        return [f"{c.kind} {c.name} {wording[c.action]}" + (f" ({c.detail})" if c.detail else "")
                for c in self.changes]


def replay_snapshot(url: str, locations: Path | list[Path], *, schemas: list[str] | None = None,
                    target: TargetSettings | None = None, baseline: tuple[BaselineRecord, str] | None = None,
                    ) -> tuple[dict[str, Any], str | None]:
    """Apply every migration to a new scratch database on ``url``'s server and snapshot it; drop it after.

    ``target``: its migrate settings (history table, placeholders) as the live database is migrated with.
    ``baseline`` (record, version): start from the recorded schema, baselined at ``version``."""

    scratch = f"dbops_replay_{uuid.uuid4().hex[:10]}"
    ensure_database(url, scratch)
    try:
        scratch_url = with_database(url, scratch)
        options = migrator_options(target) if target is not None else {}
        migrator = Migrator(scratch_url, locations, **options)
        if baseline is not None:
            record, version = baseline
            record.restore(scratch_url)
            migrator.baseline(version)
        result = migrator.apply()
        with connection(scratch_url) as conn:
            return snapshot(conn, schemas), result.current_version
    finally:
        drop_database(url, scratch)


def baseline_row(url: str, target: TargetSettings | None) -> AppliedRow | None:
    """The live history's BASELINE row (None when the database was never baselined or has no history)."""
    options = migrator_options(target) if target is not None else {}
    history = HistoryTable(options.get("schema", "public"), options.get("table", "flyway_schema_history"))
    with connection(url) as conn:
        return next((r for r in history.rows(conn) if r.type == "BASELINE"), None)


# Extensions dbops' own steps create in the databases they inspect (profile, integrity); not schema drift.
TOOL_EXTENSIONS = ("amcheck", "pg_stat_statements", "pgstattuple", "pg_buffercache")


def detect_drift(url: str, locations: Path | list[Path], *, schemas: list[str] | None = None,
                 target: TargetSettings | None = None, record: BaselineRecord | None = None) -> DriftReport:
    """Compare the live schema of ``url`` with a fresh replay of ``locations`` (migrated as ``target`` says).

    A baselined database is replayed from ``record``, the schema its baseline adopted. Partitions are ignored (a
    daily job adds them) and so are dbops' own tool extensions.
    """
    row = baseline_row(url, target)
    start: tuple[BaselineRecord, str] | None = None
    if row is not None:
        version = str(row.version)
        meta = record.meta() if record is not None else None
        if record is None or meta is None:
            where = f" in {record.folder}" if record is not None else ""
            return DriftReport([], None, baseline=version, unchecked=(
                f"the database was baselined at {version} but dbops holds no record of the schema that baseline "
                f"adopted{where} (baselined by another tool, or on another machine): nothing to compare with"))
        if meta.get("database") != database_name(url) or Version.parse(str(meta.get("version") or "0")) != row.version:
            return DriftReport([], None, baseline=version, unchecked=(
                f"the record in {record.folder} is of a baseline of {meta.get('database')} at {meta.get('version')}, "
                f"this database ({database_name(url)}) was baselined at {version}: no record of its own baseline"))
        start = (record, version)
    expected, version = replay_snapshot(url, locations, schemas=schemas, target=target, baseline=start)
    with connection(url) as conn:
        live = snapshot(conn, schemas)
    for snap in (expected, live):
        snap["extensions"] = {k: v for k, v in snap["extensions"].items() if k not in TOOL_EXTENSIONS}
    return DriftReport(diff(expected, live, partitions=False), version, baseline=start[1] if start else None)

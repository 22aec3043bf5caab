"""Retention: keep the newest N backups (logical) or N full chains (physical) and/or everything younger than M days;
delete the rest, manifest first, and the archived WAL no kept base backup needs.

Rules, per family:

- logical backups: the newest ``keep_last``, and those younger than ``keep_days``;
- physical backups: the newest ``keep_last`` full backups with every incremental built on them (a kept incremental's
  whole chain is kept), those younger than ``keep_days``, and, when ``keep_days`` is set, the newest full backup older
  than the window, so a point-in-time restore to the window's first second stays possible;
- the newest backup of each family is always kept;
- archived WAL older than the start of the oldest kept base backup is deleted (none while no base backup exists).

Deleting the manifest first means an interrupted prune leaves an incomplete backup (never listed, never "latest"),
not a listed backup with missing objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dbops.backup import wal
from dbops.backup.manifest import MANIFEST, PREFIX, list_backups, object_key
from dbops.backup.store import Store
from dbops.config import positive_number
from dbops.errors import ConfigError


def rules_from_env(env: Mapping[str, str] | None = None) -> tuple[int | None, float | None]:
    """(keep_last, keep_days) from ``DBOPS_BACKUP_KEEP_LAST`` (default 7) and ``DBOPS_BACKUP_KEEP_DAYS`` (unset)."""
    env = os.environ if env is None else env
    keep_last = positive_number(env, "DBOPS_BACKUP_KEEP_LAST", 7)
    return (int(keep_last) if keep_last else None), positive_number(env, "DBOPS_BACKUP_KEEP_DAYS", None)

@dataclass
class PrunePlan:
    backups: list[dict[str, Any]] = field(default_factory=list)  # to delete
    kept: list[dict[str, Any]] = field(default_factory=list)
    wal: list[str] = field(default_factory=list)  # archived WAL files to delete

    @property
    def ids(self) -> list[str]:
        return [m["id"] for m in self.backups]


def _finished(m: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(m["finished_at"])


def _root(m: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> str:
    while m.get("parent") in by_id:
        m = by_id[m["parent"]]
    return m["id"]


def plan_prune(backups: list[dict[str, Any]], keep_last: int | None, keep_days: float | None,
               now: datetime | None = None) -> list[dict[str, Any]]:
    """The backups to delete under the rules above."""
    if keep_last is None and keep_days is None:
        raise ConfigError("no retention rule", "set DBOPS_BACKUP_KEEP_LAST and/or DBOPS_BACKUP_KEEP_DAYS")
    now = now or datetime.now(UTC)
    horizon = now - timedelta(days=keep_days) if keep_days is not None else None
    ordered = sorted(backups, key=lambda m: (m.get("finished_at", ""), m["id"]))
    by_id = {m["id"]: m for m in ordered}
    keep: set[str] = set()
    logical = [m for m in ordered if m.get("kind", "logical") == "logical"]
    fulls = [m for m in ordered if m.get("kind") == "full"]
    physical = [m for m in ordered if m.get("kind") in ("full", "incremental")]
    for family in (logical, fulls, physical):
        if family:
            keep.add(family[-1]["id"])
    if keep_last:
        keep.update(m["id"] for m in logical[-keep_last:])
        keep.update(m["id"] for m in fulls[-keep_last:])
    if horizon is not None:
        keep.update(m["id"] for m in ordered if _finished(m) >= horizon)
        before = [m for m in fulls if _finished(m) < horizon]
        if before:
            keep.add(before[-1]["id"])  # the base a restore to the window's start replays from
    for m in physical:  # a kept incremental keeps its chain; a kept full keeps its incrementals
        if m["kind"] == "incremental" and (m["id"] in keep or _root(m, by_id) in keep):
            keep.add(m["id"])
            parent = m.get("parent")
            while parent in by_id:
                keep.add(parent)
                parent = by_id[parent].get("parent")
    return [m for m in ordered if m["id"] not in keep]


def plan(store: Store, keep_last: int | None, keep_days: float | None,
         now: datetime | None = None) -> PrunePlan:
    backups = list_backups(store)
    doomed = plan_prune(backups, keep_last, keep_days, now)
    gone = {m["id"] for m in doomed}
    kept = [m for m in backups if m["id"] not in gone]
    result = PrunePlan(doomed, kept)
    starts = [m["start_wal_file"] for m in kept if m.get("kind") == "full" and m.get("start_wal_file")]
    if starts:
        result.wal = wal.prune_wal(store, min(starts, key=wal.segment_position), dry_run=True)
    return result


def prune(store: Store, keep_last: int | None, keep_days: float | None, *, dry_run: bool = False) -> PrunePlan:
    """Delete what :func:`plan` selects (unless ``dry_run``) and return the plan."""
    result = plan(store, keep_last, keep_days)
    if not dry_run:
        for manifest in result.backups:
            store.delete(object_key(manifest["id"], MANIFEST))
            for obj in manifest.get("objects", []):
                store.delete(object_key(manifest["id"], obj["name"]))
        for name in result.wal:
            store.delete(wal.wal_key(name))
    return result


def incomplete_backups(store: Store) -> list[str]:
    """Backup folders without a manifest: left by an interrupted backup or prune."""
    names = store.list(PREFIX)
    complete = {n.split("/")[1] for n in names if n.endswith("/" + MANIFEST)}
    return sorted({n.split("/")[1] for n in names} - complete)

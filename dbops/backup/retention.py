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

Prune only counts and deletes backups whose manifest verifies (:func:`dbops.backup.manifest.read_store`): a forged or
foreign manifest is reported in :attr:`PrunePlan.ignored` and its folder left alone, so it can neither push genuine
backups out of the retention window nor point prune at objects outside its own folder. Every object it deletes is
named by a verified manifest and lies inside that backup's folder.

Unfinished writes (a ``.partial`` file, an S3 multipart upload) under dbops' own ``backups/`` and ``wal/`` prefixes
that are older than ``unfinished_after`` (a day: longer than any backup may run, pg_dump is stopped after 6 h) are
removed too; a younger one may belong to a backup still running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dbops.backup import wal
from dbops.backup.manifest import MANIFEST, PREFIX, Ignored, KeySource, object_key, read_store
from dbops.backup.store import Store, Unfinished
from dbops.errors import ConfigError
from dbops.settings import BackupSettings


def rules(backup: BackupSettings) -> tuple[int | None, float | None]:
    """(keep_last, keep_days) of a target: ``backup.keep_last`` (default 7) and ``backup.keep_days`` (unset)."""
    return backup.keep_last, backup.keep_days


UNFINISHED_AFTER = timedelta(days=1)


@dataclass
class PrunePlan:
    backups: list[dict[str, Any]] = field(default_factory=list)  # to delete
    kept: list[dict[str, Any]] = field(default_factory=list)
    wal: list[str] = field(default_factory=list)  # archived WAL files to delete
    ignored: list[Ignored] = field(default_factory=list)  # manifests that do not verify: reported, never deleted
    unfinished: list[Unfinished] = field(default_factory=list)  # old .partial files / multipart uploads to remove

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


def plan(store: Store, key: KeySource, keep_last: int | None, keep_days: float | None,
         now: datetime | None = None, unfinished_after: timedelta = UNFINISHED_AFTER) -> PrunePlan:
    """What :func:`prune` deletes; ``key`` verifies the manifests (a function is asked only if there are any)."""
    listing = read_store(store, key)
    doomed = plan_prune(listing.backups, keep_last, keep_days, now)
    gone = {m["id"] for m in doomed}
    kept = [m for m in listing.backups if m["id"] not in gone]
    result = PrunePlan(doomed, kept, ignored=listing.ignored)
    starts = [m["start_wal_file"] for m in kept if m.get("kind") == "full" and m.get("start_wal_file")]
    if starts:
        result.wal = wal.prune_wal(store, min(starts, key=wal.segment_position), dry_run=True)
    cutoff = (now or datetime.now(UTC)) - unfinished_after
    result.unfinished = [u for prefix in (PREFIX, wal.WAL_PREFIX) for u in store.unfinished(prefix)
                         if u.started <= cutoff]
    return result


def prune(store: Store, key: KeySource, keep_last: int | None, keep_days: float | None, *, dry_run: bool = False,
          unfinished_after: timedelta = UNFINISHED_AFTER) -> PrunePlan:
    """Delete what :func:`plan` selects (unless ``dry_run``) and return the plan."""
    result = plan(store, key, keep_last, keep_days, unfinished_after=unfinished_after)
    if not dry_run:
        for manifest in result.backups:
            store.delete(object_key(manifest["id"], MANIFEST))
            for obj in manifest.get("objects", []):
                store.delete(object_key(manifest["id"], obj["name"]))
        for name in result.wal:
            store.delete(wal.wal_key(name))
        for item in result.unfinished:
            store.abort(item)
    return result

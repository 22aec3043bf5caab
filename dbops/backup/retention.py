"""Retention: keep the newest N backups and/or those younger than M days; delete the rest, manifest first.

Deleting the manifest first means an interrupted prune leaves an incomplete backup (never listed, never "latest"),
not a listed backup with missing objects.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dbops.backup.manifest import MANIFEST, PREFIX, list_backups, object_key
from dbops.backup.store import Store
from dbops.errors import ConfigError


def plan_prune(backups: list[dict[str, Any]], keep_last: int | None, keep_days: float | None,
               now: datetime | None = None) -> list[dict[str, Any]]:
    """The backups to delete: neither among the newest ``keep_last`` nor younger than ``keep_days``.

    The newest backup is always kept, and so is any backup a kept one names as its parent.
    """
    if keep_last is None and keep_days is None:
        raise ConfigError("no retention rule", "set DBOPS_BACKUP_KEEP_LAST and/or DBOPS_BACKUP_KEEP_DAYS")
    now = now or datetime.now(UTC)
    ordered = sorted(backups, key=lambda m: (m.get("finished_at", ""), m["id"]))
    keep: set[str] = set()
    if ordered:
        keep.add(ordered[-1]["id"])
    if keep_last:
        keep.update(m["id"] for m in ordered[-keep_last:])
    if keep_days is not None:
        horizon = now - timedelta(days=keep_days)
        keep.update(m["id"] for m in ordered if datetime.fromisoformat(m["finished_at"]) >= horizon)
    by_id = {m["id"]: m for m in ordered}
    for backup_id in list(keep):  # a kept incremental needs its whole chain
        parent = by_id.get(backup_id, {}).get("parent")
        while parent and parent in by_id:
            keep.add(parent)
            parent = by_id[parent].get("parent")
    return [m for m in ordered if m["id"] not in keep]


def prune(store: Store, keep_last: int | None, keep_days: float | None, *, dry_run: bool = False) -> list[str]:
    """Delete what :func:`plan_prune` selects (unless ``dry_run``); return the ids."""
    doomed = plan_prune(list_backups(store), keep_last, keep_days)
    if not dry_run:
        for manifest in doomed:
            store.delete(object_key(manifest["id"], MANIFEST))
            for obj in manifest.get("objects", []):
                store.delete(object_key(manifest["id"], obj["name"]))
    return [m["id"] for m in doomed]


def incomplete_backups(store: Store) -> list[str]:
    """Backup folders without a manifest: left by an interrupted backup or prune."""
    names = store.list(PREFIX)
    complete = {n.split("/")[1] for n in names if n.endswith("/" + MANIFEST)}
    return sorted({n.split("/")[1] for n in names} - complete)

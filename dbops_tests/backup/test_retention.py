"""Retention rules: full chains, the PITR window, the WAL the kept base backups need, and --dry-run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dbops.backup import wal
from dbops.backup.keys import MasterKey
from dbops.backup.manifest import list_backups, save_manifest
from dbops.backup.retention import plan_prune, prune, rules
from dbops.backup.store import LocalStore
from dbops.settings import SettingsError, load_settings
from dbops_tests.stores import wal_segment

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _backup(backup_id: str, kind: str, days_ago: float, parent: str | None = None,
            start_wal: str | None = None) -> dict[str, Any]:
    return {"id": backup_id, "kind": kind, "parent": parent, "start_wal_file": start_wal, "objects": [],
            "finished_at": (NOW - timedelta(days=days_ago)).isoformat()}


def test_keep_last_counts_full_chains_and_keeps_their_incrementals() -> None:
    backups = [
        _backup("f1", "full", 20), _backup("i1", "incremental", 19, "f1"),
        _backup("f2", "full", 13), _backup("i2", "incremental", 12, "f2"), _backup("i3", "incremental", 11, "i2"),
        _backup("f3", "full", 6), _backup("i4", "incremental", 5, "f3"),
        _backup("l1", "logical", 9), _backup("l2", "logical", 2),
    ]
    doomed = {m["id"] for m in plan_prune(backups, keep_last=2, keep_days=None, now=NOW)}
    assert doomed == {"f1", "i1"}  # f2's chain and f3's chain stay whole; both logical backups are within 2


def test_a_kept_incremental_keeps_its_whole_chain() -> None:
    backups = [_backup("f1", "full", 10), _backup("i1", "incremental", 9, "f1"),
               _backup("i2", "incremental", 1, "i1")]
    assert plan_prune(backups, keep_last=None, keep_days=3, now=NOW) == []


def test_keep_days_keeps_the_base_the_window_start_needs() -> None:
    backups = [_backup("f1", "full", 30), _backup("f2", "full", 16), _backup("f3", "full", 9),
               _backup("f4", "full", 2), _backup("l1", "logical", 30), _backup("l2", "logical", 1)]
    doomed = {m["id"] for m in plan_prune(backups, keep_last=None, keep_days=7, now=NOW)}
    # f3 is older than the 7-day window but a restore to its first second replays from it
    assert doomed == {"f1", "f2", "l1"}


def test_prune_deletes_wal_older_than_the_oldest_kept_base(tmp_path: Path, master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    segments = [f"0000000100000000000000{n:02X}" for n in range(1, 9)]
    for name in segments:
        path = tmp_path / name
        wal_segment(path, b"wal" * 100)
        wal.push_file(store, master_key, path)
    old = _backup("20261101T000000Z-full-aaaaaa", "full", 24, start_wal=segments[1])
    new = _backup("20261120T000000Z-full-bbbbbb", "full", 5, start_wal=segments[5])
    for manifest in (old, new):
        manifest["finished_at"] = (datetime.now(UTC) - (NOW - datetime.fromisoformat(manifest["finished_at"]))
                                   ).isoformat()
        save_manifest(store, master_key, manifest)

    preview = prune(store, master_key, keep_last=1, keep_days=None, dry_run=True)
    assert preview.ids == [old["id"]] and preview.wal == segments[:5]
    assert len(list_backups(store, master_key)) == 2 and wal.list_wal(store) == segments  # dry run deletes nothing

    done = prune(store, master_key, keep_last=1, keep_days=None)
    assert done.ids == [old["id"]]
    assert [m["id"] for m in list_backups(store, master_key)] == [new["id"]]
    assert wal.list_wal(store) == segments[5:]


def test_retention_rules_from_the_settings(tmp_path: Path) -> None:
    assert rules(load_settings({}, tmp_path).target().backup) == (7, None)
    custom = load_settings({"DBOPS_BACKUP_KEEP_LAST": "3", "DBOPS_BACKUP_KEEP_DAYS": "1.5"}, tmp_path)
    assert rules(custom.target().backup) == (3, 1.5)
    for name, raw in (("DBOPS_BACKUP_KEEP_DAYS", "-2"), ("DBOPS_BACKUP_KEEP_LAST", "many")):
        with pytest.raises(SettingsError, match=f"{name}: .*got '{raw}'"):
            load_settings({name: raw}, tmp_path)

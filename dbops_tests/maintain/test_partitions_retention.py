"""Retention retires old partitions only behind a verified backup newer than them (real PostgreSQL, a real logical
backup in a local store)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

from dbops.backup.keys import MasterKey
from dbops.backup.logical import logical_backup
from dbops.backup.store import LocalStore
from dbops.maintain.partitions import covering_backup, maintain
from dbops.pg.connect import connection, database_name
from dbops_tests.maintain.test_partitions import DEFAULTS, REF_SCHEMAS, partitions_of, server_today


def due_partitions(url: str, days: int) -> set[str]:
    """The monthly partitions of app.orders and app.audit_log whose upper bound is at least ``days`` old (UTC)."""
    cutoff = server_today(url) - timedelta(days=days)
    due = set()
    for table in ("app.orders", "app.audit_log"):
        for name, (_, bound) in partitions_of(url, table).items():
            if bound != "DEFAULT" and date.fromisoformat(bound.split("TO ('")[1][:10]) <= cutoff:
                due.add(f"app.{name}")
    return due


def asker(url: str, store: LocalStore, key: MasterKey) -> Any:
    return lambda newer_than: covering_backup(store, key, newer_than, database_name(url))


def test_retention_refused_without_a_backup_then_detaches_behind_a_verified_one(
        migrated_db: str, local_store: LocalStore, master_key: MasterKey) -> None:
    url = migrated_db
    settings = replace(DEFAULTS, retention_days=1)
    due = due_partitions(url, 1)
    assert due  # V5 made three months back
    with connection(url) as conn:
        refused = maintain(conn, REF_SCHEMAS, settings, asker(url, local_store, master_key))
    assert refused.retention_refused and refused.detached == []
    assert "no verified backup" in refused.retention and "kept" in refused.retention
    assert due_partitions(url, 1) == due

    manifest = logical_backup(url, local_store, master_key)
    with connection(url) as conn:
        done = maintain(conn, REF_SCHEMAS, settings, asker(url, local_store, master_key))
    assert not done.retention_refused and done.backup_id == manifest["id"]
    assert set(done.detached) == due
    assert due_partitions(url, 1) == set()
    with connection(url) as conn:  # detached, not dropped (drop_detached off): kept for the operator
        kept = {f"app.{r[0]}" for r in conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'app' "
            "AND relkind = 'r' AND NOT relispartition").fetchall()}
    assert due <= kept


def test_retention_drops_when_configured(migrated_db: str, local_store: LocalStore, master_key: MasterKey) -> None:
    url = migrated_db
    due = due_partitions(url, 1)
    logical_backup(url, local_store, master_key)
    with connection(url) as conn:
        report = maintain(conn, REF_SCHEMAS, replace(DEFAULTS, retention_days=1, drop_detached=True),
                          asker(url, local_store, master_key))
    assert set(report.detached) == due and {p for t in report.tables for p in t.dropped} == due
    with connection(url) as conn:
        assert conn.execute("SELECT count(*) FROM unnest(%s::text[]) n WHERE to_regclass(n) IS NOT NULL",
                            (sorted(due),)).fetchone()[0] == 0


def test_a_backup_whose_objects_do_not_verify_does_not_count(
        migrated_db: str, local_store: LocalStore, master_key: MasterKey) -> None:
    url = migrated_db
    manifest = logical_backup(url, local_store, master_key)
    obj = local_store.root / "backups" / manifest["id"] / manifest["objects"][0]["name"]
    obj.write_bytes(obj.read_bytes()[:-1] + b"\0")  # one damaged byte, the manifest still verifies
    settings = replace(DEFAULTS, retention_days=1, drop_detached=True)
    with connection(url) as conn:
        report = maintain(conn, REF_SCHEMAS, settings, asker(url, local_store, master_key))
    assert report.retention_refused and report.detached == []
    assert manifest["id"] in report.retention
    # an older backup than the partitions' end does not count either
    found, why = covering_backup(local_store, master_key, datetime.now().astimezone() + timedelta(days=1),
                                 database_name(url))
    assert found is None and "started after" in why


def test_a_backup_no_drill_passed_on_does_not_count_when_drills_are_known(
        migrated_db: str, local_store: LocalStore, master_key: MasterKey) -> None:
    manifest = logical_backup(migrated_db, local_store, master_key)
    since = datetime.fromisoformat(manifest["started_at"]) - timedelta(days=1)
    db = database_name(migrated_db)
    assert covering_backup(local_store, master_key, since, db, drilled=set())[0] is None
    assert covering_backup(local_store, master_key, since, db, drilled={"20200101T000000Z-logical-aaaaaa"})[0] is None
    found, why = covering_backup(local_store, master_key, since, db, drilled={manifest["id"]})
    assert found is not None and found["id"] == manifest["id"] and "restore drill passed" in why
    assert covering_backup(local_store, master_key, since, "another_db")[0] is None  # a dump of another database

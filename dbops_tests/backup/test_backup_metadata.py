"""Issue 18 items 10 and 12 for the backups: the metadata of logical_backup, its backup_fresh check and
backup_retention (numbers rounded, nothing not measured shown as -1, objects / table figures / the kept-and-deleted
list as tables with schemas, the backup's folder and manifest as paths), and the progress lines a real backup
reports as it runs (base_backup and wal_archive: dbops_tests/backup/test_physical.py)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import psutil
import pytest

from dbops.backup import progress as backup_progress
from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.manifest import list_backups
from dbops.backup.store import LocalStore
from dbops.components import backup
from dbops.components.backup.assets import _fresh
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import BackupResource, DatabaseResource
from dbops.pg.connect import connection
from dbops_tests.backup.metadata_shape import assert_clean, assert_in_order, columns, log_lines, rows

TARGET = "dbops"
STEP = {a.key: a for a in backup.build(TARGET).assets or [] if isinstance(a, dg.AssetsDefinition)}
LOGICAL, RETENTION = STEP[asset_key(TARGET, "logical_backup")], STEP[asset_key(TARGET, "backup_retention")]
LOGICAL_OP = op_name(TARGET, "logical_backup")


def _resources(url: str, store: Path) -> dict[str, object]:
    return {"database": DatabaseResource(url=url), "backups": BackupResource(store="local", directory=str(store))}


def test_logical_backup_metadata_and_its_progress_lines(seeded_small: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    monkeypatch.setattr(backup_progress, "INTERVAL", 0.0)  # every chunk stored is a line: the stream is visible
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([LOGICAL], instance=instance, resources=_resources(seeded_small, tmp_path / "store"))
    assert result.success
    meta = result.asset_materializations_for_node(LOGICAL_OP)[0].metadata
    assert_clean(meta)

    with connection(seeded_small) as conn:  # the rows really in the database, counted apart from the backup
        tables = conn.execute("SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN "
                              "('pg_catalog', 'information_schema')").fetchall()
        counted = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for (t,) in tables}  # noqa: S608
    assert meta["dagster/row_count"].value == meta["rows"].value == sum(counted.values()) > 20_000
    assert meta["tables"].value == len(counted)
    assert columns(meta["table_figures"]) == {"table": "string", "rows": "int", "row_hash": "string"}
    assert {r["table"]: r["rows"] for r in rows(meta["table_figures"])} == counted

    assert isinstance(meta["manifest"], dg.PathMetadataValue) and Path(meta["manifest"].value).is_file()
    assert isinstance(meta["backup_directory"], dg.PathMetadataValue)
    assert Path(meta["backup_directory"].value) == Path(meta["manifest"].value).parent
    assert columns(meta["objects"]) == {"name": "string", "raw_bytes": "int", "stored_bytes": "int",
                                        "sha256": "string"}
    [obj] = rows(meta["objects"])
    assert (Path(meta["backup_directory"].value) / str(obj["name"])).stat().st_size == obj["stored_bytes"]
    assert obj["stored_bytes"] == meta["stored_bytes"].value < meta["raw_bytes"].value == obj["raw_bytes"]
    assert isinstance(meta["compression_ratio"], dg.FloatMetadataValue)
    assert meta["compression_ratio"].value == round(meta["raw_bytes"].value / meta["stored_bytes"].value, 3)
    assert "staging" not in meta  # one stream: nothing staged

    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["newest_backup_id"].value == meta["backup_id"].value
    assert "reason" not in check.metadata and 0 <= check.metadata["age_hours"].value < 0.1
    assert_clean(check.metadata)

    lines = log_lines(instance, result.run_id, LOGICAL_OP)
    started, *_, finished, figures, stored = assert_in_order(lines, [
        "pg_dump started: database", "MiB stored (", "pg_dump finished:", "table figures read in the dump's snapshot: "
        f"{len(counted)} table(s), {sum(counted.values())} row(s)", f"backup {meta['backup_id'].value} complete"])
    streamed = [i for i, line in enumerate(lines) if "MiB stored (" in line]
    assert streamed and all(started < i < finished for i in streamed)

    parallel = dg.materialize([LOGICAL], instance=instance, resources=_resources(seeded_small, tmp_path / "store"),
                              run_config={"ops": {LOGICAL_OP: {"config": {"jobs": 2}}}})
    pmeta = parallel.asset_materializations_for_node(LOGICAL_OP)[0].metadata
    assert_clean(pmeta)
    assert pmeta["dump_format"].value == "directory" and pmeta["jobs"].value == 2
    assert isinstance(pmeta["staging"], dg.PathMetadataValue)
    objects = rows(pmeta["objects"])
    assert len(objects) == pmeta["object_count"].value > 2  # toc.dat and one file per table with data
    assert [o["stored_bytes"] for o in objects] == sorted((o["stored_bytes"] for o in objects), reverse=True)
    plines = log_lines(instance, parallel.run_id, LOGICAL_OP)
    assert_in_order(plines, ["directory format, 2 jobs, staged in", "object(s) done", "pg_dump finished:",
                             "complete in"])


def test_progress_arrives_while_the_backup_runs(seeded_small: str, local_store: LocalStore,
                                                master_key: MasterKey) -> None:
    """Each line is reported when its phase happens, not collected at the end: at "pg_dump started" pg_dump is
    running and no backup is stored; at "manifest signed and stored" the backup is listed."""
    seen: list[tuple[str, bool, int]] = []

    def progress(line: str) -> None:
        dumping = any(c.name() == "pg_dump" for c in psutil.Process().children(recursive=True))
        seen.append((line, dumping, len(list_backups(local_store, master_key))))

    manifest = logical_backup(seeded_small, local_store, master_key, progress=progress)
    seen = [s for s in seen if "MiB stored (" not in s[0]]  # every 5 s at most: on a slow machine, maybe one
    assert [s[0].split(":")[0] for s in seen] == ["pg_dump started", "pg_dump finished",
                                                   "table figures read in the dump's snapshot",
                                                   "manifest signed and stored"]
    assert seen[0][1:] == (True, 0)
    assert seen[-1][2] == 1 and manifest["id"] in seen[-1][0]


def test_backup_fresh_without_any_backup_says_why_and_shows_no_age(tmp_path: Path, master_key: MasterKey) -> None:
    check = _fresh(dg.build_asset_context(), LocalStore(tmp_path / "empty"), master_key, ("logical",), 26.0,
                   "backup_fresh", asset_key(TARGET, "logical_backup"))
    assert not check.passed
    assert "age_hours" not in check.metadata and "newest_backup_id" not in check.metadata
    assert "no verified logical backup in local directory" in check.metadata["reason"].value
    assert check.metadata["max_age_hours"].value == 26.0


def test_backup_retention_lists_kept_and_deleted_backups(seeded_small: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    monkeypatch.setenv("DBOPS_BACKUP_KEEP_LAST", "1")
    monkeypatch.delenv("DBOPS_BACKUP_KEEP_DAYS", raising=False)
    instance = dg.DagsterInstance.ephemeral()
    resources = _resources(seeded_small, tmp_path / "store")
    ids = [dg.materialize([LOGICAL], instance=instance, resources=resources).asset_materializations_for_node(
        LOGICAL_OP)[0].metadata["backup_id"].value for _ in range(3)]
    result = dg.materialize([RETENTION], instance=instance, resources=resources)
    meta = result.asset_materializations_for_node(op_name(TARGET, "backup_retention"))[0].metadata
    assert_clean(meta)
    assert meta["deleted_backups"].value == 2 and meta["kept_backups"].value == 1
    assert meta["keep_last"].value == 1 and "keep_days" not in meta  # a rule not set is left out, not 0
    assert "oldest_deleted_wal" not in meta and meta["deleted_wal_files"].value == 0
    assert columns(meta["backups"]) == {"backup_id": "string", "kind": "string", "finished_at": "string",
                                        "parent": "string", "action": "string", "stored_bytes": "int",
                                        "reason": "string"}
    assert [(r["backup_id"], r["action"], r["kind"]) for r in rows(meta["backups"])] == [
        (ids[0], "deleted", "logical"), (ids[1], "deleted", "logical"), (ids[2], "kept", "logical")]
    key = MasterKey.from_env({"DBOPS_BACKUP_KEY": os.environ["DBOPS_BACKUP_KEY"]})
    assert [m["id"] for m in list_backups(LocalStore(tmp_path / "store"), key)] == [ids[2]]


def test_byte_meter_reports_at_most_once_per_interval() -> None:
    now = [0.0]
    lines: list[str] = []
    meter = backup_progress.ByteMeter(lines.append, "pg_dump", interval=5.0, clock=lambda: now[0])
    for at, stored in [(1.0, 1 << 20), (4.9, 2 << 20), (5.0, 3 << 20), (6.0, 4 << 20), (10.5, 21 << 19)]:
        now[0] = at
        meter(stored)
    assert lines == ["pg_dump: 3.0 MiB stored (0.6 MiB/s)", "pg_dump: 10.5 MiB stored (1.0 MiB/s)"]
    meter.offset(21 << 19)  # a directory dump: the next object's bytes count on from there
    now[0] = 16.0
    meter(1 << 20)
    assert lines[-1] == "pg_dump: 11.5 MiB stored (0.7 MiB/s, 1 object(s) done)"
    assert backup_progress.ByteMeter(None, "pg_dump").for_object() is None  # nobody listens: no per-chunk calls

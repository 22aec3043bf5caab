"""The partition_maintenance asset: loads in the target's definitions with its schedule, materializes against real
PostgreSQL with its checks, and warns "nothing checked" on a database without a range-partitioned table."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.keys import generate_key
from dbops.components import backup
from dbops.components.maintain.partitions import build_partition_maintenance
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import BackupResource, DatabaseResource
from dbops.components.restore.assets import build_restore_drill
from dbops.components.target import shared_resources, target_defs
from dbops.pg.connect import connection
from dbops.settings import load_settings
from dbops_tests.conftest import PROJECT_DIR
from dbops_tests.maintain.test_partitions import add_months, insert_future_orders, this_month
from dbops_tests.maintain.test_partitions_retention import due_partitions

TARGET = "dbops"
asset = build_partition_maintenance(TARGET)
restore_drill = build_restore_drill(TARGET)
[logical_backup] = [a for a in backup.build(TARGET).assets or []
                    if isinstance(a, dg.AssetsDefinition) and a.key == asset_key(TARGET, "logical_backup")]


def test_asset_and_schedule_load(tmp_path: Path) -> None:
    target = load_settings({"DBOPS_HOME": str(tmp_path / "home")}, cwd=tmp_path).target(TARGET)
    defs = dg.Definitions.merge(target_defs(target), dg.Definitions(resources=shared_resources()))
    graph = defs.resolve_asset_graph()
    key = asset_key(TARGET, "partition_maintenance")
    node = graph.get(key)
    assert node.group_name == "maintain" and node.pools == {TARGET}
    assert {dg.AssetCheckKey(key, n) for n in ("partitions_ahead", "default_partition_empty", "retention_guarded")
            } <= set(graph.asset_check_keys)
    schedule = defs.resolve_schedule_def(f"{TARGET}_partition_maintenance_daily")
    assert schedule.cron_schedule == "10 0 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def run(url: str) -> tuple[dict[str, object], dict[str, tuple[bool, dg.AssetCheckSeverity, dict]]]:
    result = dg.materialize([asset], resources={"database": DatabaseResource(url=url), "backups": BackupResource()},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    metadata = result.asset_materializations_for_node(op_name(TARGET, "partition_maintenance"))[0].metadata
    checks = {e.check_name: (e.passed, e.severity, e.metadata) for e in result.get_asset_check_evaluations()}
    return {k: v.value for k, v in metadata.items()}, checks


def test_materialize_reference_then_default_rows_fail_the_check(migrated_db: str) -> None:
    metadata, checks = run(migrated_db)
    assert metadata["tables_maintained"] == 2 and metadata["partitions_created"] == 0  # V5 made 4 months ahead
    assert metadata["ahead"]["app.orders"]["last_bound"] == str(add_months(this_month(), 5))
    assert metadata["default_rows"] == {"app.orders": 0, "app.audit_log": 0}
    assert checks["partitions_ahead"][:2] == (True, dg.AssetCheckSeverity.ERROR)
    assert checks["default_partition_empty"][:2] == (True, dg.AssetCheckSeverity.ERROR)
    assert checks["retention_guarded"][0] is True
    assert "off" in checks["retention_guarded"][2]["retention"].value
    far = add_months(this_month(), 8)
    insert_future_orders(migrated_db, datetime(far.year, far.month, 3, tzinfo=UTC), 4)
    metadata, checks = run(migrated_db)
    assert metadata["default_rows"]["app.orders"] == 4
    passed, severity, meta = checks["default_partition_empty"]
    assert (passed, severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert "app.orders_default of app.orders: 4 rows" in meta["rows"].value and f"{far:%Y-%m}-03" in meta["rows"].value


def test_nothing_partitioned_is_a_warning(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        conn.execute("CREATE TABLE plain (id int PRIMARY KEY)")
    metadata, checks = run(fresh_db)
    assert metadata["tables_maintained"] == 0
    for name in ("partitions_ahead", "default_partition_empty", "retention_guarded"):
        passed, severity, meta = checks[name]
        assert (passed, severity) == (False, dg.AssetCheckSeverity.WARN)
        assert meta["reason"].value == "nothing checked: no range-partitioned table"


def test_cli_status_maintain_move_default(migrated_db: str, tmp_path: Path) -> None:
    env = {**os.environ, "DBOPS_DATABASE_URL": migrated_db, "DBOPS_HOME": str(tmp_path / "home")}

    def dbops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dbops.cli", "partitions", *args], env=env, cwd=PROJECT_DIR,
                              capture_output=True, text=True, timeout=120, check=False)

    ok = dbops("status")
    assert ok.returncode == 0, ok.stderr
    assert "app.orders: monthly, 4/3 ahead" in ok.stdout and migrated_db.split("@")[0].split(":")[-1] not in ok.stdout
    far = add_months(this_month(), 8)
    insert_future_orders(migrated_db, datetime(far.year, far.month, 1, tzinfo=UTC), 3)
    full = dbops("maintain")
    assert full.returncode == 1 and "holds 3 rows" in full.stdout and "move-default --table app.orders" in full.stdout
    moved = dbops("move-default", "--table", "app.orders")
    assert moved.returncode == 0, moved.stderr
    assert f"moved 3 rows out of app.orders_default into app.orders_{far:%Y_%m}" in moved.stdout
    env["DBOPS_PARTITIONS_RETENTION_DAYS"] = "1"  # the CLI has no drill record: it retires nothing, and says why
    again = dbops("maintain")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "kept: retention needs the restore drills recorded in the Dagster instance" in again.stdout
    assert "0 partition(s) created, 0 detached" in again.stdout
    bad = dbops("move-default", "--table", "app.nope")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --table app.nope: no range-partitioned table")


def test_retention_waits_for_a_backup_and_its_drill_then_detaches(migrated_db: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    monkeypatch.setenv("DBOPS_PARTITIONS_RETENTION_DAYS", "1")
    resources = {"database": DatabaseResource(url=migrated_db),
                 "backups": BackupResource(store="local", directory=str(tmp_path / "store"))}
    instance = dg.DagsterInstance.ephemeral()
    due = due_partitions(migrated_db, 1)
    assert due

    def maintenance() -> tuple[dict[str, object], dict[str, tuple[bool, dg.AssetCheckSeverity, dict]]]:
        result = dg.materialize([asset], resources=resources, instance=instance)
        metadata = result.asset_materializations_for_node(op_name(TARGET, "partition_maintenance"))[0].metadata
        checks = {e.check_name: (e.passed, e.severity, e.metadata) for e in result.get_asset_check_evaluations()}
        return {k: v.value for k, v in metadata.items()}, checks

    metadata, checks = maintenance()  # no backup at all
    assert metadata["partitions_detached"] == 0 and "no verified backup" in metadata["retention"]
    assert checks["retention_guarded"][:2] == (False, dg.AssetCheckSeverity.WARN)
    assert dg.materialize([logical_backup], resources=resources, instance=instance).success
    metadata, checks = maintenance()  # a verified backup, but no drill passed on it yet
    assert metadata["partitions_detached"] == 0 and "no restore drill passed" in metadata["retention"]
    assert checks["retention_guarded"][0] is False
    assert dg.materialize([restore_drill], resources=resources, instance=instance).success
    metadata, checks = maintenance()
    assert checks["retention_guarded"][0] is True and "restore drill passed" in metadata["retention"]
    assert metadata["partitions_detached"] == len(due) and due_partitions(migrated_db, 1) == set()

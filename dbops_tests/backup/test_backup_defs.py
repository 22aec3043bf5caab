"""The Dagster layer: logical_backup then restore_drill, with their checks, against a real database."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.keys import generate_key
from dbops.defs.backup import defs
from dbops.defs.backup.assets import logical_backup, restore_drill
from dbops.defs.backup.resources import BackupResource
from dbops.defs.resources import DatabaseResource


def test_materialize_backup_and_drill_with_checks(seeded_small: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    result = dg.materialize(
        [logical_backup, restore_drill],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"database": DatabaseResource(url=seeded_small),
                   "backups": BackupResource(store="local", directory=str(tmp_path / "store"))},
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"backup_fresh": True, "drill_data_matches": True, "drill_rto_under_target": True}
    drill_meta = result.asset_materializations_for_node("restore_drill")[0].metadata
    assert drill_meta["rto_seconds"].value > 0 and drill_meta["rows_checked"].value > 20_000
    backup_meta = result.asset_materializations_for_node("logical_backup")[0].metadata
    assert backup_meta["stored_bytes"].value < backup_meta["raw_bytes"].value

    parallel = dg.materialize([logical_backup], instance=dg.DagsterInstance.ephemeral(),
                              resources={"database": DatabaseResource(url=seeded_small),
                                         "backups": BackupResource(store="local", directory=str(tmp_path / "store"))},
                              run_config={"ops": {"logical_backup": {"config": {"jobs": 2}}}})
    assert parallel.success
    assert parallel.asset_materializations_for_node("logical_backup")[0].metadata["dump_format"].value == "directory"


def test_defs_load() -> None:
    full = dg.Definitions.merge(defs, dg.Definitions(resources={
        "database": DatabaseResource(url="postgresql://u@127.0.0.1:1/x"), "backups": BackupResource()}))
    assert {k.to_user_string() for k in full.resolve_asset_graph().get_all_asset_keys()} >= {
        "logical_backup", "restore_drill"}

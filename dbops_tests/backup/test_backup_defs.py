"""The Dagster layer: logical_backup with its check, one stream and parallel, against a real database."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.keys import generate_key
from dbops.components import backup
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import BackupResource, DatabaseResource

TARGET = "dbops"


def backup_asset(name: str) -> dg.AssetsDefinition:
    """The backup step's asset ``<target>/<name>``, as ``backup.build`` makes it."""
    [asset] = [a for a in backup.build(TARGET).assets or [] if isinstance(a, dg.AssetsDefinition)
               and a.key == asset_key(TARGET, name)]
    return asset


def test_materialize_logical_backup_with_its_check(seeded_small: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    logical_backup = backup_asset("logical_backup")
    node = op_name(TARGET, "logical_backup")
    resources = {"database": DatabaseResource(url=seeded_small),
                 "backups": BackupResource(store="local", directory=str(tmp_path / "store"))}
    result = dg.materialize([logical_backup], instance=dg.DagsterInstance.ephemeral(), resources=resources)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"backup_fresh": True}
    assert {e.asset_key for e in result.get_asset_check_evaluations()} == {asset_key(TARGET, "logical_backup")}
    backup_meta = result.asset_materializations_for_node(node)[0].metadata
    assert backup_meta["stored_bytes"].value < backup_meta["raw_bytes"].value

    parallel = dg.materialize([logical_backup], instance=dg.DagsterInstance.ephemeral(), resources=resources,
                              run_config={"ops": {node: {"config": {"jobs": 2}}}})
    assert parallel.success
    assert parallel.asset_materializations_for_node(node)[0].metadata["dump_format"].value == "directory"


def test_defs_load() -> None:
    full = dg.Definitions.merge(backup.build(TARGET), dg.Definitions(resources={
        "database": DatabaseResource(url="postgresql://u@127.0.0.1:1/x"), "backups": BackupResource()}))
    graph = full.resolve_asset_graph()
    own = {k for k in graph.get_all_asset_keys() if graph.get(k).is_executable}  # not schema_migrations, upstream
    assert {k.to_user_string() for k in own} == {"dbops/logical_backup", "dbops/base_backup", "dbops/wal_archive",
                                                 "dbops/backup_retention"}
    assert {graph.get(k).group_name for k in own} == {"backup"}
    assert asset_key(TARGET, "schema_migrations") in graph.get(asset_key(TARGET, "logical_backup")).parent_keys
    assert full.resolve_sensor_def("dbops_wal_archive_sensor") is not None

"""The Dagster layer: logical_backup with its check, one stream and parallel, against a real database."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.keys import generate_key
from dbops.defs.backup import defs
from dbops.defs.backup.assets import logical_backup
from dbops.defs.resources import BackupResource, DatabaseResource


def test_materialize_logical_backup_with_its_check(seeded_small: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    resources = {"database": DatabaseResource(url=seeded_small),
                 "backups": BackupResource(store="local", directory=str(tmp_path / "store"))}
    result = dg.materialize([logical_backup], instance=dg.DagsterInstance.ephemeral(), resources=resources)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"backup_fresh": True}
    backup_meta = result.asset_materializations_for_node("logical_backup")[0].metadata
    assert backup_meta["stored_bytes"].value < backup_meta["raw_bytes"].value

    parallel = dg.materialize([logical_backup], instance=dg.DagsterInstance.ephemeral(), resources=resources,
                              run_config={"ops": {"logical_backup": {"config": {"jobs": 2}}}})
    assert parallel.success
    assert parallel.asset_materializations_for_node("logical_backup")[0].metadata["dump_format"].value == "directory"


def test_defs_load() -> None:
    full = dg.Definitions.merge(defs, dg.Definitions(resources={
        "database": DatabaseResource(url="postgresql://u@127.0.0.1:1/x"), "backups": BackupResource()}))
    graph = full.resolve_asset_graph()
    own = {k for k in graph.get_all_asset_keys() if graph.get(k).is_executable}  # not schema_migrations, upstream
    assert {k.to_user_string() for k in own} == {"logical_backup", "base_backup", "wal_archive", "backup_retention"}
    assert {graph.get(k).group_name for k in own} == {"backup"}

"""The backup group in Dagster: a backup and its drill materialize with their checks against a real database."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dbops.backup.keys import generate_key
from dbops.defs.backup import logical_backup, restore_drill
from dbops.defs.backup.resources import BackupResource
from dbops.defs.resources import DatabaseResource


def test_backup_then_drill_with_checks(seeded_small: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("DBOPS_BACKUP_KEY", key)
    resources = {"database": DatabaseResource(url=seeded_small),
                 "backups": BackupResource(store="local", directory=str(tmp_path / "store"))}
    result = dg.materialize([logical_backup, restore_drill], resources=resources)
    assert result.success
    drill_meta = result.asset_materializations_for_node("restore_drill")[0].metadata
    assert 0 < drill_meta["rto_seconds"].value < 1800 and drill_meta["tables_checked"].value > 10
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"backup_fresh", "drill_data_matches", "drill_rto_under_target"}
    assert all(e.passed for e in checks.values())
    assert key not in str(result.all_events)
    # a tight RTO fails its check (the figure is real, the target is not met)
    tight = {**resources, "backups": BackupResource(store="local", directory=str(tmp_path / "store"),
                                                    rto_target_seconds=0.001)}
    again = dg.materialize([restore_drill], resources=tight)
    evaluation = next(e for e in again.get_asset_check_evaluations() if e.check_name == "drill_rto_under_target")
    assert not evaluation.passed

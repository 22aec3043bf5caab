"""The drill's RTO is judged against the targets file's ``limits.rto_seconds``, passed in, not a constant."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.health.targets import TargetsError, default_limits
from dbops.restore.cli import drill_main
from dbops.restore.drill import DrillResult, PhysicalDrillResult
from dbops.settings import load_settings


def test_within_rto_honours_the_limit_it_is_given() -> None:
    result = DrillResult("b1", phases={"download_verify": 100.0, "restore": 500.0, "verify": 20.0})
    assert result.rto_seconds == 620.0
    assert result.within_rto(default_limits().rto_seconds)  # 1800 s
    assert not result.within_rto(600.0)
    assert not result.within_rto(620.0)  # "under" the target, as drill_rto_under_target has it
    assert result.within_rto(620.5)
    physical = PhysicalDrillResult("b2", phases={"restore": 1700.0, "replay": 200.0})
    assert not physical.within_rto(default_limits().rto_seconds) and physical.within_rto(3600.0)


def test_drill_refuses_a_malformed_targets_file_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "targets.yml"
    bad.write_text("limits:\n  rto_seconds: -1\n")
    settings = load_settings({"DBOPS_HOME": str(tmp_path / "home"), "DBOPS_TARGETS": str(bad)})
    with pytest.raises(TargetsError, match=r"limits\.rto_seconds: -1 is negative"):
        drill_main([], settings)
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())  # no embedded server started

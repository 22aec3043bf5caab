"""`dbops backup run|list|verify|prune` and `dbops drill`, as dbops.cli runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.backup.keys import generate_key
from dbops.settings import load_settings
from dbops_tests.conftest import dbops_step


def test_cli_run_list_verify_drill_prune(seeded_small: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    env = {"DBOPS_DATABASE_URL": seeded_small, "DBOPS_BACKUP_DIR": str(tmp_path / "store"),
           "DBOPS_BACKUP_KEY": generate_key(), "DBOPS_BACKUP_KEEP_LAST": "1", "DBOPS_HOME": str(tmp_path)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    assert dbops_step(["backup", "run"], settings) == 0
    assert dbops_step(["backup", "run"], settings) == 0
    assert dbops_step(["backup", "list"], settings) == 0
    assert dbops_step(["backup", "verify"], settings) == 0
    assert dbops_step(["drill"], settings) == 0
    assert dbops_step(["backup", "prune", "--dry-run"], settings) == 0
    out = capsys.readouterr().out
    assert out.count("object(s) intact") == 2 and "would delete" in out and "RTO" in out
    assert dbops_step(["backup", "prune"], settings) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("deleted ") and lines[1] == "kept 1 backup(s)"
    dbops_step(["backup", "list"], settings)
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    assert "password" not in out.lower() or "***" in out

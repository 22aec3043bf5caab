"""`dbops backup run|list|verify|prune` and `dbops drill`, as dbops.cli runs them."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

import pytest

from dbops.backup.keys import generate_key
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops.settings import load_settings
from dbops_tests.conftest import PROJECT_DIR, dbops_env, dbops_step, run_dbops


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


def test_backup_run_and_drill_print_each_phase_as_it_happens(seeded_small: str, pg_server: EmbeddedServer,
                                                             tmp_path: Path) -> None:
    """`dbops backup run` prints "pg_dump started" while pg_dump still waits for a lock another session holds (so
    the line is not held back until the end), then the rest in order; `dbops drill` prints its phases in order."""
    env = dbops_env(pg_server, seeded_small, tmp_path, DBOPS_BACKUP_DIR=str(tmp_path / "store"),
                    DBOPS_BACKUP_KEY=generate_key())
    with connection(seeded_small, autocommit=False) as blocker:
        blocker.execute("LOCK TABLE app.tenants IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
        proc = subprocess.Popen([sys.executable, "-m", "dbops.cli", "backup", "run"], env=env, cwd=PROJECT_DIR,  # noqa: S603
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            assert ready, "nothing printed while pg_dump waits"
            first = proc.stdout.readline()
            assert first.startswith("  pg_dump started: database "), first
            assert proc.poll() is None  # still running, blocked by the lock
            assert not list((tmp_path / "store").rglob("manifest.json"))  # no backup is complete yet
        finally:
            blocker.rollback()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = [line for line in [first.rstrip("\n"), *out.splitlines()] if "MiB stored (" not in line]  # at most
    # every 5 s while the dump streams: present or not depending on the machine's speed
    assert [line.split(":")[0] for line in lines] == [
        "  pg_dump started", "  pg_dump finished", "  table figures read in the dump's snapshot",
        "  manifest signed and stored", lines[-1].split(":")[0]]
    assert lines[-1].startswith("backup ") and "password" not in out.lower()

    drilled = run_dbops(["drill"], env)
    assert drilled.returncode == 0, drilled.stderr
    printed = drilled.stdout.splitlines()
    order = ["  logical drill of", "  objects verified in", "  restore started into the scratch database",
             "  pg_restore started", "  restored in", "  verify started", "  verified and compared in", "  RTO ",
             "drill of "]
    assert [next(i for i, line in enumerate(printed) if line.startswith(o)) for o in order] == list(range(len(order)))

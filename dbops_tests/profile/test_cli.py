"""`dbops profile` and `dbops advise` in-process against the planted database, plus the plan anti-patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.config import Settings
from dbops.pg.connect import connection
from dbops.profile.cli import advise_main, profile_main
from dbops.profile.plans import explain
from dbops_tests.profile.conftest import run_workload


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings.from_env({"DBOPS_DATABASE_URL": url, "DBOPS_HOME": str(tmp_path / "home"),
                              "DBOPS_MIGRATIONS": str(tmp_path / "migrations")})


def test_profile_and_advise_print_tables(planted_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(planted_db, tmp_path)
    run_workload(planted_db, range(1, 21))
    assert profile_main([], settings) == 0
    out = capsys.readouterr().out
    assert "top statements by total time" in out and "shop.visits" in out
    assert "seq scan of visits (200,000 rows) under a selective filter" in out
    assert "cache hit ratio" in out and "password" not in out

    monkeypatch.setenv("DBOPS_REVIEW_DIR", str(tmp_path / "review"))
    assert advise_main([], settings) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    first = next(line for line in lines if line.startswith("1 "))
    assert "create index on shop.visits (customer_id)" in first and "verified" in first
    assert "drop duplicate index shop.visits_page_again_idx" in out
    assert (tmp_path / "review" / "V1__add_index_visits_customer_id_idx.sql").is_file()


def test_explain_analyze_only_read_only_and_rolled_back(planted_db: str) -> None:
    with connection(planted_db) as conn:
        report = explain(conn, "SELECT count(*) FROM shop.visits WHERE customer_id = 7", read_only=True)
        assert report.mode == "analyze" and report.error is None
        assert any("seq scan of visits" in f for f in report.flags), report.flags
        generic = explain(conn, "DELETE FROM shop.visits WHERE customer_id = $1", read_only=False)
        assert generic.mode == "generic" and generic.error is None
        written = explain(conn, "UPDATE shop.visits SET page = 'x' WHERE id = 1", read_only=False)
        assert written.mode == "generic"
        assert conn.execute("SELECT page FROM shop.visits WHERE id = 1").fetchone()[0] != "x"

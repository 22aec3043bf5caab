"""`dbops profile` and `dbops advise` in-process against the planted database, plus the plan anti-patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.pg.connect import connection, server_version_num
from dbops.profile.cli import advise_main, profile_main
from dbops.profile.plans import explain
from dbops.settings import Settings, load_settings
from dbops_tests.profile.conftest import run_workload


def settings_for(url: str, tmp_path: Path) -> Settings:
    return load_settings({"DBOPS_DATABASE_URL": url, "DBOPS_HOME": str(tmp_path / "home"),
                          "DBOPS_MIGRATIONS": str(tmp_path / "migrations"),
                          "DBOPS_REVIEW_DIR": str(tmp_path / "review")})


def test_profile_and_advise_print_tables(planted_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(planted_db, tmp_path)
    run_workload(planted_db, range(1, 21))
    assert profile_main([], settings) == 0
    out = capsys.readouterr().out
    assert "top statements by total time" in out and "shop.visits" in out
    assert "seq scan of visits (200,000 rows) under a selective filter" in out
    assert "cache hit ratio" in out and "password" not in out

    assert advise_main([], settings) == 0
    printed = capsys.readouterr()
    out = printed.out
    # the phases on stderr as they happen: the copy, each candidate with what it measured
    assert "verifying candidate 1/1 on the copy: index on shop.visits (customer_id)" in printed.err
    assert "candidate 1/1: " in printed.err and "verified" in printed.err and "scratch copy made" in printed.err
    lines = out.splitlines()
    first = next(line for line in lines if line.startswith("1 "))
    assert "create index on shop.visits (customer_id)" in first and "verified" in first
    assert "drop duplicate index shop.visits_page_again_idx" in out
    assert (tmp_path / "review" / "V1__add_index_visits_customer_id_idx.sql").is_file()


def test_plans_on_the_managed_database_execute_nothing(planted_db: str) -> None:
    with connection(planted_db) as conn:
        report = explain(conn, "SELECT count(*) FROM shop.visits WHERE customer_id = 7")
        assert report.mode == "plain" and report.error is None
        assert any("seq scan of visits" in f for f in report.flags), report.flags
        generic = explain(conn, "DELETE FROM shop.visits WHERE customer_id = $1")
        if server_version_num(conn) >= 160000:
            assert generic.mode == "generic" and generic.error is None
        else:
            assert generic.mode == "none" and "GENERIC_PLAN" in (generic.error or "")
        written = explain(conn, "UPDATE shop.visits SET page = 'x' WHERE id = 1")
        assert written.mode == "plain"
        assert conn.execute("SELECT page FROM shop.visits WHERE id = 1").fetchone()[0] != "x"
        assert explain(conn, "SELECT 1; DELETE FROM shop.visits").mode == "none"
        # ANALYZE is for a scratch copy (here the planted database plays one): read-only texts, as a role, rolled back
        user = conn.execute("SELECT current_user").fetchone()[0]
        analyzed = explain(conn, "SELECT count(*) FROM shop.visits WHERE customer_id = 7", role=user, analyze=True)
        assert analyzed.mode == "analyze" and analyzed.error is None
        assert explain(conn, "SELECT count(*) FROM shop.visits", analyze=True).mode == "none"  # no role
        refused = explain(conn, "UPDATE shop.visits SET page = 'x' WHERE id = 1", role=user, analyze=True)
        assert refused.mode == "none" and "writes" in (refused.error or "")

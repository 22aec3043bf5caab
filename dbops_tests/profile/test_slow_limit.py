"""The slow-query verdict is judged against the targets file's ``limits.slow_query_mean_ms``, passed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.health.targets import TargetsError, default_limits
from dbops.profile.cli import profile_main
from dbops.profile.statements import StatementStats, build_profile
from dbops.settings import load_settings
from dbops_tests.profile.conftest import run_workload


def _stats(key: str, calls: int, total_ms: float) -> StatementStats:
    return StatementStats(key, f"SELECT {key}", calls, total_ms, calls, 0, 0)


def test_slow_queries_under_honours_the_limit_it_is_given() -> None:
    # ten statements: the slowest 10 % is the one at 30 ms a call
    period = [_stats(f"q{n}", 10, 10.0 * (n + 1)) for n in range(9)] + [_stats("slow", 4, 120.0)]
    prof = build_profile(period, False)
    assert prof.slowest_10pct_mean_ms == 30.0
    assert prof.slow_queries_under(default_limits().slow_query_mean_ms)  # 50 ms
    assert not prof.slow_queries_under(20.0)
    assert not prof.slow_queries_under(30.0)  # "under" the target, as slow_queries_under_target has it
    assert prof.slow_queries_under(30.5)


def test_profile_prints_the_verdict_against_the_targets_file_limit(planted_db: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run_workload(planted_db, range(1, 6))
    for limit, verdict in ((0, "MISSED"), (100000, "met")):
        targets = tmp_path / f"targets-{verdict}.yml"
        targets.write_text(f"limits:\n  slow_query_mean_ms: {limit}\n")
        settings = load_settings({"DBOPS_DATABASE_URL": planted_db, "DBOPS_HOME": str(tmp_path / "home"),
                                  "DBOPS_TARGETS": str(targets)})
        assert profile_main(["--since-reset", "--no-plans"], settings) == 0
        out = capsys.readouterr().out
        assert f"target < {limit} ms (limits.slow_query_mean_ms): {verdict}" in out


def test_profile_refuses_a_malformed_targets_file_before_connecting(tmp_path: Path) -> None:
    bad = tmp_path / "targets.yml"
    bad.write_text("limits:\n  slow_query_mean: 20\n")
    settings = load_settings({"DBOPS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
                              "DBOPS_HOME": str(tmp_path / "home"), "DBOPS_TARGETS": str(bad)})
    with pytest.raises(TargetsError, match="did you mean slow_query_mean_ms"):
        profile_main([], settings)

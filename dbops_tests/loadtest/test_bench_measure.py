"""What a step cost the server, measured on a real PostgreSQL: CPU time of its processes, pg_stat_statements' plan
and execution time, the rounds' spread, and the settle wait before anything is timed."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from dbops.loadtest.cli import main
from dbops.loadtest.measure import local_server, settle, statements_delta, statements_snapshot
from dbops.loadtest.runner import LoadTestPlan, run_load_test
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops.settings import load_settings


@pytest.fixture(scope="module", autouse=True)
def statements_extension(seeded_url: str) -> None:
    """The load test never creates pg_stat_statements itself (dbops profile or the operator does)."""
    with connection(seeded_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def test_no_extension_no_statement_figures(fresh_db: str) -> None:
    snap = statements_snapshot(fresh_db, "postgres")
    assert snap.reason is not None and "CREATE EXTENSION pg_stat_statements" in snap.reason
    with connection(fresh_db) as conn:  # and it was not created behind the operator's back
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
                            ).fetchone()[0] == 0


def test_the_local_server_is_found_and_its_cpu_counted(seeded_url: str, pg_server: EmbeddedServer) -> None:
    server, reason = local_server(seeded_url)
    assert reason is None and server is not None
    assert server.pid == pg_server.pid()  # the postmaster, found from this session's backend
    before = server.cpu_seconds()
    with connection(seeded_url) as conn:  # a backend that burns CPU, then exits: its time is still counted
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)")
    time.sleep(0.2)
    assert server.cpu_seconds() - before > 0.05


def test_a_step_reports_server_cpu_statements_and_spread(seeded_url: str, tmp_path: Path) -> None:
    plan = LoadTestPlan(profile="mixed", users=[3], duration_s=1, think_time_s=None, rounds=2, work_dir=tmp_path,
                        protocol="extended")
    result = run_load_test(seeded_url, plan)
    step = result.steps[0]
    assert result.failures == 0 and result.server_cpu_reason is None and step.protocol == "extended"
    assert len(step.rounds) == 2 and sum(r["transactions"] for r in step.rounds) == step.total["transactions"]
    spread = step.spread("tps")
    assert spread is not None and spread["min"] <= spread["median"] <= spread["max"] and spread["rel_spread"] >= 0
    assert step.server_cpu_s is not None and step.server_cpu_s > 0
    assert step.server_cpu_ms_per_tx is not None and step.server_cpu_ms_per_tx > 0
    assert step.server_cpu_pct is not None and 0 < step.server_cpu_pct <= 100
    figures = step.statements
    assert figures is not None and figures["exec_ms_per_tx"] > 0 and figures["statements"]
    calls = sum(s["calls"] for s in figures["statements"])
    assert calls >= step.total["transactions"]  # every transaction ran at least one of the role's statements
    assert step.pool is None  # direct: no PgBouncer to sample
    meta = result.metadata()
    assert meta["users_3/server_cpu_ms_per_tx"] == step.server_cpu_ms_per_tx and meta["users_3/rounds"] == 2
    assert "users_3/tps_rel_spread" in meta
    assert "server cpu ms/tx" in result.table()


def test_statement_snapshots_split_plan_and_exec(seeded_url: str) -> None:
    with connection(seeded_url) as conn:
        role = conn.execute("SELECT current_user").fetchone()[0]
        conn.execute("SET pg_stat_statements.track_planning = on")  # superuser: this session only
        before = statements_snapshot(seeded_url, role)
        assert before.reason is None
        for n in range(5):
            conn.execute("SELECT count(*) FROM app.orders WHERE id > %s", [n])
    after = statements_snapshot(seeded_url, role)
    delta = statements_delta(before, after)
    mine = [s for s in delta if "app.orders" in s.query and "count(*)" in s.query]
    assert mine and mine[0].calls == 5 and mine[0].plans == 5 and mine[0].plan_ms > 0 and mine[0].exec_ms > 0


def test_settle_vacuums_and_waits_for_quiet(seeded_url: str) -> None:
    done = settle(seeded_url, quiet_s=1.0, timeout_s=60)
    assert done.settled and done.vacuum_s > 0 and done.waited_s >= 1.0
    with connection(seeded_url) as conn:  # VACUUM ANALYZE ran: the tables have statistics
        assert conn.execute("SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
                            " OR last_autoanalyze IS NOT NULL").fetchone()[0] > 0


def test_settle_waits_while_busy_and_gives_up_at_the_timeout(seeded_url: str) -> None:
    # The wait itself, on a real condition: a session named like a worker stands for autovacuum being busy.
    def busy(url: str) -> int:
        with connection(url) as conn:
            return int(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                                    " 'settle-probe'").fetchone()[0])

    probe = psycopg.connect(seeded_url, application_name="settle-probe", autocommit=True)
    threading.Timer(2.0, probe.close).start()
    started = time.monotonic()
    done = settle(seeded_url, vacuum=False, quiet_s=1.0, timeout_s=30, poll_s=0.2, busy=busy)
    assert done.settled and done.autovacuum_seen == 1 and time.monotonic() - started >= 3.0
    with psycopg.connect(seeded_url, application_name="settle-probe", autocommit=True):
        gave_up = settle(seeded_url, vacuum=False, quiet_s=1.0, timeout_s=1.5, poll_s=0.2, busy=busy)
    assert not gave_up.settled and gave_up.waited_s >= 1.5
    assert gave_up.as_dict()["settled"] is False


def test_the_settle_option_of_a_run(seeded_url: str, tmp_path: Path) -> None:
    result = run_load_test(seeded_url, LoadTestPlan(profile="read", users=[2], duration_s=1, think_time_s=None,
                                                    settle=True, settle_timeout_s=60, work_dir=tmp_path))
    assert result.settled is not None and result.settled["settled"] is True
    assert result.metadata()["settled"] == 1 and "settled: yes" in result.table()


def test_cli_rounds_settle_and_pool_sizes(seeded_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings({"DBOPS_DATABASE_URL": seeded_url, "DBOPS_HOME": str(tmp_path)})
    code = main(["--profile", "read", "--users", "4", "--duration", "1", "--think-time", "0", "--warmup", "0",
                 "--rounds", "2", "--settle", "--pool-sizes", "1,2", "--json"], settings)
    out = capsys.readouterr()
    assert code == 0, out.err
    figures = json.loads(out.out)
    assert figures["users_4/rounds"] == 2 and figures["settled"] == 1
    assert figures["pool_recommendation"]["default_pool_size"] in (1, 2)
    assert isinstance(figures["users_4/pgbouncer/max_sv_active"], int)
    assert figures["users_4/server_cpu_ms_per_tx"] > 0
    with pytest.raises(SystemExit) as bad:
        main(["--profile", "read", "--pool-sizes", "ten"], settings)
    assert bad.value.code == 2 and "bad list 'ten'" in capsys.readouterr().err

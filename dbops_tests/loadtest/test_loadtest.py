"""Load test against a real PostgreSQL (and a real PgBouncer): figures, clean-up, the role, and bad input."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbops.errors import CommandFailed, ConnectionFailed, DbopsError
from dbops.loadtest.limits import raise_fd_limit
from dbops.loadtest.pgbench import pgbench_jobs
from dbops.loadtest.pgbouncer import PgBouncerError
from dbops.loadtest.role import scram_verifier
from dbops.loadtest.runner import LoadTestPlan, cleanup_rows, run_load_test
from dbops.loadtest.stats import ScriptStats, bucket, parse_log_lines
from dbops.loadtest.workloads import LoadTestError, resolve_profile
from dbops.pg.connect import connection
from dbops.pg.server import free_port
from dbops_tests.conftest import make_test_dir

COUNTED = ("app.orders", "app.order_items", "app.payments", "app.audit_log", "app.inventory")


def counts(url: str) -> dict[str, Any]:
    with connection(url) as conn:
        out: dict[str, Any] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}  # noqa: S608
        out["inventory_sum"] = conn.execute("SELECT sum(quantity + reserved) FROM app.inventory").fetchone()[0]
        out["roles"] = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'dbops\\_loadtest\\_%'"
                                    ).fetchone()[0]
    return out


def test_log_parsing_and_percentiles() -> None:
    lines = [f"0 {i} {1000 * (i + 1)} 0 1700000000 {i}" for i in range(100)]  # 1..100 ms, script 0
    lines += ["1 0 2500 1 1700000000 5 120 2", "1 1 failed 1 1700000000 6 10 3", "1 2 skipped 1 1700000000 7 0 0",
              "garbage"]
    stats = parse_log_lines(lines, ["read", "write"], rate_limited=True, max_tries=3)
    read, write = stats["read"], stats["write"]
    assert read.transactions == 100
    assert read.percentile_ms(50) == 50.0 and read.percentile_ms(95) == 95.0 and read.percentile_ms(99) == 99.0
    assert read.max_us == 100_000 and read.avg_ms == pytest.approx(50.5)
    assert (write.transactions, write.failures, write.skipped, write.retries) == (1, 1, 1, 5)
    assert write.lag_percentile_ms(95) == 0.12 and read.lag_percentile_ms(95) == 0.0  # schedule lag kept apart
    assert write.figures(1)["lag_p95_ms"] == 0.12
    assert bucket(123_456) == 123_000 and bucket(999) == 999
    assert pgbench_jobs(1) == 1 and pgbench_jobs(10_000) == 63 and pgbench_jobs(100_000) == 64
    empty = ScriptStats("none")
    assert empty.percentile_ms(95) == 0.0 and empty.figures(1)["tps"] == 0.0


def test_scram_verifier_is_accepted_by_postgres(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        conn.execute("DROP ROLE IF EXISTS lt_scram_probe")
        conn.execute(f"CREATE ROLE lt_scram_probe LOGIN PASSWORD '{scram_verifier('s3cret-probe')}'")
        conn.execute("GRANT CONNECT ON DATABASE " + migrated_db.rsplit("/", 1)[1] + " TO lt_scram_probe")
    try:
        probe = psycopg.conninfo.make_conninfo(migrated_db, user="lt_scram_probe", password="s3cret-probe")
        with psycopg.connect(probe) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "lt_scram_probe"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(psycopg.conninfo.make_conninfo(migrated_db, user="lt_scram_probe", password="wrong"))
    finally:
        with connection(migrated_db) as conn:
            conn.execute("DROP OWNED BY lt_scram_probe")
            conn.execute("DROP ROLE lt_scram_probe")


def test_mixed_run_measures_and_leaves_the_database_as_it_was(seeded_url: str, tmp_path: Path) -> None:
    before = counts(seeded_url)
    plan = LoadTestPlan(profile="mixed", users=[4], duration_s=2, think_time_s=None, cleanup=False,
                        work_dir=tmp_path, random_seed=7)
    result = run_load_test(seeded_url, plan)
    step = result.steps[0]
    assert result.via == "direct" and result.failures == 0
    assert step.reads["transactions"] > 100 and step.writes["transactions"] > 10
    assert 0 < step.total["p50_ms"] <= step.total["p95_ms"] <= step.total["p99_ms"] <= step.total["max_ms"]
    assert set(step.scripts) == {"read_order", "read_user_orders", "read_product", "place_order"}
    with connection(seeded_url) as conn:
        # The writes ran as the throw-away member of dbops_app_rw (row-level security applied, audit rows by it).
        who = conn.execute("SELECT DISTINCT db_role, changed_by LIKE 'user:%' FROM app.audit_log"
                           " WHERE db_role LIKE 'dbops%'").fetchall()
        assert who and all(w[0].startswith("dbops_loadtest_") and w[1] for w in who)  # changed_by: the app's user
        mixed = conn.execute("SELECT count(*) FROM app.orders AS o JOIN app.order_items AS i ON i.order_id = o.id"
                             " AND i.tenant_id = o.tenant_id WHERE o.currency = 'XTS' AND o.total <>"
                             " (SELECT sum(quantity * unit_price) FROM app.order_items AS j WHERE j.order_id = o.id"
                             " AND j.tenant_id = o.tenant_id)").fetchone()[0]
        assert mixed == 0
    assert counts(seeded_url)["app.orders"] - before["app.orders"] == step.writes["transactions"]
    assert cleanup_rows(seeded_url) > 0
    assert counts(seeded_url) == before  # same rows, same stock, role dropped


def test_ramp_through_pgbouncer(seeded_url: str) -> None:
    before = counts(seeded_url)
    work = make_test_dir("pgbouncer")
    plan = LoadTestPlan(profile="mixed", users=[20, 300], duration_s=3, think_time_s=1.0, pooler="auto",
                        work_dir=work)
    result = run_load_test(seeded_url, plan)
    assert result.via == "pgbouncer"  # 300 users exceed max_connections - headroom (300 - 20)
    assert [s.users for s in result.steps] == [20, 300] and result.failures == 0
    assert result.steps[1].total["tps"] > 100  # ~300 users / 1 s think time
    assert result.degradation is not None and result.degradation > 0
    table = result.table()
    assert "| 300 |" in table and "degradation" in table
    meta = result.metadata()
    assert isinstance(meta["users_300/all/p95_ms"], float) and "degradation_p95_ratio" in meta
    assert counts(seeded_url) == before
    import psutil

    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
    assert left == []  # PgBouncer stopped
    assert list(work.iterdir()) == []  # its private directory removed
    work.rmdir()


def test_unknown_profile_and_missing_script(tmp_path: Path) -> None:
    with pytest.raises(LoadTestError, match="unknown profile .nope.*use one of mixed, own, read, replay, write"):
        resolve_profile("nope")
    with pytest.raises(LoadTestError, match="not found"):
        resolve_profile(str(tmp_path / "missing.sql"))


def test_script_errors_name_the_script(seeded_url: str, tmp_path: Path) -> None:
    meta = tmp_path / "bad_meta.sql"
    meta.write_text("\\set x random(1,\nSELECT 1;\n")
    with pytest.raises(CommandFailed, match="pgbench rejected the workload.*bad_meta.sql"):
        run_load_test(seeded_url, LoadTestPlan(profile=str(meta), users=[1], duration_s=1, think_time_s=None))
    bad_sql = tmp_path / "bad_sql.sql"
    bad_sql.write_text("SELEC 1;\n")
    with pytest.raises(CommandFailed, match="syntax error.*bad_sql.sql"):
        run_load_test(seeded_url, LoadTestPlan(profile=str(bad_sql), users=[1], duration_s=1, think_time_s=None))
    assert counts(seeded_url)["roles"] == 0


def test_server_down_and_production_guard(seeded_url: str) -> None:
    down = f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(ConnectionFailed, match="is the server running"):
        run_load_test(down, LoadTestPlan(users=[1], duration_s=1))
    with pytest.raises(LoadTestError, match="marked production.*--allow-production"):
        run_load_test(seeded_url, LoadTestPlan(users=[1], duration_s=1), production=True)


def test_missing_pgbouncer_and_too_few_descriptors(seeded_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PgBouncerError, match="apt-get install -y pgbouncer"):
        run_load_test(seeded_url, LoadTestPlan(users=[2], duration_s=1, pooler="pgbouncer",
                                               pgbouncer=Path("/nonexistent/pgbouncer")))
    assert counts(seeded_url)["roles"] == 0
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        with pytest.raises(DbopsError, match="too few file descriptors.*ulimit -Hn"):
            raise_fd_limit(hard + 1)
    assert raise_fd_limit(64) >= 64


def test_missing_pgbench_is_one_clear_line(seeded_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dbops.pg.binaries

    monkeypatch.setattr(dbops.pg.binaries, "embedded_bin_dir", lambda: tmp_path)  # no pgbench anywhere
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CommandFailed) as caught:
        run_load_test(seeded_url, LoadTestPlan(users=[1], duration_s=1, warmup_s=0, bin_dir=tmp_path))
    message = str(caught.value)
    assert "program 'pgbench' not found" in message and "DBOPS_PG_BIN" in message and "\n" not in message
    assert counts(seeded_url)["roles"] == 0


def test_refused_login_and_descriptors_through_the_runner(seeded_url: str) -> None:
    refused = seeded_url.replace("://postgres:", "://postgres:wrong-", 1)
    assert refused != seeded_url
    with pytest.raises(ConnectionFailed) as caught:
        run_load_test(refused, LoadTestPlan(users=[1], duration_s=1))
    assert "\n" not in str(caught.value) and "wrong-" not in str(caught.value)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 100_000:
        pytest.skip("no finite hard descriptor limit to exceed cheaply")
    with pytest.raises(DbopsError) as caught:  # refused before PgBouncer or pgbench start
        run_load_test(seeded_url, LoadTestPlan(users=[hard], duration_s=1, pooler="pgbouncer"))
    message = str(caught.value)
    assert "too few file descriptors" in message and "ulimit -Hn" in message and "\n" not in message
    assert counts(seeded_url)["roles"] == 0


def test_failed_transactions_are_counted(seeded_url: str, tmp_path: Path) -> None:
    flaky = tmp_path / "flaky.sql"
    flaky.write_text("\\set x random(0, 9)\nSELECT 1 / :x;\n")  # one transaction in ten fails: its client aborts
    result = run_load_test(seeded_url, LoadTestPlan(profile=str(flaky), users=[4], duration_s=1, think_time_s=None,
                                                    random_seed=3))
    step = result.steps[0]
    assert step.total["transactions"] > 0 and result.failures >= 1
    assert step.error and "division by zero" in step.error

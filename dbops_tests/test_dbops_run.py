"""`dbops run` materializes in-process and records the run in Dagster's PostgreSQL instance storage."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg

from dbops.pg.connect import connection, drop_database
from dbops_tests.conftest import MIGRATIONS_DIR, dbops_env, run_dbops


def test_dbops_run_migrate_writes_events_to_postgres_storage(pg_server, fresh_db: str, tmp_path: Path) -> None:
    dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=pg_server.url(dagster_db),
                    DBOPS_MIGRATIONS=str(MIGRATIONS_DIR))
    try:
        result = run_dbops(["run", "schema_migrations"], env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout
        assert "asset dbops/schema_migrations" in result.stdout  # the default target's asset, keyed <target>/<asset>
        assert "check dbops/schema_migrations:migration_history_valid" in result.stdout
        assert pg_server.password not in result.stdout + result.stderr
        with connection(pg_server.url(dagster_db)) as conn:
            materializations = conn.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                "AND asset_key = %s", (dg.AssetKey(["dbops", "schema_migrations"]).to_string(),)
            ).fetchone()[0]
            runs = conn.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'").fetchone()[0]
        assert materializations == 1 and runs == 1
        with connection(fresh_db) as conn:
            applied = conn.execute("SELECT count(*) FROM public.flyway_schema_history WHERE success").fetchone()[0]
        assert applied == len(list(MIGRATIONS_DIR.glob("V*.sql"))) + len(list(MIGRATIONS_DIR.glob("R__*.sql")))
    finally:
        drop_database(pg_server.url(), dagster_db)


def test_dbops_run_unknown_selection_is_a_clear_error(pg_server, fresh_db: str, tmp_path: Path) -> None:
    env = dbops_env(pg_server, fresh_db, tmp_path)
    result = run_dbops(["run", "no_such_asset"], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and "no_such_asset" in result.stderr


def test_dbops_run_unknown_target_is_a_configuration_error_naming_the_target(pg_server, fresh_db: str,
                                                                           tmp_path: Path) -> None:
    """A --target that is not in the settings is a configuration mistake: one line naming the targets there are
    (the closest one), exit status 2 as for every configuration mistake, and nothing run."""
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_MIGRATIONS=str(MIGRATIONS_DIR))
    result = run_dbops(["run", "schema_migrations", "--target", "nosuch"], env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no target named 'nosuch'")
    assert "dbops" in result.stderr.removeprefix("error: no target named 'nosuch'")  # the one target there is
    assert result.stdout == ""
    close = run_dbops(["run", "schema_migrations", "--target", "dbopz"], env)
    assert close.returncode == 2, close.stdout + close.stderr
    assert close.stderr == "error: no target named 'dbopz' — did you mean dbops?\n"
    with connection(fresh_db) as conn:
        assert conn.execute("SELECT to_regclass('public.flyway_schema_history')").fetchone()[0] is None

"""`dbops run` materializes in-process and records the run in Dagster's PostgreSQL instance storage."""

from __future__ import annotations

import uuid
from pathlib import Path

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
        assert "asset schema_migrations" in result.stdout
        assert "check schema_migrations:migration_history_valid" in result.stdout
        assert pg_server.password not in result.stdout + result.stderr
        with connection(pg_server.url(dagster_db)) as conn:
            materializations = conn.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                "AND asset_key LIKE '%schema_migrations%'"
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

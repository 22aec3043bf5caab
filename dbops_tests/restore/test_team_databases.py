"""Backups of the two team databases dbops did not create (dbops_tests/foreign: library, telemetry): a logical
backup exported and restored with plain `pg_restore` brings back every table's rows, the partitions with their
bounds, the types, triggers and functions; dbops' restore drill passes on each and reports its RTO."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dbops.backup.keys import MasterKey
from dbops.backup.logical import export_logical, logical_backup
from dbops.backup.store import LocalStore
from dbops.health.targets import default_limits
from dbops.pg.binaries import find_program
from dbops.pg.connect import connection, database_name, drop_database, split_password, with_database
from dbops.restore.drill import drill
from dbops.restore.logical import restore_logical
from dbops.settings import load_settings
from dbops_tests.backup.test_export import partitions, plain_pg_restore, row_counts
from dbops_tests.conftest import dbops_step, new_database, start_test_server, stop_test_server
from dbops_tests.foreign import ForeignSchema

OBJECTS = """
SELECT 'type ' || n.nspname || '.' || t.typname || ' ' || t.typtype::text
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = ANY(%(schemas)s) AND t.typtype IN ('e', 'd', 'c') AND NOT EXISTS
   (SELECT FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
UNION ALL
SELECT 'trigger ' || n.nspname || '.' || c.relname || '.' || g.tgname
  FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY(%(schemas)s) AND NOT g.tgisinternal
UNION ALL
SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) ||
       ') definer=' || p.prosecdef || ' config=' || coalesce(p.proconfig::text, '')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY(%(schemas)s)
UNION ALL
SELECT 'constraint ' || n.nspname || '.' || c.conname || ' ' || pg_get_constraintdef(c.oid) ||
       ' valid=' || c.convalidated
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
 WHERE n.nspname = ANY(%(schemas)s) AND c.conrelid <> 0
UNION ALL
SELECT 'grant ' || n.nspname || '.' || c.relname || ' ' || coalesce(c.relacl::text, '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p')
ORDER BY 1
"""


def objects(url: str, schema: ForeignSchema) -> list[str]:
    """The team's types (enums, domains, composites), triggers, functions, constraints and table grants."""
    with connection(url) as conn:
        conn.execute("SET search_path = pg_catalog")  # names schema-qualified, whatever the database's setting
        return [r[0] for r in conn.execute(OBJECTS, {"schemas": list(schema.schemas)}).fetchall()]


def test_logical_backup_export_and_plain_pg_restore_of_a_team_database(
        foreign_db: tuple[ForeignSchema, str], server_url: str, tmp_path: Path, local_store: LocalStore,
        master_key: MasterKey) -> None:
    schema, url = foreign_db
    manifest = logical_backup(url, local_store, master_key)
    exported = export_logical(local_store, master_key, manifest["id"], tmp_path / f"{schema.name}.dump")
    target = new_database(server_url)
    plain_pg_restore(exported.path, target, "--single-transaction")

    counts = row_counts(target)
    assert counts == row_counts(url)
    assert {t: f["rows"] for t, f in manifest["tables"].items()} == counts
    assert any(t.startswith("public.") for t in counts)  # the team's tables in `public` came along
    restored_partitions = partitions(target)
    assert restored_partitions == partitions(url)
    for table in schema.partitioned:
        own = [p for p in restored_partitions if p[0] == table]
        assert len(own) > 1, f"{table} lost its partitions"
        assert sum(counts[p[1]] for p in own) > 0  # and their rows
        with connection(target) as conn:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == sum(  # type: ignore[index]  # noqa: S608
                counts[p[1]] for p in own)
    restored = objects(target, schema)
    assert restored == objects(url, schema)
    assert any(o.startswith("type ") for o in restored) and any(o.startswith("trigger ") for o in restored)
    assert any("definer=true" in o for o in restored)


def run_pg(program: str, url: str, *args: str, stdin: str | None = None) -> str:
    """PostgreSQL's own client ``program`` (pg_dumpall, psql, pg_restore) against ``url``."""
    bare, password = split_password(url)
    done = subprocess.run([str(find_program(program)), f"--dbname={bare}", "--no-password", *args], input=stdin,
                          env={**os.environ, "PGPASSWORD": password or ""}, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def definer_calls(url: str, schema: ForeignSchema) -> list[Any]:
    """The team's SECURITY DEFINER calls, as its application makes them (the database's search_path), rolled back:
    the data stays as it was."""
    with connection(url) as conn, conn.transaction(force_rollback=True):
        return [conn.execute(call).fetchone()[0] for call in schema.definer_calls]  # type: ignore[index]


def test_export_restores_into_another_cluster_with_its_database_settings(
        foreign_db: tuple[ForeignSchema, str], server_url: str, tmp_path: Path, local_store: LocalStore,
        master_key: MasterKey) -> None:
    """Elsewhere, as the format document says: the cluster's roles first (pg_dumpall --roles-only), then
    `pg_restore --create`, which also sets the database's own settings (library's search_path, which its SECURITY
    DEFINER function relies on)."""
    schema, url = foreign_db
    manifest = logical_backup(url, local_store, master_key)
    exported = export_logical(local_store, master_key, manifest["id"], tmp_path / f"{schema.name}.dump")
    other = start_test_server()
    try:
        run_pg("psql", other.url("postgres"), "--quiet", stdin=run_pg("pg_dumpall", server_url, "--roles-only",
                                                                             "--no-role-passwords"))
        run_pg("pg_restore", other.url("postgres"), "--create", "--exit-on-error", str(exported.path))
        copy = with_database(other.url("postgres"), database_name(url))
        assert row_counts(copy) == row_counts(url) and partitions(copy) == partitions(url)
        assert objects(copy, schema) == objects(url, schema)
        assert definer_calls(copy, schema) == definer_calls(url, schema)
    finally:
        stop_test_server(other)


def test_restore_drill_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                          local_store: LocalStore, master_key: MasterKey,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    schema, url = foreign_db
    manifest = logical_backup(url, local_store, master_key, jobs=2, staging_root=tmp_path / "staging")
    result = drill(url, local_store, master_key, backup_id=manifest["id"], staging_root=tmp_path / "staging",
                   keep=True)
    assert result.restored_url is not None
    try:
        # the restored copy works as the team's application uses it: its database settings were set again
        assert definer_calls(result.restored_url, schema) == definer_calls(url, schema)
    finally:
        drop_database(url, database_name(result.restored_url))
    assert result.data_matches, result.problems
    counts = row_counts(url)
    assert result.tables_checked == len(counts) and result.rows_checked == sum(counts.values()) > 0
    assert result.indexes_checked > 0
    assert set(result.phases) == {"download_verify", "decrypt_decompress", "restore", "verify"}
    assert result.within_rto(default_limits().rto_seconds)
    with capsys.disabled():
        print(f"\n[{schema.name}] drill (directory format, 2 jobs): RTO {result.rto_seconds} s {result.phases}; "
              f"{result.tables_checked} tables, {result.rows_checked} rows, {result.indexes_checked} indexes")


def test_cli_backup_and_drill_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, master_key: MasterKey,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import base64

    schema, url = foreign_db
    env = {"DBOPS_DATABASE_URL": url, "DBOPS_BACKUP_DIR": str(tmp_path / "store"),
           "DBOPS_BACKUP_KEY": base64.b64encode(master_key.secret).decode(), "DBOPS_HOME": str(tmp_path / "home")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert dbops_step(["backup", "run"], settings) == 0
    backup_id = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("backup ")).split()[1]
    archive = tmp_path / f"{schema.name}.dump"
    assert dbops_step(["backup", "export", backup_id, "--output", str(archive)], settings) == 0
    exported = capsys.readouterr().out
    assert f"exported {backup_id} to {archive}: pg_dump custom archive" in exported and archive.is_file()
    with connection(url) as conn:
        has_settings = conn.execute("SELECT count(*) FROM pg_db_role_setting WHERE setdatabase = "
                                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                                    ).fetchone()[0] > 0  # type: ignore[index]
    assert ("search_path=" in exported) == has_settings == (schema.name == "library")  # telemetry sets none
    assert dbops_step(["drill"], settings) == 0
    out = capsys.readouterr().out
    rto = next(line for line in out.splitlines() if "RTO" in line and "limits.rto_seconds" in line)
    assert rto.endswith(": met"), out
    assert "MISMATCH" not in out
    with capsys.disabled():
        print(f"\n[{schema.name}] dbops drill (custom format): " + next(
            line for line in out.splitlines() if line.startswith("drill of")))


def test_database_settings_come_back_with_a_restore(fresh_db: str, server_url: str, local_store: LocalStore,
                                                    master_key: MasterKey) -> None:
    """`ALTER DATABASE ... SET` and `ALTER ROLE ... IN DATABASE ... SET` are no part of a pg_dump archive's contents:
    the backup records them and a restore into another database sets them again, quoting kept."""
    name = database_name(fresh_db)
    with connection(fresh_db) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbops_settings_app') THEN "
                     "CREATE ROLE dbops_settings_app; END IF; END $$")
        conn.execute(f'ALTER DATABASE {name} SET search_path = "$user", "Odd Schema", public')
        conn.execute(f"ALTER DATABASE {name} SET myapp.greeting = 'it''s here'")
        conn.execute(f"ALTER ROLE dbops_settings_app IN DATABASE {name} SET work_mem = '8MB'")
        conn.execute("CREATE TABLE public.t (id int)")
    manifest = logical_backup(fresh_db, local_store, master_key)
    assert len(manifest["database_settings"]) == 2
    target = new_database(server_url)
    restore_logical(local_store, master_key, manifest, target)
    assert database_settings(target) == database_settings(fresh_db) == {
        None: ['myapp.greeting=it\'s here', 'search_path="$user", "Odd Schema", public'],
        "dbops_settings_app": ["work_mem=8MB"]}


def database_settings(url: str) -> dict[str | None, list[str]]:
    with connection(url) as conn:
        return {role: sorted(config) for role, config in conn.execute(
            "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()}

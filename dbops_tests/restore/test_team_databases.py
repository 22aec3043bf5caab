"""Backups of the two team databases dbops did not create (dbops_tests/foreign: library, telemetry): a logical
backup exported and restored with plain `pg_restore` brings back every table's rows, the partitions with their
bounds, the types, triggers and functions; dbops' restore drill passes on each and reports its RTO."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.backup.keys import MasterKey
from dbops.backup.logical import export_logical, logical_backup
from dbops.backup.store import LocalStore
from dbops.health.targets import default_limits
from dbops.pg.connect import connection
from dbops.restore.drill import drill
from dbops.settings import load_settings
from dbops_tests.backup.test_export import partitions, plain_pg_restore, row_counts
from dbops_tests.conftest import dbops_step, new_database
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


def test_restore_drill_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                          local_store: LocalStore, master_key: MasterKey,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    schema, url = foreign_db
    manifest = logical_backup(url, local_store, master_key, jobs=2, staging_root=tmp_path / "staging")
    result = drill(url, local_store, master_key, backup_id=manifest["id"], staging_root=tmp_path / "staging")
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
    assert dbops_step(["drill"], settings) == 0
    out = capsys.readouterr().out
    rto = next(line for line in out.splitlines() if "RTO" in line and "limits.rto_seconds" in line)
    assert rto.endswith(": met"), out
    assert "MISMATCH" not in out
    with capsys.disabled():
        print(f"\n[{schema.name}] dbops drill (custom format): " + next(
            line for line in out.splitlines() if line.startswith("drill of")))

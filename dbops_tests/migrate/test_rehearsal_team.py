"""The rehearsal's application checks on databases dbops did not create (dbops_tests/foreign: library, telemetry):
a rename of a partition key that a recorded production query uses, an undo file that undoes and one that does not,
and an assertion that fails, all in one rehearsal on a restored copy; and a rename on the reference schema from the
command line. Production is untouched."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from psycopg import sql

from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.store import LocalStore
from dbops.migrate import MigrationError, Migrator, migrator_options
from dbops.migrate.files import resolve
from dbops.migrate.rehearsal import rehearse
from dbops.pg.connect import connection
from dbops.settings import load_settings
from dbops_tests.conftest import MIGRATIONS_DIR, dbops_step
from dbops_tests.foreign import ForeignSchema
from dbops_tests.migrate.test_team_databases import adopt


def _version(schema: ForeignSchema, step: int) -> str:
    """The version ``step`` after the team's next one, spelled as its files spell versions (021 -> 022)."""
    width = len(schema.next_version)
    return str(int(schema.next_version) + step).zfill(width)


def _columns(url: str, table: str) -> list[str]:
    with connection(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum", [table])]


def test_rename_undo_and_assertion_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    target, _record = adopt(schema, url, tmp_path)
    (table, key), = schema.partitioned.items()
    # The team's application: a range read on the partition key, with a bound parameter.
    role = f"team_app_{uuid.uuid4().hex[:6]}"
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # as the profile step leaves it
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(table.split(".")[0]),
                                                                      sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(*table.split(".")),
                                                                sql.Identifier(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))  # the team's application role
        for _ in range(5):
            conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s").format(
                sql.Identifier(*table.split(".")), sql.Identifier(key)), [datetime(2020, 1, 1, tzinfo=UTC)])
    key_text = generate_key()
    master = MasterKey.from_env({"DBOPS_BACKUP_KEY": key_text})
    store = LocalStore(tmp_path / "store")
    logical_backup(url, store, master)

    folder = tmp_path / "migrations"
    shutil.copytree(schema.migrations, folder)
    rename, probe, checked = (_version(schema, n) for n in (1, 2, 3))
    files = {
        f"V{rename}__rename_key.sql": f"ALTER TABLE {table} RENAME COLUMN {key} TO {key}_x;\n",
        f"U{rename}__rename_key.sql": f"ALTER TABLE {table} RENAME COLUMN {key}_x TO {key};\n",
        f"V{probe}__probe.sql": f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS probe int;\n",  # re-runs
        f"U{probe}__probe.sql": "SELECT 1;\n",  # undoes nothing
        f"V{checked}__checked.sql": f"COMMENT ON TABLE {table} IS 'checked';\n-- dbops:assert "  # noqa: S608
                                    f"(SELECT count(*) FROM {table}) < 0\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    history_before = [i.script for i in Migrator.for_target(url, target).info() if i.state == "success"]

    report = rehearse(url, store, master, folder, exclude_roles=tuple(target.profile.exclude_roles),
                      **migrator_options(target))
    print(report.text())
    by_script = {m.script: m for m in report.migrations}
    assert set(by_script) == {f"V{rename}__rename_key.sql", f"V{probe}__probe.sql", f"V{checked}__checked.sql"}
    assert by_script[f"V{rename}__rename_key.sql"].undo.passed  # type: ignore[union-attr]
    assert not by_script[f"V{probe}__probe.sql"].undo.passed  # type: ignore[union-attr]
    problems = "\n".join(report.problems)
    assert f'column "{key}" does not exist' in problems and "no longer plans" in problems
    assert f"U{probe}__probe.sql does not undo V{probe}__probe.sql" in problems
    assert f"V{checked}__checked.sql line 2: assertion failed" in problems
    assert report.compat[f"V{rename}__rename_key.sql"].breaking
    assert "rename column" in report.text()

    # Production: not one of the three applied, the key column still there, no scratch database left.
    assert [i.script for i in Migrator.for_target(url, target).info() if i.state == "success"] == history_before
    assert key in _columns(url, table) and "probe" not in _columns(url, table)
    with connection(url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbops_drill_%'").fetchone()[0] == 0  # type: ignore[index]
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_rename_on_the_reference_schema_is_caught_from_the_command_line(
        migrated_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reference schema: its application role's recorded queries on app.users; a rename of full_name (with a
    correct undo file) fails `dbops migrate plan --rehearse` and `dbops migrate`, production untouched."""
    with connection(migrated_db) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SET ROLE dbops_app_rw")  # the application's own role (row-level security applies)
        for i in range(3):
            conn.execute("SELECT full_name FROM app.users WHERE email = %s", [f"u{i}@example.com"])
            conn.execute("SELECT count(*) FROM app.orders WHERE user_id = %s", [i])
    key_text = generate_key()
    store = LocalStore(tmp_path / "store")
    logical_backup(migrated_db, store, MasterKey.from_env({"DBOPS_BACKUP_KEY": key_text}))
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    newest = max(m.version for m in resolve([folder]).versioned)  # type: ignore[type-var]
    version = int(str(newest)) + 1
    (folder / f"V{version}__display_name.sql").write_text(
        "ALTER TABLE app.users RENAME COLUMN full_name TO display_name;\n")
    (folder / f"U{version}__display_name.sql").write_text(
        "ALTER TABLE app.users RENAME COLUMN display_name TO full_name;\n")
    settings = load_settings({"DBOPS_DATABASE_URL": migrated_db, "DBOPS_MIGRATIONS": str(folder),
                              "DBOPS_BACKUP_DIR": str(store.root), "DBOPS_BACKUP_KEY": key_text}, cwd=tmp_path)

    assert dbops_step(["migrate", "plan", "--rehearse"], settings) == 1
    printed = capsys.readouterr().out
    print(printed)
    assert "rehearsal: UNSAFE" in printed
    assert 'BROKEN (dbops_app_rw): SELECT full_name FROM app.users WHERE email = $1: column "full_name" does not ' \
           "exist" in printed
    assert f"undo U{version}__display_name.sql: undoes it" in printed
    assert "BREAKING rename column" in printed and "ADD COLUMN \"display_name\" text" in printed
    with pytest.raises(MigrationError, match="migrate refused: the rehearsal on a restored copy found 1 problem"):
        dbops_step(["migrate"], settings)
    assert "full_name" in _columns(migrated_db, "app.users")
    assert Migrator(migrated_db, folder).current_version() == str(newest)

"""Flyway undo files (``dbops migrate undo``, history rows of type UNDO_SQL) and ``-- dbops:assert`` data assertions,
on throw-away databases, the reference schema and the team schemas."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dbops.migrate import Migrator
from dbops.migrate.files import MigrationError, Version, assertions, resolve
from dbops.pg.connect import connection
from dbops.settings import load_settings
from dbops_tests.conftest import MIGRATIONS_DIR, dbops_step
from dbops_tests.foreign import ForeignSchema
from dbops_tests.migrate.conftest import team_settings

V1 = "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\nINSERT INTO items VALUES (1, 'a'), (2, 'b');\n"
V2 = "ALTER TABLE items ADD COLUMN price numeric;\nCREATE INDEX items_price_idx ON items (price);\n"
U2 = "DROP INDEX items_price_idx;\nALTER TABLE items DROP COLUMN price;\n"
V3 = "CREATE TABLE tags (item int REFERENCES items, tag text);\n"
U3 = "DROP TABLE tags;\n"


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def history(url: str, table: str = "flyway_schema_history") -> list[tuple[str | None, str, str, bool]]:
    with connection(url) as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            f"SELECT version, type, script, success FROM {table} ORDER BY installed_rank")]  # noqa: S608 - test


def columns(url: str, table: str) -> list[str]:
    with connection(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum", [table])]


def exists(url: str, relation: str) -> bool:
    with connection(url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [relation]).fetchone()[0]  # type: ignore[index]


# ---- undo ------------------------------------------------------------------------------------------------------

def test_u_files_are_resolved_beside_their_versions(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", **{"V1__items.sql": V1, "V2__price.sql": V2, "U2__price.sql": U2,
                                      "V3__tags.sql": V3, "U3__tags.sql": U3})
    found = resolve([folder])
    assert [str(v) for v in found.undo] == ["2", "3"]
    undo = found.undo[Version.parse("2")]
    assert undo.undo and undo.type == "UNDO_SQL" and undo.label == "U2" and undo.description == "price"
    assert [m.script for m in found.versioned] == ["V1__items.sql", "V2__price.sql", "V3__tags.sql"]
    write(folder, **{"U2.0__again.sql": U2})
    with pytest.raises(MigrationError, match="duplicate undo migration for version 2"):
        resolve([folder])


def test_undo_the_latest_then_to_a_version_then_migrate_again(fresh_db: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "m", **{"V1__items.sql": V1, "V2__price.sql": V2, "U2__price.sql": U2,
                                      "V3__tags.sql": V3, "U3__tags.sql": U3})
    migrator = Migrator(fresh_db, folder)
    assert migrator.apply().current_version == "3"

    result = migrator.undo()
    assert [m.script for m in result.undone] == ["U3__tags.sql"] and result.current_version == "2"
    assert not exists(fresh_db, "tags")
    assert history(fresh_db)[-1] == ("3", "UNDO_SQL", "U3__tags.sql", True)
    states = {i.script: i.state for i in migrator.info()}
    assert states["V3__tags.sql"] == "pending" and states["V2__price.sql"] == "success"

    result = migrator.undo("1")
    assert [m.script for m in result.undone] == ["U2__price.sql"] and result.current_version == "1"
    assert columns(fresh_db, "items") == ["id", "name"] and not exists(fresh_db, "items_price_idx")
    migrator.validate()  # the history with its undo rows agrees with the files

    again = migrator.apply()
    assert [m.script for m in again.applied] == ["V2__price.sql", "V3__tags.sql"] and again.current_version == "3"
    assert [r[1] for r in history(fresh_db)] == ["SQL", "SQL", "SQL", "UNDO_SQL", "UNDO_SQL", "SQL", "SQL"]
    assert migrator.undo("3").undone == []  # nothing above 3


def test_undo_without_an_undo_file_is_refused_and_nothing_is_undone(fresh_db: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "m", **{"V1__items.sql": V1, "V2__price.sql": V2, "U2__price.sql": U2,
                                      "V3__tags.sql": V3})
    migrator = Migrator(fresh_db, folder)
    migrator.apply()
    with pytest.raises(MigrationError, match="no undo migration for V3__tags.sql: nothing was undone"):
        migrator.undo("1")
    assert exists(fresh_db, "tags") and "price" in columns(fresh_db, "items")
    assert [r[1] for r in history(fresh_db)] == ["SQL", "SQL", "SQL"]


def test_a_failing_undo_keeps_the_version_applied(fresh_db: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "m", **{"V1__items.sql": V1, "V2__price.sql": V2,
                                      "U2__price.sql": "ALTER TABLE items DROP COLUMN price;\nDROP INDEX nope;\n"})
    migrator = Migrator(fresh_db, folder)
    migrator.apply()
    with pytest.raises(MigrationError, match="U2__price.sql line 2: index \"nope\" does not exist"):
        migrator.undo()
    assert "price" in columns(fresh_db, "items")  # the undo's first statement was rolled back with it
    assert migrator.current_version() == "2" and [r[1] for r in history(fresh_db)] == ["SQL", "SQL"]


def test_undo_never_undoes_the_baseline(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    """On a team database baselined at its version: its own next migration is undone with its U file, then the
    baseline stands."""
    schema, url = foreign_db
    folder = tmp_path / "migrations"
    shutil.copytree(schema.migrations, folder)
    settings = team_settings(schema, url, tmp_path, migrations=folder)
    target = settings.target(schema.name)
    migrator = Migrator.for_target(url, target)
    migrator.baseline()
    versions = [m.version for m in resolve([folder]).versioned]
    newest = max(versions)
    extra = f"{str(newest).split('.')[0]}9"  # above every version the folder has, spelled like them
    table = f"{schema.default_schema}.undo_probe"
    write(folder, **{f"V{extra}__probe.sql": f"CREATE TABLE {table} (id int);\n",
                     f"U{extra}__probe.sql": f"DROP TABLE {table};\n"})
    applied = migrator.apply()
    assert applied.current_version == extra and exists(url, table)

    assert dbops_step(["migrate", "undo"], settings) == 0
    assert not exists(url, table) and migrator.current_version() == str(newest)
    with pytest.raises(MigrationError, match="no undo migration|would undo the baseline"):
        migrator.undo(str(Version.parse("0")))


# ---- assertions --------------------------------------------------------------------------------------------------

def test_assertions_are_comments_only_and_must_be_one_query() -> None:
    text = ("-- dbops:assert (SELECT count(*) FROM items) = 2\n"
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\n-- dbops:assert false\nSELECT 1 $$;\n"
            "--dbops:assert SELECT bool_and(price > 0) FROM items;\n")
    found = assertions("V9__x.sql", text)
    assert [(a.line, a.query) for a in found] == [(1, "SELECT ((SELECT count(*) FROM items) = 2)"),
                                                  (5, "SELECT bool_and(price > 0) FROM items")]
    with pytest.raises(MigrationError, match="V9__x.sql line 1: the assertion is not one query"):
        assertions("V9__x.sql", "-- dbops:assert true); DROP TABLE items; SELECT (true\n")
    with pytest.raises(MigrationError, match="line 2: the assertion does not parse"):
        assertions("V9__x.sql", "SELECT 1;\n-- dbops:assert count(* FROM items\n")
    with pytest.raises(MigrationError, match="without SQL"):
        assertions("V9__x.sql", "-- dbops:assert\nSELECT 1;\n")


def test_assertions_run_where_they_stand_and_a_false_one_rolls_the_file_back(fresh_db: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "m", **{"V1__items.sql": V1, "V2__backfill.sql": (
        "-- dbops:assert (SELECT count(*) FROM items) = 2\n"
        "ALTER TABLE items ADD COLUMN price numeric;\n"
        "-- dbops:assert (SELECT count(*) FROM items WHERE price IS NULL) = 2\n"
        "UPDATE items SET price = 10 WHERE id = 1;\n"
        "-- dbops:assert NOT EXISTS (SELECT 1 FROM items WHERE price IS NULL)\n")})
    migrator = Migrator(fresh_db, folder)
    with pytest.raises(MigrationError) as caught:
        migrator.apply()
    message = str(caught.value)
    assert "V2__backfill.sql line 5: assertion failed: `NOT EXISTS (SELECT 1 FROM items WHERE price IS NULL)` is " \
           "false" in message and "nothing of this file was kept" in message
    # Rolled back: no column, no history row for V2; V1 (its own transaction) stays.
    assert columns(fresh_db, "items") == ["id", "name"]
    assert [r[0] for r in history(fresh_db)] == ["1"]

    (folder / "V2__backfill.sql").write_text((folder / "V2__backfill.sql").read_text().replace(
        "WHERE id = 1", "WHERE id IN (1, 2)"))
    assert [m.script for m in migrator.apply().applied] == ["V2__backfill.sql"]


def test_a_null_a_non_boolean_or_a_broken_assertion_fails(fresh_db: str, tmp_path: Path) -> None:
    null = "-- dbops:assert (SELECT max(id) FROM items WHERE false) > 0\n"
    folder = write(tmp_path / "m", **{"V1__items.sql": V1 + null})
    with pytest.raises(MigrationError, match="line 3: assertion failed: .* is NULL"):
        Migrator(fresh_db, folder).apply()
    (folder / "V1__items.sql").write_text(V1 + "-- dbops:assert SELECT id FROM items\n")  # noqa: S608 - test SQL
    with pytest.raises(MigrationError, match="returned 2 row\\(s\\), not one boolean"):
        Migrator(fresh_db, folder).apply()
    broken = "-- dbops:assert (SELECT nosuch FROM items LIMIT 1)\n"
    (folder / "V1__items.sql").write_text(V1 + broken)
    with pytest.raises(MigrationError, match='could not run: column "nosuch" does not exist'):
        Migrator(fresh_db, folder).apply()
    assert not exists(fresh_db, "items")


def test_no_transaction_files_take_assertions_only_before_their_first_statement(fresh_db: str,
                                                                                tmp_path: Path) -> None:
    folder = write(tmp_path / "m", **{"V1__items.sql": V1, "V2__index.sql": (
        "-- dbops:no-transaction\n-- dbops:assert (SELECT count(*) FROM items) = 3\n"
        "CREATE INDEX CONCURRENTLY items_name_idx ON items (name);\n")})
    migrator = Migrator(fresh_db, folder)
    with pytest.raises(MigrationError, match="V2__index.sql line 2: assertion failed"):
        migrator.apply()
    assert not exists(fresh_db, "items_name_idx")
    assert migrator.current_version() == "1"
    (folder / "V2__index.sql").write_text("-- dbops:no-transaction\n"
                                          "CREATE INDEX CONCURRENTLY items_name_idx ON items (name);\n"
                                          "-- dbops:assert true\n")
    migrator.repair()  # the failed no-transaction row
    with pytest.raises(MigrationError, match="line 3: an assertion after the first statement of a file run outside"):
        migrator.apply()
    assert not exists(fresh_db, "items_name_idx")


def test_an_assertion_on_the_reference_schema(migrated_db: str, tmp_path: Path) -> None:
    """The reference schema's own data asserted before a migration that depends on it."""
    folder = tmp_path / "m"
    shutil.copytree(MIGRATIONS_DIR, folder)
    newest = max(m.version for m in resolve([folder]).versioned)  # type: ignore[type-var]
    version = int(str(newest).split(".")[0]) + 1
    write(folder, **{f"V{version}__users_email_required.sql": (
        "-- dbops:assert NOT EXISTS (SELECT 1 FROM app.users WHERE email IS NULL)\n"
        "-- dbops:assert (SELECT count(*) FROM app.users) > 1000000\n"
        "COMMENT ON TABLE app.users IS 'asserted';\n")})
    settings = load_settings({"DBOPS_DATABASE_URL": migrated_db, "DBOPS_MIGRATIONS": str(folder),
                              "DBOPS_REHEARSAL": "off"}, cwd=tmp_path)
    with pytest.raises(MigrationError, match=f"V{version}__users_email_required.sql line 2: assertion failed"):
        dbops_step(["migrate"], settings)
    assert history(migrated_db)[-1][0] == str(newest)


def test_an_assertion_that_fails_on_a_team_database_rolls_back(foreign_db: tuple[ForeignSchema, str],
                                                                tmp_path: Path) -> None:
    schema, url = foreign_db
    folder = tmp_path / "migrations"
    shutil.copytree(schema.migrations, folder)
    target = team_settings(schema, url, tmp_path, migrations=folder).target(schema.name)
    migrator = Migrator.for_target(url, target)
    migrator.baseline()
    migrator.apply()
    current = migrator.current_version()
    table = next(iter(schema.partitioned))
    extra = f"{str(current).split('.')[0]}9"
    text = f"COMMENT ON TABLE {table} IS 'touched';\n-- dbops:assert (SELECT count(*) FROM {table}) = -1\n"  # noqa: S608
    write(folder, **{f"V{extra}__assert.sql": text})
    with pytest.raises(MigrationError, match=f"V{extra}__assert.sql line 2: assertion failed"):
        migrator.apply()
    with connection(url) as conn:
        comment = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", [table]).fetchone()[0]  # type: ignore[index]
    assert comment != "touched" and migrator.current_version() == current

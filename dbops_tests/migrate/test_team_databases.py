"""Flyway compatibility on databases dbops did not create (dbops_tests/foreign: library, telemetry).

The library baselines at 020 and applies V021 (``${flyway:defaultSchema}``, ``${flyway:filename}``, the user
placeholder ``${reminder_channel}``, and an afterMigrate callback); telemetry baselines on migrate at 1 and applies
V2. A team database without a history table is refused until baselined, with nothing created.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbops.catalog.drift import detect_drift
from dbops.migrate import BaselineRecord, MigrationError, Migrator
from dbops.settings import TargetSettings
from dbops_tests.conftest import MIGRATIONS_DIR, dbops_env, run_dbops
from dbops_tests.foreign import ForeignSchema
from dbops_tests.migrate.conftest import URL_ENV, team_target, write_team_config

REFUSAL = "baseline first (dbops migrate baseline --version V) or set migrate.baseline_on_migrate"


def footprint(url: str) -> tuple[list[str], int, int]:
    """The database's schemas, how many relations and routines it has: what a refused run must leave unchanged."""
    with psycopg.connect(url) as conn:
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1")]
        relations = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]  # type: ignore[index]
        routines = conn.execute("SELECT count(*) FROM pg_proc").fetchone()[0]  # type: ignore[index]
    return schemas, relations, routines


def history(url: str, schema: str) -> list[tuple[str | None, str, bool]]:
    with psycopg.connect(url) as conn:
        query = sql.SQL("SELECT version, type, success FROM {} ORDER BY installed_rank").format(
            sql.Identifier(schema, "flyway_schema_history"))
        return [(v, t, s) for v, t, s in conn.execute(query)]


def adopt(schema: ForeignSchema, url: str, tmp_path: Path, **migrate: Any) -> tuple[TargetSettings, BaselineRecord]:
    """Bring ``schema``'s database under dbops as its team does: the library baselines explicitly at 020 then
    migrates; telemetry sets baseline_on_migrate (baseline version 1) and migrates."""
    on_migrate = schema.name == "telemetry"
    target = team_target(schema, url, tmp_path, baseline_on_migrate=on_migrate, **migrate)
    record = BaselineRecord.of(tmp_path / "home", target.name)
    migrator = Migrator.for_target(url, target, record=record)
    if not on_migrate:
        assert migrator.baseline() == schema.baseline_version
    result = migrator.apply()
    assert [m.version for m in result.applied] == [schema.next_version]
    assert result.baselined == (schema.baseline_version if on_migrate else None)
    return target, record


def test_a_team_database_without_history_is_refused_and_nothing_is_created(
        foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    before = footprint(url)
    target = team_target(schema, url, tmp_path)
    for migrator in (Migrator.for_target(url, target),
                     Migrator(url, MIGRATIONS_DIR)):  # the reference schema's files, default settings: schema public
        with pytest.raises(MigrationError) as refused:
            migrator.apply()
        message = str(refused.value)
        assert message.endswith(REFUSAL) and "\n" not in message
        assert "public" in message and "no history table" in message
    assert f"{schema.default_schema} (" in str(
        pytest.raises(MigrationError, Migrator.for_target(url, target).apply).value)
    assert footprint(url) == before  # no history table, no schema `app`, nothing of V1 or of the team's files


def test_baseline_then_migrate_with_placeholders_and_callbacks(foreign_db: tuple[ForeignSchema, str],
                                                               tmp_path: Path) -> None:
    schema, url = foreign_db
    target, record = adopt(schema, url, tmp_path)
    # The version column holds the versions as the files (and the baseline setting) spell them.
    assert history(url, schema.default_schema) == [(schema.baseline_version, "BASELINE", True),
                                                   (schema.next_version, "SQL", True)]
    migrator = Migrator.for_target(url, target)
    migrator.validate()
    assert {i.version: i.state for i in migrator.info()} == {schema.baseline_version: "baseline",
                                                             schema.next_version: "success"}
    assert migrator.apply().applied == [] and migrator.current_version() == schema.next_version
    assert record.meta() is not None and record.meta()["version"] == schema.baseline_version  # type: ignore[index]
    with psycopg.connect(url) as conn:
        if schema.name == "library":
            default, comment, granted = conn.execute("""
                SELECT pg_get_expr(d.adbin, d.adrelid), obj_description('lending.reminders'::regclass, 'pg_class'),
                       has_table_privilege('library_readonly', 'lending.reminders', 'SELECT')
                FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                WHERE d.adrelid = 'lending.reminders'::regclass AND a.attname = 'channel'""").fetchone()  # type: ignore[misc]
            assert default == "'email'::text" and comment == "written by V021__loan_reminders.sql" and granted
        else:
            assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'iot' "
                                "AND table_name = 'devices' AND column_name = 'firmware'").fetchone() == (1,)


def test_an_undefined_placeholder_names_file_and_line_and_nothing_runs(foreign_db: tuple[ForeignSchema, str],
                                                                      tmp_path: Path) -> None:
    schema, url = foreign_db
    folder = tmp_path / "m"
    folder.mkdir()
    for path in schema.migrations.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    later = f"V{int(schema.next_version) + 1:0{len(schema.next_version)}d}__notes.sql"
    (folder / later).write_text(f"CREATE TABLE {schema.default_schema}.notes (id int);\n"
                                "COMMENT ON TABLE ${flyway:defaultSchema}.notes IS '${team_owner}';\n")
    target = team_target(schema, url, tmp_path, migrations=folder, baseline_on_migrate=True)
    with pytest.raises(MigrationError) as undefined:
        Migrator.for_target(url, target).apply()
    assert str(undefined.value).startswith(f"{later} line 2: placeholder ${{team_owner}} has no value")
    assert "migrate.placeholders" in str(undefined.value)
    with psycopg.connect(url) as conn:  # refused before the baseline: no history, the earlier file did not run
        assert conn.execute("SELECT to_regclass(%s), to_regclass(%s)",
                            (f"{schema.default_schema}.flyway_schema_history",
                             f"{schema.default_schema}.notes")).fetchone() == (None, None)
    owner = {**schema.placeholders, "team_owner": "data-platform"}
    Migrator.for_target(url, team_target(schema, url, tmp_path, migrations=folder, baseline_on_migrate=True,
                                         placeholders=owner)).apply()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                            (f"{schema.default_schema}.notes",)).fetchone() == ("data-platform",)


def test_changing_a_placeholder_value_keeps_validation_and_replacement_can_be_off(
        foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    adopt(schema, url, tmp_path)
    changed = {name: value + "-changed" for name, value in schema.placeholders.items()}
    # Versioned checksums are over the file as written: another value (another environment) validates.
    Migrator.for_target(url, team_target(schema, url, tmp_path, placeholders=changed)).validate()
    off = Migrator.for_target(url, team_target(schema, url, tmp_path, placeholder_replacement=False))
    off.validate()
    folder = tmp_path / "literal"
    folder.mkdir()
    (folder / "V1__literal.sql").write_text("CREATE TABLE literal (note text DEFAULT '${not_replaced}');\n")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE SCHEMA scratch_literal")
    literal = Migrator(url, folder, schema="scratch_literal", placeholder_replacement=False)
    literal.apply()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
                            "WHERE d.adrelid = 'scratch_literal.literal'::regclass").fetchone() == (
                                "'${not_replaced}'::text",)  # created in the default schema, first on search_path


def test_flyway_built_in_placeholders_and_repeatables(fresh_db: str, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "V1__seen.sql").write_text(
        "CREATE SCHEMA IF NOT EXISTS ${flyway:defaultSchema};\n"
        "CREATE TABLE ${flyway:defaultSchema}.seen (name text PRIMARY KEY, value text);\n"
        "INSERT INTO ${flyway:defaultSchema}.seen VALUES ('defaultSchema', '${flyway:defaultSchema}'),\n"
        " ('user', '${flyway:user}'), ('database', '${flyway:database}'), ('timestamp', '${flyway:timestamp}'),\n"
        " ('filename', '${flyway:filename}'), ('workingDirectory', '${flyway:workingDirectory}'),\n"
        " ('table', '${FLYWAY:TABLE}'), ('colour', '${Colour}');\n")
    (folder / "R__colour_view.sql").write_text(
        "CREATE OR REPLACE VIEW ops.colour AS SELECT '${colour}'::text AS colour;\n")
    (folder / "afterMigrate.sql").write_text("INSERT INTO ${flyway:defaultSchema}.seen VALUES ('callback', "
                                             "'${flyway:filename}') ON CONFLICT (name) DO NOTHING;\n")

    def migrator(colour: str) -> Migrator:
        return Migrator(fresh_db, folder, schema="ops", table="history", placeholders={"colour": colour})

    migrator("blue").apply()
    with psycopg.connect(fresh_db) as conn:
        seen = dict(conn.execute("SELECT name, value FROM ops.seen").fetchall())
        assert conn.execute("SELECT colour FROM ops.colour").fetchone() == ("blue",)
    assert seen.pop("timestamp") and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
                                                  seen_ts := _value(fresh_db, "timestamp")), seen_ts
    assert seen == {"defaultSchema": "ops", "user": "postgres", "database": fresh_db.rsplit("/", 1)[1],
                    "filename": "V1__seen.sql", "workingDirectory": str(Path.cwd()), "table": "history",
                    "colour": "blue", "callback": "afterMigrate.sql"}
    assert migrator("blue").apply().applied == []  # same value: the repeatable is up to date
    again = migrator("green").apply()  # a new value re-applies the repeatable (its checksum is over the replaced text)
    assert [m.script for m in again.applied] == ["R__colour_view.sql"]
    migrator("green").validate()
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT colour FROM ops.colour").fetchone() == ("green",)


def _value(url: str, name: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT value FROM ops.seen WHERE name = %s", (name,)).fetchone()[0]  # type: ignore[index]


def test_versions_as_the_files_spell_them_ordered_numerically(fresh_db: str, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("V001__a.sql", "V002__b.sql", "V1.9__c.sql", "V1.10__d.sql", "V2_1__e.sql"):
        (folder / name).write_text(f"CREATE TABLE t_{name[1:].split('__')[0].replace('.', '_')} (id int);\n")
    applied = Migrator(fresh_db, folder).apply()
    assert [m.version for m in applied.applied] == ["001", "1.9", "1.10", "002", "2.1"]
    assert history(fresh_db, "public") == [(v, "SQL", True) for v in ("001", "1.9", "1.10", "002", "2.1")]
    # A history written by an older dbops (normalised: 1 for V001__) still validates and applies nothing again.
    with psycopg.connect(fresh_db) as conn:
        conn.execute("UPDATE flyway_schema_history SET version = ltrim(version, '0') WHERE version LIKE '0%'")
    assert history(fresh_db, "public")[0][0] == "1"
    Migrator(fresh_db, folder).validate()
    (folder / "V003__f.sql").write_text("CREATE TABLE t_f (id int);\n")
    assert {i.script: i.state for i in Migrator(fresh_db, folder).info()}["V001__a.sql"] == "success"
    assert [m.version for m in Migrator(fresh_db, folder).apply().applied] == ["003"]


def test_the_reference_schema_still_migrates_and_validates(migrated_db: str) -> None:
    migrator = Migrator(migrated_db, MIGRATIONS_DIR)
    migrator.validate()
    assert migrator.apply().applied == []
    versions = sorted(int(p.name[1:].split("__")[0]) for p in MIGRATIONS_DIR.glob("V*.sql"))  # gaps are allowed
    assert [v for v, _t, _s in history(migrated_db, "public")] == [str(n) for n in versions]


def test_drift_on_a_baselined_database_compares_with_what_the_baseline_adopted(
        foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    target, record = adopt(schema, url, tmp_path)
    schemas = list(schema.schemas)
    clean = detect_drift(url, target.migrations, schemas=schemas, target=target, record=record)
    assert clean.unchecked is None and clean.baseline == schema.baseline_version
    assert clean.lines() == [] and clean.expected_version == schema.next_version
    table = next(iter(schema.partitioned)).split(".")[0] + (".members" if schema.name == "library" else ".devices")
    with psycopg.connect(url) as conn:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN added_by_hand text")
    drifted = detect_drift(url, target.migrations, schemas=schemas, target=target, record=record)
    assert drifted.drifted and any(f"{table}.added_by_hand" in line and "only in the live database" in line
                                   for line in drifted.lines()), drifted.lines()
    # Without the record (baselined elsewhere) nothing can be compared: said, not reported as drift or as clean.
    elsewhere = detect_drift(url, target.migrations, schemas=schemas, target=target,
                             record=BaselineRecord.of(tmp_path / "other-home", target.name))
    assert elsewhere.changes == [] and elsewhere.unchecked and "no record" in elsewhere.unchecked
    meta = json.loads(record.meta_path.read_text())
    record.meta_path.write_text(json.dumps({**meta, "database": "another_database"}))  # a record of another database
    other = detect_drift(url, target.migrations, schemas=schemas, target=target, record=record)
    assert other.changes == [] and other.unchecked and "no record of its own baseline" in other.unchecked


def test_cli_baseline_and_refusal_with_the_targets_settings(pg_server, foreign_db: tuple[ForeignSchema, str],
                                                            tmp_path: Path) -> None:
    schema, url = foreign_db
    config = write_team_config(schema, tmp_path)
    env = dbops_env(pg_server, url, tmp_path, DBOPS_CONFIG=str(config), **{URL_ENV: url})
    env.pop("DBOPS_DATABASE_URL")
    refused = run_dbops(["migrate"], env)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), refused.stderr
    assert lines[0].endswith(REFUSAL) and pg_server.password not in refused.stderr
    baselined = run_dbops(["migrate", "baseline"], env)
    assert baselined.returncode == 0, baselined.stderr
    assert f"at version {schema.baseline_version} in {schema.default_schema}.flyway_schema_history" in baselined.stdout
    assert (Path(env["DBOPS_HOME"]) / "migrate" / schema.name / "baseline.sql").is_file()
    again = run_dbops(["migrate", "baseline", "--version", "7"], env)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1 and "already has" in again.stderr
    applied = run_dbops(["migrate"], env)
    assert applied.returncode == 0 and f"current version {schema.next_version}" in applied.stdout, applied.stderr
    info = run_dbops(["migrate", "info"], env)
    assert info.returncode == 0 and "baseline" in info.stdout and schema.baseline_version in info.stdout


def test_lint_sees_the_files_as_they_will_run(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    target = team_target(schema, url, tmp_path)
    assert [f for f in Migrator.for_target(url, target).lint() if f.level == "error"] == []
    folder = tmp_path / "m"
    folder.mkdir()
    risky = folder / "V9__risky.sql"
    table = next(iter(schema.partitioned)).split(".", 1)[1]  # a table of the default schema
    risky.write_text("-- placeholders replaced before squawk reads it\n"
                     f"CREATE INDEX notes_idx ON ${{flyway:defaultSchema}}.{table} (id);\n"
                     "COMMENT ON SCHEMA ${flyway:defaultSchema} IS '${undefined_one}';\n")
    findings = Migrator.for_target(url, target, locations=folder).lint()
    assert [(f.file, f.line, f.rule) for f in findings if f.level == "error"] == [
        (str(risky), 3, "dbops-placeholder")]
    defined = team_target(schema, url, tmp_path, migrations=folder,
                          placeholders={**schema.placeholders, "undefined_one": "x"})
    findings = Migrator.for_target(url, defined).lint()
    assert {(f.file, f.line, f.rule) for f in findings} == {(str(risky), 2, "require-concurrent-index-creation")}

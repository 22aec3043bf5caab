"""The migration runner against a real PostgreSQL: Flyway's rules, failures, concurrency and repair."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from dbops.errors import ConnectionFailed
from dbops.migrate import MigrationError, Migrator, Version, flyway_checksum
from dbops.pg.connect import connection
from dbops.pg.server import free_port
from dbops_tests.conftest import PROJECT_DIR


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def history(url: str) -> list[tuple]:
    with connection(url) as conn:
        return conn.execute(
            "SELECT installed_rank, version, description, type, script, checksum, success"
            " FROM public.flyway_schema_history ORDER BY installed_rank"
        ).fetchall()


def scalar(url: str, query: str):
    with connection(url) as conn:
        return conn.execute(query).fetchone()[0]


def test_versions_compare_numerically() -> None:
    assert Version.parse("1.2") < Version.parse("1.10")
    assert Version.parse("2") < Version.parse("10")
    assert Version.parse("1.0") == Version.parse("1") and Version.parse("1_1") == Version.parse("1.1")
    assert sorted(["10", "1.10", "1.2", "2", "1"], key=Version.parse) == ["1", "1.2", "1.10", "2", "10"]


def test_flyway_checksum_ignores_bom_and_line_endings() -> None:
    text = "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n"
    expected = zlib.crc32(b"CREATE TABLE a (id int);INSERT INTO a VALUES (1);")
    expected = expected - (1 << 32) if expected >= 1 << 31 else expected
    assert flyway_checksum(text) == expected
    assert flyway_checksum("\ufeff" + text.replace("\n", "\r\n")) == expected
    assert flyway_checksum(text.rstrip("\n")) == expected
    # Pinned values (CRC32 of the line bytes, as a signed int32: the second wraps negative like Flyway's Java int).
    assert flyway_checksum("SELECT 1;\n") == 78787420
    assert flyway_checksum("CREATE TABLE a (id int);\r\n") == -623083431


def test_applies_in_numeric_order_records_flyway_rows_and_is_idempotent(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__create.sql", "CREATE TABLE log (n numeric NOT NULL);\n")
    write(d, "V1.10__ten.sql", "INSERT INTO log VALUES (1.10);\n")
    write(d, "V1.2__two.sql", "INSERT INTO log VALUES (1.2);\n")
    write(d, "V2__two.sql", "INSERT INTO log VALUES (2);\n")
    write(d, "V10__ten.sql", "INSERT INTO log VALUES (10);\n")
    result = Migrator(fresh_db, d).apply()
    assert [m.version for m in result.applied] == ["1", "1.2", "1.10", "2", "10"]
    assert result.current_version == "10"
    with connection(fresh_db) as conn:
        order = [float(r[0]) for r in conn.execute("SELECT n FROM log ORDER BY ctid")]
    assert order == [1.2, 1.10, 2, 10]
    rows = history(fresh_db)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0][1:5] == ("1", "create", "SQL", "V1__create.sql")
    assert rows[0][5] == flyway_checksum((d / "V1__create.sql").read_text()) and all(r[6] for r in rows)
    assert Migrator(fresh_db, d).apply().applied == []
    assert len(history(fresh_db)) == 5


def test_history_table_has_flyways_layout(fresh_db: str, tmp_path: Path) -> None:
    write(tmp_path / "m", "V1__a.sql", "SELECT 1;\n")
    Migrator(fresh_db, tmp_path / "m").apply()
    with connection(fresh_db) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable FROM information_schema.columns"
            " WHERE table_name = 'flyway_schema_history' ORDER BY ordinal_position"
        ).fetchall()
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = "
                                              "'flyway_schema_history'")}
    assert columns == [
        ("installed_rank", "integer", None, "NO"), ("version", "character varying", 50, "YES"),
        ("description", "character varying", 200, "NO"), ("type", "character varying", 20, "NO"),
        ("script", "character varying", 1000, "NO"), ("checksum", "integer", None, "YES"),
        ("installed_by", "character varying", 100, "NO"),
        ("installed_on", "timestamp without time zone", None, "NO"), ("execution_time", "integer", None, "NO"),
        ("success", "boolean", None, "NO"),
    ]
    assert indexes == {"flyway_schema_history_pk", "flyway_schema_history_s_idx"}


def test_repeatable_reapplied_only_when_changed_and_callbacks_not_recorded(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__t.sql", "CREATE TABLE t (id int); CREATE TABLE calls (event text);\n")
    write(d, "R__view.sql", "CREATE OR REPLACE VIEW v AS SELECT id FROM t;\n")
    write(d, "afterMigrate.sql", "INSERT INTO calls VALUES ('after');\n")
    write(d, "afterMigrateApplied__count.sql", "INSERT INTO calls VALUES ('applied');\n")
    Migrator(fresh_db, d).apply()
    assert Migrator(fresh_db, d).apply().applied == []
    write(d, "R__view.sql", "CREATE OR REPLACE VIEW v AS SELECT id, id * 2 AS twice FROM t;\n")
    again = Migrator(fresh_db, d).apply()
    assert [(m.version, m.script) for m in again.applied] == [(None, "R__view.sql")]
    assert scalar(fresh_db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'v'") == 2
    # As in Flyway: afterMigrate after every run, afterMigrateApplied only after runs that applied something.
    assert scalar(fresh_db, "SELECT count(*) FILTER (WHERE event = 'after') FROM calls") == 3
    assert scalar(fresh_db, "SELECT count(*) FILTER (WHERE event = 'applied') FROM calls") == 2
    scripts = [r[4] for r in history(fresh_db)]
    assert scripts == ["V1__t.sql", "R__view.sql", "R__view.sql"]
    assert [i.state for i in Migrator(fresh_db, d).info()] == ["success", "success"]


def test_edited_applied_migration_is_a_checksum_mismatch(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    path = write(d, "V1__a.sql", "CREATE TABLE a (id int);\n")
    Migrator(fresh_db, d).apply()
    old = flyway_checksum(path.read_text())
    path.write_text("CREATE TABLE a (id bigint);\n")
    new = flyway_checksum(path.read_text())
    with pytest.raises(MigrationError) as info:
        Migrator(fresh_db, d).validate()
    message = str(info.value)
    assert "checksum mismatch" in message and "V1__a.sql" in message
    assert str(old) in message and str(new) in message and "\n" not in message
    with pytest.raises(MigrationError, match="checksum mismatch"):
        Migrator(fresh_db, d).apply()
    # repair realigns the recorded checksum with the file
    result = Migrator(fresh_db, d).repair()
    assert result.realigned == ["V1__a.sql"]
    Migrator(fresh_db, d).validate()
    assert history(fresh_db)[0][5] == new


def test_failed_migration_leaves_earlier_ones_and_nothing_of_itself(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__a.sql", "CREATE TABLE a (id int);\n")
    write(d, "V2__b.sql", "CREATE TABLE b (id int);\n")
    bad = write(d, "V3__c.sql", "CREATE TABLE c (id int);\n\n-- the next statement is wrong\nINSERT INTO c\n  "
                "VALUES ('not a number');\n")
    with pytest.raises(MigrationError) as info:
        Migrator(fresh_db, d).apply()
    message = str(info.value)
    assert "V3__c.sql line 5" in message and "invalid input syntax for type integer" in message
    assert [r[1] for r in history(fresh_db)] == ["1", "2"]
    assert scalar(fresh_db, "SELECT to_regclass('public.c') IS NULL")
    assert Migrator(fresh_db, d).current_version() == "2"
    bad.write_text("CREATE TABLE c (id int);\nINSERT INTO c VALUES (3);\n")
    assert [m.version for m in Migrator(fresh_db, d).apply().applied] == ["3"]


def test_no_transaction_migration_creates_index_concurrently(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__t.sql", "CREATE TABLE t (id bigint PRIMARY KEY, note text);\n")
    write(d, "V2__idx.sql", "-- dbops:no-transaction\n-- dbops:lock_timeout=2s\n"
          "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_note_idx ON t (note);\n")
    Migrator(fresh_db, d).apply()
    assert scalar(fresh_db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_note_idx'::regclass")


def test_failed_no_transaction_migration_is_recorded_and_repaired(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__t.sql", "CREATE TABLE t (id bigint PRIMARY KEY, note text);\n")
    bad = write(d, "V2__idx.sql", "-- dbops:no-transaction\nCREATE INDEX CONCURRENTLY t_idx ON t (nope);\n")
    with pytest.raises(MigrationError, match="V2__idx.sql line 2.*repair"):
        Migrator(fresh_db, d).apply()
    assert [(r[1], r[6]) for r in history(fresh_db)] == [("1", True), ("2", False)]
    bad.write_text("-- dbops:no-transaction\nCREATE INDEX CONCURRENTLY t_idx ON t (note);\n")
    with pytest.raises(MigrationError, match="failed in an earlier run"):
        Migrator(fresh_db, d).apply()
    assert Migrator(fresh_db, d).repair().removed_failed == 1
    assert [m.version for m in Migrator(fresh_db, d).apply().applied] == ["2"]


CONCURRENT_SCRIPT = """
import sys
from dbops.migrate import Migrator
result = Migrator(sys.argv[1], sys.argv[2]).apply()
print(",".join(m.version or "R" for m in result.applied))
"""


def test_two_concurrent_processes_apply_each_version_once(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__slow.sql", "CREATE TABLE hits (v text);\nINSERT INTO hits VALUES ('1');\nSELECT pg_sleep(1);\n")
    write(d, "V2__slow.sql", "INSERT INTO hits VALUES ('2');\nSELECT pg_sleep(1);\n")
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_SCRIPT, fresh_db, str(d)], cwd=PROJECT_DIR,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    applied = sorted(out.strip() for out, _err in outputs)
    assert applied == ["", "1,2"]
    assert scalar(fresh_db, "SELECT string_agg(v, ',' ORDER BY v) FROM hits") == "1,2"
    assert [r[1] for r in history(fresh_db)] == ["1", "2"]


@pytest.mark.parametrize("name", ["V2_add.sql", "v2__lower.sql", "V__noversion.sql", "V2.x__bad.sql"])
def test_malformed_file_name_is_a_clear_error(fresh_db: str, tmp_path: Path, name: str) -> None:
    write(tmp_path / "m", name, "SELECT 1;\n")
    with pytest.raises(MigrationError, match=f"malformed migration file name .*{name}.*V<version>__<description>"):
        Migrator(fresh_db, tmp_path / "m").apply()
    assert scalar(fresh_db, "SELECT to_regclass('public.flyway_schema_history') IS NULL")


def test_duplicate_version_and_missing_folder(fresh_db: str, tmp_path: Path) -> None:
    write(tmp_path / "m", "V2__one.sql", "SELECT 1;\n")
    write(tmp_path / "m", "V2.0__two.sql", "SELECT 2;\n")
    with pytest.raises(MigrationError, match="duplicate migration version 2"):
        Migrator(fresh_db, tmp_path / "m").apply()
    with pytest.raises(MigrationError, match="does not exist"):
        Migrator(fresh_db, tmp_path / "nowhere").apply()


def test_unreachable_server_and_wrong_password(pg_server, tmp_path: Path) -> None:
    write(tmp_path / "m", "V1__a.sql", "SELECT 1;\n")
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        Migrator(f"postgresql://postgres:pw@127.0.0.1:{free_port()}/x", tmp_path / "m").apply()
    wrong = pg_server.url("postgres").replace(pg_server.password, "not-the-password")
    with pytest.raises(ConnectionFailed, match="password authentication failed") as info:
        Migrator(wrong, tmp_path / "m").apply()
    assert "not-the-password" not in str(info.value)


def test_baseline_then_migrate_skips_older_versions(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__old.sql", "CREATE TABLE should_not_exist (id int);\n")
    write(d, "V2__old.sql", "CREATE TABLE nor_this (id int);\n")
    write(d, "V3__new.sql", "CREATE TABLE new_one (id int);\n")
    Migrator(fresh_db, d).baseline("2")
    assert history(fresh_db)[0][1:6] == ("2", "<< Flyway Baseline >>", "BASELINE", "<< Flyway Baseline >>", None)
    assert [m.version for m in Migrator(fresh_db, d).apply().applied] == ["3"]
    assert scalar(fresh_db, "SELECT to_regclass('public.should_not_exist') IS NULL")
    states = {i.version: i.state for i in Migrator(fresh_db, d).info()}
    assert states == {"1": "below baseline", "2": "baseline", "3": "success"}
    with pytest.raises(MigrationError, match="already has"):
        Migrator(fresh_db, d).baseline("5")


def test_missing_file_fails_validation_and_repair_marks_it_deleted(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__a.sql", "SELECT 1;\n")
    gone = write(d, "V2__b.sql", "SELECT 2;\n")
    write(d, "V3__c.sql", "SELECT 3;\n")
    Migrator(fresh_db, d).apply()
    gone.unlink()
    with pytest.raises(MigrationError, match="V2__b.sql .*file is missing"):
        Migrator(fresh_db, d).validate()
    assert Migrator(fresh_db, d).repair().marked_deleted == ["V2__b.sql"]
    Migrator(fresh_db, d).validate()


def test_out_of_order_only_with_the_flag(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__a.sql", "CREATE TABLE a (id int);\n")
    write(d, "V3__c.sql", "CREATE TABLE c (id int);\n")
    Migrator(fresh_db, d).apply()
    write(d, "V2__b.sql", "CREATE TABLE b (id int);\n")
    assert {i.version: i.state for i in Migrator(fresh_db, d).info()}["2"] == "ignored"
    with pytest.raises(MigrationError, match="V2__b.sql is pending but older"):
        Migrator(fresh_db, d).apply()
    assert [m.version for m in Migrator(fresh_db, d, out_of_order=True).apply().applied] == ["2"]


def test_target_stops_at_a_version(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    for v in ("1", "2", "3"):
        write(d, f"V{v}__s.sql", f"CREATE TABLE t{v} (id int);\n")
    assert [m.version for m in Migrator(fresh_db, d).apply(target="2").applied] == ["1", "2"]
    assert [i.state for i in Migrator(fresh_db, d).info()] == ["success", "success", "pending"]


def test_history_written_by_flyway_validates_under_dbops(fresh_db: str, tmp_path: Path) -> None:
    """Rows inserted exactly as Flyway writes them (ranks, types, its checksums) are accepted and continued."""
    d = tmp_path / "m"
    first = write(d, "V1__create_users.sql", "\ufeffCREATE TABLE users (id bigint PRIMARY KEY);\r\n")
    second = write(d, "V1.1__add_email.sql", "ALTER TABLE users ADD COLUMN email text;\r\n")
    write(d, "V2__add_index.sql", "CREATE INDEX users_email_idx ON users (email);\n")
    with connection(fresh_db) as conn:
        conn.execute(
            """
            CREATE TABLE public.flyway_schema_history (
                installed_rank INT NOT NULL, version VARCHAR(50), description VARCHAR(200) NOT NULL,
                type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL, checksum INTEGER,
                installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT now(),
                execution_time INTEGER NOT NULL, success BOOLEAN NOT NULL);
            ALTER TABLE public.flyway_schema_history ADD CONSTRAINT flyway_schema_history_pk
                PRIMARY KEY (installed_rank);
            CREATE INDEX flyway_schema_history_s_idx ON public.flyway_schema_history (success);
            CREATE TABLE users (id bigint PRIMARY KEY, email text);
            """
        )
        for rank, (version, desc, path) in enumerate(
            [("1", "create users", first), ("1.1", "add email", second)], start=1
        ):
            crc = zlib.crc32(path.read_bytes().decode("utf-8-sig").replace("\r\n", "").encode())
            conn.execute(
                "INSERT INTO public.flyway_schema_history VALUES (%s, %s, %s, 'SQL', %s, %s, 'flyway', now(), 12, "
                "true)", [rank, version, desc, path.name, crc - (1 << 32) if crc >= 1 << 31 else crc],
            )
    migrator = Migrator(fresh_db, d)
    migrator.validate()
    assert [m.version for m in migrator.apply().applied] == ["2"]
    assert [r[0] for r in history(fresh_db)] == [1, 2, 3]


def test_flyway_script_conf_execute_in_transaction_false(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__t.sql", "CREATE TABLE t (id bigint PRIMARY KEY, note text);\n")
    write(d, "V2__idx.sql", "CREATE INDEX CONCURRENTLY t_note_idx ON t (note);\n")
    write(d, "V2__idx.sql.conf", "# Flyway per-script config\nexecuteInTransaction=false\n")
    with pytest.raises(MigrationError, match=r"V2__idx.sql line 1: CREATE INDEX CONCURRENTLY cannot run inside"):
        Migrator(fresh_db, _without_conf(d)).apply()
    Migrator(fresh_db, d).apply()
    assert scalar(fresh_db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_note_idx'::regclass")


def _without_conf(d: Path) -> Path:
    """A copy of ``d`` without its .conf files: the same script must then fail inside a transaction."""
    other = d.parent / (d.name + "_noconf")
    for path in d.glob("*.sql"):
        write(other, path.name, path.read_text())
    return other


def test_default_timeouts_and_per_file_overrides(fresh_db: str, tmp_path: Path) -> None:
    d = tmp_path / "m"
    write(d, "V1__t.sql", "CREATE TABLE seen (v text, lock text, stmt text);\n"
          "INSERT INTO seen VALUES ('1', current_setting('lock_timeout'), current_setting('statement_timeout'));\n")
    write(d, "V2__slow.sql", "-- dbops:lock_timeout=3s\n-- dbops:statement_timeout=1h\n"
          "INSERT INTO seen VALUES ('2', current_setting('lock_timeout'), current_setting('statement_timeout'));\n")
    Migrator(fresh_db, d).apply()
    with connection(fresh_db) as conn:
        rows = conn.execute("SELECT v, lock, stmt FROM seen ORDER BY v").fetchall()
    assert rows == [("1", "10s", "30min"), ("2", "3s", "1h")]


def test_validate_info_baseline_and_repair_callbacks_run_in_name_order(fresh_db: str, tmp_path: Path) -> None:
    with connection(fresh_db) as conn:
        conn.execute("CREATE TABLE calls (n serial, event text)")
    d = tmp_path / "m"
    for event in ("beforeBaseline", "afterBaseline", "beforeValidate", "afterValidate", "beforeInfo", "afterInfo",
                  "beforeRepair", "afterRepair"):
        write(d, f"{event}.sql", f"INSERT INTO calls (event) VALUES ('{event}');\n")  # noqa: S608 - test fixture text
    write(d, "afterValidate__b.sql", "INSERT INTO calls (event) VALUES ('afterValidate__b');\n")
    write(d, "afterValidate__a.sql", "INSERT INTO calls (event) VALUES ('afterValidate__a');\n")
    write(d, "V2__t.sql", "CREATE TABLE t (id int);\n")
    m = Migrator(fresh_db, d)
    m.baseline("1")
    m.validate()
    m.info()
    m.repair()
    with connection(fresh_db) as conn:
        events = [r[0] for r in conn.execute("SELECT event FROM calls ORDER BY n")]
    assert events == ["beforeBaseline", "afterBaseline", "beforeValidate", "afterValidate", "afterValidate__a",
                      "afterValidate__b", "beforeInfo", "afterInfo", "beforeRepair", "afterRepair"]
    assert [r[4] for r in history(fresh_db)] == ["<< Flyway Baseline >>"]  # callbacks are never recorded

"""Integrity validation of databases dbops did not create (dbops_tests/foreign: library, telemetry) and of the reference
schema: the rules come from each database's own catalog, clean data passes having evaluated something, a planted
violation of every derived rule kind is found and named, and checking nothing is a warning, never a pass.

How a violation of an enforced constraint is planted (PostgreSQL would refuse the row otherwise): the rules are derived
first (an :class:`IntegrityValidator` plans its checks from the catalog when it is built), then

* NOT NULL, CHECK, primary key and UNIQUE: the constraint is dropped and the bad row written: the rule derived before
  still holds it (a primary key that a foreign key depends on is dropped CASCADE, after the foreign keys are planted);
* a NOT VALID CHECK, of a table or of a domain: the constraint is dropped, the old row made bad, the constraint added
  back ``NOT VALID``, as a team adds one on a big table: PostgreSQL never looks at that row again;
* an exclusion constraint: dropped, an overlapping row written;
* a foreign key, from or onto a partitioned table: written with ``session_replication_role = replica`` (as a superuser),
  where the triggers that enforce foreign keys do not fire, as during a careless restore.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from dbops.components.naming import op_name
from dbops.components.resources import DatabaseResource
from dbops.components.validate.assets import build
from dbops.errors import ConfigError
from dbops.pg.connect import connection
from dbops.settings import Settings, load_settings
from dbops.validate.amcheck import check_indexes
from dbops.validate.cli import EXIT_NOTHING_CHECKED, main
from dbops.validate.rules import RuleFileError
from dbops.validate.run import IntegrityValidator, ValidationReport, days_between
from dbops_tests.foreign import LIBRARY, ForeignSchema, create

DAYS = 30
TARGET = "dbops"

# Each team database's tables validated by day: its time-partitioned table (on the partition key) and the table with
# a foreign key onto it (on the key column it copies); every other table is validated as a whole.
BY_DAY = {
    "library": {"lending.loans": "loaned_on", "lending.loan_events": "loaned_on"},
    "telemetry": {"iot.readings": "recorded_at", "iot.alarms": "recorded_at"},
}
WHOLE = {
    "library": {"lending.members", "lending.books", "public.branches"},
    "telemetry": {"iot.devices", "public.sites", "public.site_outages"},
}


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def last_days(n: int) -> list[date]:
    return days_between(yesterday() - timedelta(days=n - 1), yesterday())


def team_settings(url: str, schema: ForeignSchema, home: Path) -> Settings:
    """The settings of a target that is a team's database: its own migrations, hence no rule files, no matrix."""
    return load_settings({"DBOPS_DATABASE_URL": url, "DBOPS_MIGRATIONS": str(schema.migrations),
                          "DBOPS_HOME": str(home)})


def found(reports: list[ValidationReport]) -> dict[tuple[str, str, str], int]:
    return {(r.scope, f.table, f.rule): f.unexpected for r in reports for f in r.failures}


def test_clean_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path) -> None:
    schema, url = foreign_db
    target = team_settings(url, schema, tmp_path).target()
    assert target.validation.expectations is None and target.access_control is None and target.schemas == ()
    started = time.monotonic()
    with IntegrityValidator.for_target(url, target) as validator:
        by_day = {p.name: p.time_column for p in validator.fact_plans}
        whole = {p.name for p in validator.dimension_plans}
        rules = {p.name: [c.rule for c in p.checks] for p in validator.plans}
        reports = validator.validate_days(last_days(DAYS))
        dims = validator.validate_dimensions()
    seconds = time.monotonic() - started
    print(f"{schema.name}: {DAYS} days and the whole tables validated in {seconds:.1f} s")

    # The split comes from the catalog; partitions are not tables of their own; every user schema is covered.
    assert by_day == BY_DAY[schema.name]
    assert whole == WHOLE[schema.name]
    assert set(validator.schemas) >= set(schema.schemas)
    for name, names in rules.items():
        assert len(names) == len(set(names)), f"{name} has a rule twice: {names}"
    # The promises of each kind are all there (a NOT VALID check included).
    kinds = {c.kind for p in validator.plans for c in p.checks}
    exclusion = {"exclusion"} if schema.name == "telemetry" else set()  # site_outages: EXCLUDE USING gist
    assert kinds == {"not_null", "unique", "foreign_key", "check"} | exclusion
    assert "check books_title_length" in rules.get("lending.books", ["check books_title_length"])
    assert "check devices_serial_format" in rules.get("iot.devices", ["check devices_serial_format"])

    assert found([*reports, dims]) == {}
    assert len(reports) == DAYS
    for report in reports:
        assert report.rows > 0 and report.evaluated > 0 and not report.nothing_checked, report.render()
    assert dims.evaluated > 0 and not dims.nothing_checked


def plant_library(conn: psycopg.Connection, days: list[date]) -> dict[tuple[str, str, str], int]:
    d_from, d_onto, d_pk = days[2], days[12], days[22]
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        # A loan of a member that does not exist: the foreign key FROM the partitioned table.
        conn.execute("INSERT INTO lending.loans (loaned_on, member_id, book_id, due_on) VALUES (%s, 999999, 1, %s)",
                     (d_from, d_from + timedelta(days=21)))
        # An event of a loan that does not exist: the foreign key ONTO the partitioned table.
        conn.execute("INSERT INTO lending.loan_events (loan_id, loaned_on, kind) VALUES (999999, %s, 'reminded')",
                     (d_onto,))
    conn.execute("ALTER TABLE lending.loans DROP CONSTRAINT loans_pkey CASCADE")  # loan_events' foreign key with it
    conn.execute(
        "INSERT INTO lending.loans (id, loaned_on, member_id, book_id, status, due_on) OVERRIDING SYSTEM VALUE "
        "SELECT id, loaned_on, member_id, book_id, status, due_on FROM lending.loans WHERE loaned_on = %s LIMIT 1",
        (d_pk,),
    )
    conn.execute("ALTER TABLE lending.members ALTER COLUMN full_name DROP NOT NULL")
    conn.execute("UPDATE lending.members SET full_name = NULL WHERE id = 1")
    conn.execute("ALTER TABLE lending.members DROP CONSTRAINT members_email_key")
    conn.execute("UPDATE lending.members SET email = (SELECT email FROM lending.members WHERE id = 2) WHERE id = 3")
    conn.execute("ALTER TABLE lending.books DROP CONSTRAINT books_copies_check")
    conn.execute("UPDATE lending.books SET copies = -1 WHERE id = 4")
    conn.execute("ALTER TABLE lending.books DROP CONSTRAINT books_title_length")
    conn.execute("UPDATE lending.books SET title = repeat('x', 300) WHERE id = 5")
    conn.execute("ALTER TABLE lending.books ADD CONSTRAINT books_title_length CHECK (length(title) <= 200) NOT VALID")
    conn.execute("ALTER DOMAIN lending.isbn13 DROP CONSTRAINT isbn13_check")
    conn.execute("UPDATE lending.books SET isbn = '12345' WHERE id = 6")
    conn.execute(
        "ALTER DOMAIN lending.isbn13 ADD CONSTRAINT isbn13_check CHECK (VALUE ~ '^97[89][0-9]{10}$') NOT VALID"
    )
    return {
        (d_from.isoformat(), "lending.loans", "foreign_key loans_member_id_fkey"): 1,
        (d_onto.isoformat(), "lending.loan_events", "foreign_key loan_events_loan_id_loaned_on_fkey"): 1,
        (d_pk.isoformat(), "lending.loans", "primary_key loans_pkey"): 1,
        ("dimensions", "lending.members", "not_null full_name"): 1,
        ("dimensions", "lending.members", "unique members_email_key"): 1,
        ("dimensions", "lending.books", "check books_copies_check"): 1,
        ("dimensions", "lending.books", "check books_title_length"): 1,
        ("dimensions", "lending.books", "domain_check lending.isbn13 isbn (isbn13_check)"): 1,
    }


def plant_telemetry(conn: psycopg.Connection, days: list[date]) -> dict[tuple[str, str, str], int]:
    d_from, d_onto, d_pk, d_check = days[3], days[13], days[23], days[27]
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        # A reading of a device that does not exist: the foreign key FROM the partitioned table.
        conn.execute("INSERT INTO iot.readings (device_id, recorded_at, value) VALUES (999, %s, 1)",
                     (f"{d_from} 05:00:00+00",))
        # An alarm on a reading that does not exist: the foreign key ONTO the partitioned table.
        conn.execute("INSERT INTO iot.alarms (device_id, recorded_at, severity) VALUES (1, %s, 3)",
                     (f"{d_onto} 05:43:21+00",))
    conn.execute("ALTER TABLE iot.readings DROP CONSTRAINT readings_pkey CASCADE")  # alarms' foreign key with it
    conn.execute(
        "INSERT INTO iot.readings SELECT * FROM iot.readings WHERE recorded_at >= %s::timestamptz "
        "AND recorded_at < %s::timestamptz + interval '1 day' ORDER BY recorded_at LIMIT 1",
        (f"{d_pk} 00:00:00+00", f"{d_pk} 00:00:00+00"),
    )
    conn.execute("ALTER TABLE iot.alarms DROP CONSTRAINT alarms_severity_check")
    conn.execute(
        "UPDATE iot.alarms SET severity = 9 WHERE id = (SELECT min(id) FROM iot.alarms WHERE recorded_at >= "
        "%s::timestamptz AND recorded_at < %s::timestamptz + interval '1 day')",
        (f"{d_check} 00:00:00+00", f"{d_check} 00:00:00+00"),
    )
    conn.execute("ALTER TABLE iot.devices ALTER COLUMN site_code DROP NOT NULL")
    conn.execute("UPDATE iot.devices SET site_code = NULL WHERE id = 1")
    conn.execute("ALTER TABLE iot.devices DROP CONSTRAINT devices_serial_key")
    conn.execute("UPDATE iot.devices SET serial = 'DV-1004' WHERE id = 3")
    conn.execute("ALTER TABLE iot.devices DROP CONSTRAINT devices_serial_format")
    conn.execute("UPDATE iot.devices SET serial = 'bad serial' WHERE id = 2")
    conn.execute(
        "ALTER TABLE iot.devices ADD CONSTRAINT devices_serial_format CHECK (serial ~ '^[A-Z]{2}-[0-9]+$') NOT VALID"
    )
    conn.execute("ALTER TABLE public.site_outages DROP CONSTRAINT site_outages_during_excl")
    conn.execute("INSERT INTO public.site_outages (site_code, during) "
                 "SELECT site_code, during FROM public.site_outages WHERE id = 1")
    conn.execute("ALTER DOMAIN iot.percent DROP CONSTRAINT percent_check")
    conn.execute("UPDATE iot.devices SET battery = 150 WHERE id = 5")
    conn.execute("ALTER DOMAIN iot.percent ADD CONSTRAINT percent_check CHECK (VALUE BETWEEN 0 AND 100) NOT VALID")
    return {
        (d_from.isoformat(), "iot.readings", "foreign_key readings_device_id_fkey"): 1,
        (d_onto.isoformat(), "iot.alarms", "foreign_key alarms_device_id_recorded_at_fkey"): 1,
        (d_pk.isoformat(), "iot.readings", "primary_key readings_pkey"): 1,
        (d_check.isoformat(), "iot.alarms", "check alarms_severity_check"): 1,
        ("dimensions", "iot.devices", "not_null site_code"): 1,
        ("dimensions", "iot.devices", "unique devices_serial_key"): 1,
        ("dimensions", "iot.devices", "check devices_serial_format"): 1,
        ("dimensions", "iot.devices", "domain_check iot.percent battery (percent_check)"): 1,
        ("dimensions", "public.site_outages", "exclusion site_outages_during_excl"): 2,  # both rows of the pair
    }


PLANT: dict[str, Callable[[psycopg.Connection, list[date]], dict[tuple[str, str, str], int]]] = {
    "library": plant_library,
    "telemetry": plant_telemetry,
}


def test_each_derived_rule_kind_planted_in_a_team_database(foreign_db: tuple[ForeignSchema, str],
                                                           tmp_path: Path) -> None:
    schema, url = foreign_db
    target = team_settings(url, schema, tmp_path).target()
    days = last_days(DAYS)
    with IntegrityValidator.for_target(url, target) as validator:  # the rules, derived before anything is planted
        with connection(url) as conn:
            expected = PLANT[schema.name](conn, days)
        reports = [*validator.validate_days(days), validator.validate_dimensions()]
    assert found(reports) == expected
    kinds = {rule.split()[0] for _, _, rule in expected}
    assert kinds >= {"not_null", "check", "unique", "primary_key", "foreign_key", "domain_check"}
    samples = {f.rule: f.samples for r in reports for f in r.failures}
    assert all(samples.values()), samples  # every failure shows the row(s) at fault

    # Derived again now, the NOT VALID checks are still rules (PostgreSQL never checked those old rows).
    with IntegrityValidator.for_target(url, target) as again:
        dims = again.validate_dimensions()
    not_valid = {r for _, _, r in expected if "title_length" in r or "serial_format" in r or "domain" in r}
    assert len(not_valid) == 2 and not_valid <= {f.rule for f in dims.failures}
    # amcheck's report lists them, the domain's included, and checked every index of the schemas.
    with connection(url) as conn:
        indexes = check_indexes(conn)
    assert indexes.checked > 0 and indexes.reason is None and not indexes.problems
    names = {"library": {"books_title_length", "isbn13_check"}, "telemetry": {"devices_serial_format", "percent_check"}}
    assert {c.name for c in indexes.not_valid} == names[schema.name]


def test_each_derived_rule_kind_planted_in_the_reference_schema(seeded_db: str) -> None:
    """The kinds test_integrity does not plant (it plants the foreign key onto the partitioned orders, a NOT VALID
    NOT NULL and a NOT VALID CHECK): a foreign key from the partitioned orders, a primary key, a UNIQUE, a CHECK and a
    NOT NULL PostgreSQL enforced until they were dropped."""
    day = last_days(DAYS)[5]
    with IntegrityValidator(seeded_db) as validator:
        with connection(seeded_db) as conn:
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")
                conn.execute(
                    "UPDATE app.orders SET user_id = 987654321 WHERE (tenant_id, id, created_at) = (SELECT tenant_id, "
                    "id, created_at FROM app.orders WHERE created_at >= %s::date AND created_at < %s::date + 1 "
                    "ORDER BY id LIMIT 1)",
                    (day, day),
                )
            conn.execute("ALTER TABLE app.inventory DROP CONSTRAINT inventory_pkey")
            conn.execute("INSERT INTO app.inventory SELECT * FROM app.inventory LIMIT 1")
            conn.execute("ALTER TABLE app.users DROP CONSTRAINT users_tenant_email_key")
            conn.execute("DROP INDEX app.users_tenant_lower_email_key")  # V10's case-insensitive one would refuse too
            first, second = conn.execute(
                "SELECT id FROM app.users WHERE tenant_id = (SELECT min(tenant_id) FROM app.users) ORDER BY id LIMIT 2"
            ).fetchall()
            conn.execute("UPDATE app.users SET email = (SELECT email FROM app.users WHERE id = %s) WHERE id = %s",
                         (first[0], second[0]))
            conn.execute("ALTER TABLE app.products DROP CONSTRAINT products_price_check")
            conn.execute("UPDATE app.products SET price = -1 WHERE id = (SELECT min(id) FROM app.products)")
            conn.execute("ALTER TABLE app.tenants ALTER COLUMN name DROP NOT NULL")
            conn.execute("UPDATE app.tenants SET name = NULL WHERE id = (SELECT min(id) FROM app.tenants)")
        reports = [validator.validate_day(day), validator.validate_dimensions()]
    assert found(reports) == {
        (day.isoformat(), "app.orders", "foreign_key orders_user_fkey"): 1,
        ("dimensions", "app.inventory", "primary_key inventory_pkey"): 1,
        ("dimensions", "app.users", "unique users_tenant_email_key"): 1,
        ("dimensions", "app.products", "check products_price_check"): 1,
        ("dimensions", "app.tenants", "not_null name"): 1,
    }
    # users.email is sensitive (sql/access-control.yml): the duplicate's sample shows it masked.
    by_rule = {f.rule: f.samples for r in reports for f in r.failures}
    assert by_rule["unique users_tenant_email_key"][0]["email"] == "***"


def test_empty_database_checks_nothing_and_says_why(fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    env = {"DBOPS_DATABASE_URL": fresh_db, "DBOPS_MIGRATIONS": str(tmp_path), "DBOPS_HOME": str(tmp_path / "home")}
    settings = load_settings(env)
    with IntegrityValidator.for_target(fresh_db, settings.target()) as validator:
        day = validator.validate_day(yesterday())
        dims = validator.validate_dimensions()
    assert day.nothing_checked and "has a time column" in (day.reason or "")
    assert dims.nothing_checked and "no table" in (dims.reason or "")
    with connection(fresh_db) as conn:
        assert check_indexes(conn).reason == "no btree index in public"

    assert main(["--indexes"], settings) == EXIT_NOTHING_CHECKED
    out = capsys.readouterr().out
    assert "nothing checked: " in out.splitlines()[-1] and "no btree index" in out

    # The Dagster checks warn with the reason: none passes.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.ephemeral()
    integrity_validation, dimension_integrity, index_integrity = build(TARGET)
    resources = {"database": DatabaseResource(url=fresh_db)}
    runs = [([dimension_integrity], None), ([index_integrity], None), ([integrity_validation], yesterday().isoformat())]
    for assets, partition in runs:
        result = dg.materialize(assets, instance=instance, resources=resources, partition_key=partition)
        evaluation = result.get_asset_check_evaluations()[0]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.metadata["reason"].value


def test_empty_day_warns(foreign_db: tuple[ForeignSchema, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    schema, url = foreign_db
    # Before the seeded data (60 days of loans, 35 of readings) but still inside the tables' partitions.
    empty = datetime.now(UTC).date() - timedelta(days=70 if schema.name == "library" else 38)
    settings = team_settings(url, schema, tmp_path)
    with IntegrityValidator.for_target(url, settings.target()) as validator:
        report = validator.validate_day(empty)
    assert report.nothing_checked and report.rows == 0
    assert report.reason and report.reason.startswith(f"no rows on {empty}")

    assert main(["--from", empty.isoformat(), "--no-dimensions"], settings) == EXIT_NOTHING_CHECKED
    out = capsys.readouterr().out
    assert f"nothing checked: {empty}: no rows on {empty}" in out
    # A day with rows exits 0.
    assert main(["--from", yesterday().isoformat()], settings) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no integrity violations"

    # The daily asset of a team target: WARN on the empty day, a pass on a day with rows.
    monkeypatch.setenv("DBOPS_DATABASE_URL", url)
    monkeypatch.setenv("DBOPS_MIGRATIONS", str(schema.migrations))
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    # The partitions start at the configured day, before the oldest row (they would start at the oldest row else).
    monkeypatch.setenv("DBOPS_VALIDATION_START_DATE", empty.isoformat())
    integrity_validation = build(TARGET)[0]
    instance = dg.DagsterInstance.ephemeral()
    resources = {"database": DatabaseResource(url=url)}
    result = dg.materialize([integrity_validation], instance=instance, resources=resources,
                            partition_key=empty.isoformat())
    evaluation = result.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["reason"].value.startswith(f"{empty}: no rows on {empty}")
    result = dg.materialize([integrity_validation], instance=instance, resources=resources,
                            partition_key=yesterday().isoformat())
    assert [e.passed for e in result.get_asset_check_evaluations()] == [True]
    meta = result.asset_materializations_for_node(op_name(TARGET, "integrity_validation"))[0].metadata
    assert meta["expectations_evaluated"].value > 0 and meta["rows"].value > 0
    assert set(meta["tables"].value.split(", ")) == set(BY_DAY[schema.name])

    # One ranged run over empty days and days with rows: each partition says its own; an empty one is `no rows`
    # (nothing evaluated), never passed; the run's check is a WARN naming exactly the empty days.
    last = empty + timedelta(days=15)
    ranged = dg.materialize([integrity_validation], instance=instance, resources=resources,
                            tags={ASSET_PARTITION_RANGE_START_TAG: empty.isoformat(),
                                  ASSET_PARTITION_RANGE_END_TAG: last.isoformat()})
    by_day = {m.partition: m.metadata for m in ranged.asset_materializations_for_node(
        op_name(TARGET, "integrity_validation"))}
    assert len(by_day) == 16
    empty_days = {day for day, meta in by_day.items() if meta["rows"].value == 0}
    assert empty.isoformat() in empty_days and len(empty_days) < 16
    for day, meta in by_day.items():
        if day in empty_days:
            assert meta["status"].value == "no rows" and meta["expectations_evaluated"].value == 0
            assert meta["reason"].value.startswith(f"no rows on {day}")
        else:
            assert meta["status"].value == "passed" and meta["expectations_evaluated"].value > 0
            assert "reason" not in meta
    evaluation = ranged.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    listed = {r.data["partition"] for r in evaluation.metadata["partitions_not_checked"].value.records}
    assert listed == empty_days and evaluation.metadata["partitions_nothing_checked"].value == len(empty_days)


def test_configured_time_columns(seeded_db: str, tmp_path: Path) -> None:
    """`validation.time_columns` puts a table without a time partition key into daily slices; a configured column
    that is not a date or timestamp, or a table that is not validated, is one line naming the option."""
    env = {"DBOPS_DATABASE_URL": seeded_db, "DBOPS_HOME": str(tmp_path / "home")}
    target = load_settings({**env, "DBOPS_VALIDATION_TIME_COLUMNS": "app.users=created_at"}).target()
    assert target.validation.time_columns == (("app.users", "created_at"),)
    with IntegrityValidator.for_target(seeded_db, target) as validator:
        assert {p.name: p.time_column for p in validator.fact_plans}["app.users"] == "created_at"
        assert "app.users" not in {p.name for p in validator.dimension_plans}
        assert "public.flyway_schema_history" not in {p.name for p in validator.plans}  # the migration history
        with connection(seeded_db) as conn:
            day = conn.execute("SELECT (max(created_at) AT TIME ZONE 'UTC')::date FROM app.users").fetchone()[0]
            conn.execute("ALTER TABLE app.users ALTER COLUMN full_name DROP NOT NULL")
            conn.execute("UPDATE app.users SET full_name = NULL WHERE id = (SELECT max(id) FROM app.users "
                         "WHERE created_at >= %s::timestamptz AND created_at < %s::timestamptz + interval '1 day')",
                         (f"{day} 00:00:00+00", f"{day} 00:00:00+00"))
        assert found([validator.validate_day(day)]) == {(day.isoformat(), "app.users", "not_null full_name"): 1}
    for value, words in [("app.users=email", "app.users.email is text, not a date or timestamp"),
                         ("app.users=joined", "app.users has no column 'joined'"),
                         ("app.nothing=created_at", "table app.nothing is not among the validated tables")]:
        target = load_settings({**env, "DBOPS_VALIDATION_TIME_COLUMNS": value}).target()
        with pytest.raises(ConfigError, match=f"validation.time_columns: {words}"):
            IntegrityValidator.for_target(seeded_db, target)


def test_rule_files_of_a_team_database(fresh_db: str, tmp_path: Path) -> None:
    """A team's own rule files (`validation.expectations`): a file naming no schema is the one table of that name;
    two tables of that name is one line asking for `table:`."""
    create(fresh_db, LIBRARY)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "loans.yml").write_text("rules:\n  - in_set: {column: status, values: [out, returned]}\n")
    env = {"DBOPS_DATABASE_URL": fresh_db, "DBOPS_MIGRATIONS": str(LIBRARY.migrations),
           "DBOPS_HOME": str(tmp_path / "home"), "DBOPS_EXPECTATIONS": str(rules)}
    target = load_settings(env).target()
    assert target.validation.expectations == rules
    day = yesterday()
    with IntegrityValidator.for_target(fresh_db, target) as validator:
        assert validator.validate_day(day).ok
        with connection(fresh_db) as conn:
            conn.execute("UPDATE lending.loans SET status = 'lost' WHERE id = (SELECT min(id) FROM lending.loans "
                         "WHERE loaned_on = %s)", (day,))
        assert found([validator.validate_day(day)]) == {
            (day.isoformat(), "lending.loans", "rule in_set status (loans.yml:2)"): 1
        }
    with connection(fresh_db) as conn:
        conn.execute("CREATE TABLE public.loans (id integer PRIMARY KEY)")
    with pytest.raises(RuleFileError, match=r"loans.yml: table loans exists in several schemas \(lending.loans, "
                                            r"public.loans\) — set `table: <schema>.<table>`"):
        IntegrityValidator.for_target(fresh_db, target)

"""integrity_validation's partitions start at the target's `validation.start_date`, else at the day of its oldest row
(found cheaply, cached in $DBOPS_HOME per target and database), else `backfill_days` before today with the reason:
the code location loads when the database is down."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from psycopg import sql

from dbops.components.resources import default_resources
from dbops.components.validate import build
from dbops.components.validate.resources import daily_partitions, start_day
from dbops.pg.connect import connection
from dbops.pg.server import free_port
from dbops.settings import load_settings
from dbops.validate.start import cache_file, first_partition_day
from dbops_tests.foreign import ForeignSchema

TARGET = "dbops"


def today() -> date:
    return datetime.now(UTC).date()


def oldest(url: str, tables: dict[str, str]) -> date:
    """The oldest day of ``tables`` ({table: time column}) by a full scan, independently of dbops."""
    with connection(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        days = [conn.execute(sql.SQL("SELECT min({})::date FROM {}").format(
            sql.Identifier(col), sql.Identifier(*table.split(".")))).fetchone()[0] for table, col in tables.items()]
    return min(d for d in days if d is not None)


def point_at(monkeypatch: pytest.MonkeyPatch, url: str, home: Path, **extra: str) -> None:
    monkeypatch.setenv("DBOPS_DATABASE_URL", url)
    monkeypatch.setenv("DBOPS_HOME", str(home))
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def loaded_partitions() -> dg.PartitionsDefinition | None:
    """integrity_validation's partitions in the validate group of ``TARGET`` with the shared resources, loaded as the
    code location loads it."""
    defs = dg.Definitions.merge(build(TARGET), dg.Definitions(resources=default_resources()))
    dg.Definitions.validate_loadable(defs)
    return defs.resolve_asset_graph().get(dg.AssetKey([TARGET, "integrity_validation"])).partitions_def


def partition_count(target: str = TARGET) -> int:
    return len(daily_partitions(target).get_partition_keys())


def test_reference_schema_starts_at_its_oldest_row(seeded_db: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    point_at(monkeypatch, seeded_db, home)
    expected = oldest(seeded_db, {"app.orders": "created_at", "app.audit_log": "occurred_at"})
    assert expected < today() - timedelta(days=40)  # the seed spans 60 days: older than the 30-day fallback

    found = start_day(TARGET)
    assert (found.source, found.day) == ("data", expected)
    assert "app.orders" in found.reason
    cached = json.loads(cache_file(home, TARGET).read_text())
    assert cached["first_day"] == expected.isoformat() and "app.orders" in cached["tables"]
    assert "password" not in json.dumps(cached) and "@" not in cached["database"]

    # The next load reads the cache (stable even when the oldest rows go): no query of the data.
    with connection(seeded_db) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM app.orders WHERE created_at < now() - interval '45 days'")
    again = start_day(TARGET)
    assert (again.source, again.day) == ("cache", expected)
    keys = daily_partitions(TARGET).get_partition_keys()
    assert keys[0] == expected.isoformat() and keys[-1] == (today() - timedelta(days=1)).isoformat()
    assert len(keys) == (today() - expected).days

    # A start date in the settings wins over the data and the cache.
    monkeypatch.setenv("DBOPS_VALIDATION_START_DATE", (today() - timedelta(days=7)).isoformat())
    configured = start_day(TARGET)
    assert configured.source == "config" and partition_count() == 7


def test_team_database_starts_at_its_oldest_row(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    schema, url = foreign_db
    point_at(monkeypatch, url, tmp_path / "home", DBOPS_MIGRATIONS=str(schema.migrations))
    target = load_settings().target(TARGET)
    expected = oldest(url, schema.partitioned)
    found = first_partition_day(target, lambda: url, tmp_path / "first")
    assert (found.source, found.day) == ("data", expected)
    if schema.name == "telemetry":  # daily partitions from 40 days back, rows from 35: the empty ones are passed over
        with connection(url) as conn:
            first_bound = conn.execute("SELECT min(relname) FROM pg_class WHERE relname ~ '^readings_[0-9]'").fetchone()
        assert first_bound[0] < f"readings_{expected:%Y%m%d}"
    else:  # monthly partitions and a DEFAULT one, which can hold any day: a loan older than every partition
        old = today() - timedelta(days=3 * 365)
        with connection(url) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("INSERT INTO lending.loans (loaned_on, member_id, book_id, due_on) VALUES (%s, 1, 1, %s)",
                         (old, old + timedelta(days=21)))
            where = conn.execute("SELECT tableoid::regclass::text FROM lending.loans WHERE loaned_on = %s",
                                 (old,)).fetchone()[0]
        assert where.endswith("loans_default")
        assert first_partition_day(target, lambda: url, tmp_path / "second").day == old

    # The Dagster definitions of the team target start there too.
    assert start_day(TARGET).day == (expected if schema.name == "telemetry" else old)
    partitions = loaded_partitions()
    assert partitions is not None and partitions.get_first_partition_key() == start_day(TARGET).day.isoformat()


def test_database_down_falls_back_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "home"
    point_at(monkeypatch, f"postgresql://dbops@127.0.0.1:{free_port()}/nowhere", home)
    started = datetime.now(UTC)
    with caplog.at_level("WARNING", logger="dbops.validate"):
        partitions = loaded_partitions()
    assert (datetime.now(UTC) - started).total_seconds() < 10
    found = start_day(TARGET)
    assert found.source == "fallback" and found.day == today() - timedelta(days=30)
    assert "could not be read" in found.reason and "30 days before today" in found.reason
    assert any("integrity_validation first partition" in r.getMessage() and "fallback" in r.getMessage()
               for r in caplog.records)
    assert partitions is not None and len(partitions.get_partition_keys()) == 30
    assert not cache_file(home, TARGET).exists()  # nothing cached: the next load looks again


def test_empty_database_falls_back_and_caches_nothing(migrated_db: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    point_at(monkeypatch, migrated_db, home, DBOPS_VALIDATION_BACKFILL_DAYS="12")
    found = start_day(TARGET)
    assert found.source == "fallback" and found.day == today() - timedelta(days=12)
    assert found.reason.startswith("no row in ") and "app.orders" in found.reason
    assert not cache_file(home, TARGET).exists() and partition_count() == 12


def test_cache_is_per_database(seeded_db: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    target = load_settings({"DBOPS_DATABASE_URL": seeded_db, "DBOPS_HOME": str(home)}).target()
    first = first_partition_day(target, lambda: seeded_db, home)
    assert first.source == "data"
    assert first_partition_day(target, lambda: seeded_db, home).source == "cache"
    other = seeded_db.rsplit("/", 1)[0] + "/postgres"  # the same server, another database: not its cache
    assert first_partition_day(target, lambda: other, home).source != "cache"


def test_a_locked_table_falls_back_within_the_statement_timeout(seeded_db: str, tmp_path: Path) -> None:
    """A migration holding a lock while the code location loads: the search gives up after its statement_timeout."""
    home = tmp_path / "home"
    target = load_settings({"DBOPS_DATABASE_URL": seeded_db, "DBOPS_HOME": str(home)}).target()
    with connection(seeded_db) as locker, locker.transaction():
        locker.execute("LOCK TABLE app.orders IN ACCESS EXCLUSIVE MODE")
        started = datetime.now(UTC)
        found = first_partition_day(target, lambda: seeded_db, home)
        took = (datetime.now(UTC) - started).total_seconds()
    assert found.source == "fallback" and "statement timeout" in found.reason
    assert took < 15 and not cache_file(home, TARGET).exists()
    assert first_partition_day(target, lambda: seeded_db, home).source == "data"  # the lock gone, the data tells


def test_database_without_tables_falls_back(fresh_db: str, tmp_path: Path) -> None:
    """Before the first migration (the demo loads its definitions then): no table to read, said so."""
    target = load_settings({"DBOPS_DATABASE_URL": fresh_db, "DBOPS_HOME": str(tmp_path)}).target()
    found = first_partition_day(target, lambda: fresh_db, tmp_path)
    assert found.source == "fallback" and found.day == today() - timedelta(days=30)
    assert found.reason == ("no range-partitioned table with a date or timestamp key, no validation.time_columns; "
                            "30 days before today")

"""Migration rehearsal on a real restored backup of a 1,000,000-row table: what rewrites and locks it, what passes,
and that a failing ``rehearsal_safe`` keeps production ``schema_migrations`` from running in the same run."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from psycopg import sql

from dbops.backup.keys import MasterKey, generate_key
from dbops.backup.logical import logical_backup
from dbops.backup.store import LocalStore
from dbops.components import migrate
from dbops.components.migrate.assets import build_schema_migrations
from dbops.components.migrate.rehearsal import build_rehearsal
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import BackupResource, DatabaseResource, MigrationsResource
from dbops.errors import ConfigError
from dbops.migrate import MigrationError, Migrator
from dbops.migrate.rehearsal import (
    HeldLock,
    MigrationRehearsal,
    Rewrite,
    Thresholds,
    lock_label,
    rehearse,
)
from dbops.pg.connect import connection, drop_database
from dbops.pg.server import EmbeddedServer
from dbops.settings import Settings, TargetSettings, load_settings
from dbops_tests.conftest import dbops_step, new_database

TARGET = "dbops"
REHEARSAL_OP, MIGRATE_OP = op_name(TARGET, "migration_rehearsal"), op_name(TARGET, "schema_migrations")
ROWS = 1_000_000
BIG = """
CREATE TABLE big AS SELECT g AS id, g % 1000 AS val FROM generate_series(1, 1000000) g;
ALTER TABLE big ADD PRIMARY KEY (id);
"""
VOLATILE_DEFAULT = "ALTER TABLE big ADD COLUMN c timestamptz DEFAULT clock_timestamp();\n"
CONCURRENT_INDEX = "-- dbops:no-transaction\nCREATE INDEX CONCURRENTLY big_val_idx ON big (val);\n"


@dataclass
class Production:
    """A production database at V1 (the big table) with one logical backup of it in a local store."""

    url: str
    server_url: str
    store: LocalStore
    key_text: str
    base: Path

    @property
    def key(self) -> MasterKey:
        return MasterKey.from_env({"DBOPS_BACKUP_KEY": self.key_text})

    def migrations(self, folder: Path, **extra: str) -> Path:
        """V1 plus ``extra`` files (name -> SQL) in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.base / "V1__big.sql", folder)
        for name, text in extra.items():
            (folder / name).write_text(text)
        return folder

    def scratch_databases(self) -> list[str]:
        with connection(self.server_url) as conn:
            return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbops_drill_%'")]

    def state(self) -> tuple[list[str], list[str]]:
        """Applied versions and the columns of big."""
        with connection(self.url) as conn:
            versions = [r[0] for r in conn.execute(
                "SELECT version FROM flyway_schema_history WHERE success ORDER BY installed_rank")]
            columns = [r[0] for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'big'::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum")]
        return versions, columns


APPLICATION = ("SELECT val FROM big WHERE id = %s", "SELECT count(*) FROM big WHERE val = %s",
               "UPDATE big SET val = val WHERE id = %s")


APP_ROLE = f"big_app_{uuid.uuid4().hex[:6]}"


def run_application(url: str) -> None:
    """The application's statements, as its own role (the embedded server's ``postgres`` is dbops' tooling, left out
    of the replay) and with bound parameters so pg_stat_statements records them as ``$1``."""
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # as the profile step leaves it
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP_ROLE)))
        conn.execute(sql.SQL("GRANT SELECT, UPDATE ON big TO {}").format(sql.Identifier(APP_ROLE)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))
        for i in range(1, 21):
            for statement in APPLICATION:
                conn.execute(statement, [i])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def production(pg_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    server_url = pg_server.url("postgres")
    url = new_database(server_url)
    root = tmp_path_factory.mktemp("rehearsal")
    base = root / "base"
    base.mkdir()
    (base / "V1__big.sql").write_text(BIG)
    key_text = generate_key()
    prod = Production(url, server_url, LocalStore(root / "store"), key_text, base)
    try:
        began = time.monotonic()
        Migrator(url, base).apply()
        manifest = logical_backup(url, prod.store, prod.key)
        print(f"\n1M-row table created and backed up in {time.monotonic() - began:.1f} s "
              f"({manifest['raw_bytes']} bytes raw)")
        run_application(url)
        yield prod
    finally:
        drop_database(server_url, url.rsplit("/", 1)[1])
        with connection(server_url) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(APP_ROLE)))


def _materialize(prod: Production, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("DBOPS_BACKUP_KEY", prod.key_text)
    return dg.materialize(
        [build_rehearsal(TARGET), build_schema_migrations(TARGET, [asset_key(TARGET, "migration_rehearsal")])],
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "database": DatabaseResource(url=prod.url),
            "migrations": MigrationsResource(locations=str(folder)),
            "backups": BackupResource(store="local", directory=str(prod.store.root)),
        },
        raise_on_error=False,
    )


def _figures(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    meta = result.asset_materializations_for_node(REHEARSAL_OP)[0].metadata
    return {k: v.value for k, v in meta.items()}


def test_volatile_default_rewrites_the_table_and_blocks_the_production_migrate(
        production: Production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = production.migrations(tmp_path / "m", **{"V2__add_volatile_default.sql": VOLATILE_DEFAULT})
    began = time.monotonic()
    result = _materialize(production, folder, monkeypatch)
    wall = time.monotonic() - began

    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["rehearsal_safe"].passed is False
    figures = _figures(result)
    print(f"\nvolatile default: wall {wall:.1f} s, " + ", ".join(
        f"{k}={figures[k]}" for k in ("restore_seconds", "total_seconds", "max_migration_seconds",
                                      "max_access_exclusive_seconds", "rewritten_tables", "rewritten_bytes")))
    print(figures["report"])
    assert figures["unsafe_count"] == 1 and figures["rewritten_tables"] == 1
    assert figures["rewritten_bytes"] > 10 * 1048576  # the whole table, with its primary key
    assert figures["max_access_exclusive_seconds"] > 0.1
    assert "public.big: ACCESS EXCLUSIVE" in figures["report"] and "UNSAFE" in figures["report"]
    detail = str(checks["rehearsal_safe"].metadata["problems"].value)
    assert "rewrites public.big" in detail and f"{ROWS} rows" in detail

    # The blocking check stopped the production migrate: it never ran and production is as it was.
    assert not result.asset_materializations_for_node(MIGRATE_OP)
    assert not [e for e in result.all_events if e.step_key == MIGRATE_OP and e.is_step_start]
    assert production.state() == (["1"], ["id", "val"])
    assert production.scratch_databases() == []


def test_create_index_concurrently_passes_and_production_migrates(
        production: Production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = production.migrations(tmp_path / "m", **{"V2__index_val.sql": CONCURRENT_INDEX})
    try:
        began = time.monotonic()
        result = _materialize(production, folder, monkeypatch)
        wall = time.monotonic() - began
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"rehearsal_safe": True}
        figures = _figures(result)
        print(f"\nCREATE INDEX CONCURRENTLY: wall {wall:.1f} s, " + ", ".join(
            f"{k}={figures[k]}" for k in ("restore_seconds", "max_migration_seconds",
                                          "max_access_exclusive_seconds", "rewritten_tables")))
        print(figures["report"])
        assert figures["rewritten_tables"] == 0 and figures["unsafe_count"] == 0
        assert figures["max_access_exclusive_seconds"] == 0
        assert "public.big: SHARE UPDATE EXCLUSIVE" in figures["report"]
        # The gate opened: production was migrated after the rehearsal, in the same run.
        assert result.asset_materializations_for_node(MIGRATE_OP)
        assert production.state()[0] == ["1", "2"]
        assert production.scratch_databases() == []
    finally:
        with connection(production.url) as conn:
            conn.execute("DROP INDEX IF EXISTS big_val_idx")
            conn.execute("DELETE FROM flyway_schema_history WHERE version = '2'")


def test_nothing_pending_passes_without_restoring(production: Production, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    report = rehearse(production.url, production.store, production.key, production.base)
    assert report.safe and not report.rehearsed and report.backup_id is None
    assert "nothing pending" in report.note and report.total_seconds < 1
    result = _materialize(production, production.base, monkeypatch)
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {"rehearsal_safe": True}
    assert _figures(result)["rehearsed_count"] == 0


def test_no_backup_yet_warns_and_still_classifies(production: Production, tmp_path: Path) -> None:
    folder = production.migrations(tmp_path / "m", **{"V2__add_volatile_default.sql": VOLATILE_DEFAULT,
                                                      "V3__drop_val.sql": "ALTER TABLE big DROP COLUMN val;\n"})
    report = rehearse(production.url, LocalStore(tmp_path / "empty"), production.key, folder)
    assert report.safe and not report.rehearsed and report.verdict == "WARN"
    assert "no logical backup" in report.note and report.pending == ["V2__add_volatile_default.sql",
                                                                      "V3__drop_val.sql"]
    # Without a copy, each file is classified against production's catalog (read only).
    assert not report.compat["V2__add_volatile_default.sql"].breaking
    assert report.compat["V3__drop_val.sql"].breaking
    assert any("V3__drop_val.sql is breaking" in w for w in report.warnings)
    assert production.state() == (["1"], ["id", "val"])


def test_scratch_copy_is_dropped_when_a_migration_fails_and_on_errors(
        production: Production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = production.migrations(tmp_path / "m", **{
        "V2__add_then_fail.sql": "ALTER TABLE big ADD COLUMN d int;\nSELECT 1 / 0;\n",
        "V3__never_runs.sql": "ALTER TABLE big ADD COLUMN e int;\n",
    })
    report = rehearse(production.url, production.store, production.key, folder)
    assert not report.safe and [m.script for m in report.migrations] == ["V2__add_then_fail.sql"]
    assert "fails on the restored copy" in report.problems[0] and "division by zero" in report.problems[0]
    assert production.scratch_databases() == []

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("sampler connection lost")

    monkeypatch.setattr("dbops.migrate.rehearsal.rehearse_on", broken)
    with pytest.raises(RuntimeError, match="sampler connection lost"):
        rehearse(production.url, production.store, production.key, folder)
    assert production.scratch_databases() == []
    assert production.state() == (["1"], ["id", "val"])


def test_verdict_thresholds() -> None:
    limits = Thresholds(large_table_bytes=10 * 1048576, max_exclusive_seconds=1.0)
    big, small = 50 * 1048576, 1048576
    cases = [
        ([HeldLock("public.big", "table", "AccessExclusiveLock", 2.5, big)], [], False),
        ([HeldLock("public.big", "table", "AccessExclusiveLock", 0.2, big)], [], True),
        ([HeldLock("public.tiny", "table", "AccessExclusiveLock", 9.0, small)], [], True),
        ([HeldLock("public.big", "table", "ShareLock", 9.0, big)], [], True),
        ([], [Rewrite("public.big", "table", big, big, 10**6)], False),
        ([], [Rewrite("public.big_pkey", "index", big, big, 10**6)], True),
        ([], [Rewrite("public.tiny", "table", small, small, 10)], True),
    ]
    for locks, rewrites, safe in cases:
        item = MigrationRehearsal("V2__x.sql", "2", True, 1.0, locks=locks, rewrites=rewrites)
        item.judge(limits)
        assert item.safe is safe, (locks, rewrites, item.problems)
    applied_since = MigrationRehearsal("V2__x.sql", "2", True, 1.0, rewrites=cases[4][1], in_production=True)
    applied_since.judge(limits)
    assert applied_since.safe
    assert lock_label("ShareUpdateExclusiveLock") == "SHARE UPDATE EXCLUSIVE"


def test_settings_from_the_environment(tmp_path: Path) -> None:
    def target(env: dict[str, str]) -> TargetSettings:
        return load_settings(env, tmp_path).target()

    assert Thresholds.from_settings(target({}).rehearsal) == Thresholds()
    custom = target({"DBOPS_REHEARSAL_LARGE_TABLE_MB": "100", "DBOPS_REHEARSAL_MAX_LOCK_SECONDS": "0.5",
                     "DBOPS_REHEARSAL_SAMPLE_MS": "20"})
    assert Thresholds.from_settings(custom.rehearsal) == Thresholds(100 * 1048576, 0.5, 0.02)
    with pytest.raises(ConfigError, match="DBOPS_REHEARSAL_MAX_LOCK_SECONDS"):
        target({"DBOPS_REHEARSAL_MAX_LOCK_SECONDS": "soon"})
    assert target({}).rehearsal.enabled and target({"DBOPS_REHEARSAL": "on"}).rehearsal.enabled
    assert not target({"DBOPS_REHEARSAL": "off"}).rehearsal.enabled
    with pytest.raises(ConfigError, match="DBOPS_REHEARSAL"):
        target({"DBOPS_REHEARSAL": "maybe"})
    key, rehearsal = asset_key(TARGET, "schema_migrations"), asset_key(TARGET, "migration_rehearsal")
    resources = dg.Definitions(resources={"database": DatabaseResource(url="postgresql://u@127.0.0.1:1/x"),
                                          "migrations": MigrationsResource(), "backups": BackupResource()})
    on = dg.Definitions.merge(migrate.build(TARGET, rehearsal=True), resources).resolve_asset_graph()
    off = dg.Definitions.merge(migrate.build(TARGET, rehearsal=False), resources).resolve_asset_graph()
    assert rehearsal in on.get(key).parent_keys and rehearsal not in off.get(key).parent_keys
    assert dg.AssetCheckKey(rehearsal, "rehearsal_safe") in off.asset_check_keys  # the report exists either way



def test_dbops_run_group_migrate_on_a_fresh_database_without_backups(pg_server: EmbeddedServer, fresh_db: str,
                                                                     tmp_path: Path) -> None:
    """A fresh deployment (the demo's first run): pending migrations, no backup, no backup key. The rehearsal has
    nothing to restore and says so with a WARN (nothing was rehearsed), which does not block: production migrates in
    the same run. The second run has nothing pending."""
    from dbops_tests.conftest import MIGRATIONS_DIR, dbops_env, run_dbops

    dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_DAGSTER_DATABASE_URL=pg_server.url(dagster_db),
                    DBOPS_MIGRATIONS=str(MIGRATIONS_DIR), DBOPS_BACKUP_DIR=str(tmp_path / "no-backups"),
                    DBOPS_REHEARSAL="on")
    for name in ("DBOPS_BACKUP_KEY", "DBOPS_BACKUP_KEY_FILE", "DBOPS_BACKUP_STORE"):
        env.pop(name, None)
    try:
        first = run_dbops(["run", "group:migrate"], env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "ok   asset dbops/migration_rehearsal" in first.stdout
        assert "ok   asset dbops/schema_migrations" in first.stdout
        files = Migrator(fresh_db, MIGRATIONS_DIR).resolve()
        pending = len(files.versioned) + len(files.repeatable)
        assert f"pending_count={pending}, rehearsed_count=0" in first.stdout and "backup_id=none" in first.stdout
        assert "WARN check dbops/migration_rehearsal:rehearsal_safe" in first.stdout
        with connection(fresh_db) as conn:
            assert conn.execute("SELECT count(*) FROM flyway_schema_history WHERE success").fetchone()[0] > 0
        second = run_dbops(["run", "migration_rehearsal"], env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "pending_count=0" in second.stdout
    finally:
        drop_database(pg_server.url(), dagster_db)


def test_new_migration_files_sensor_rehearses_first_when_the_rehearsal_is_on() -> None:
    import dagster as dg

    from dbops.components.resources import default_resources

    for on, expected in ((True, {"dbops/migration_rehearsal", "dbops/schema_migrations"}),
                         (False, {"dbops/schema_migrations"})):
        defs = dg.Definitions.merge(migrate.build(TARGET, rehearsal=on), dg.Definitions(resources={
            **default_resources(), "migrations": MigrationsResource(), "backups": BackupResource()}))
        selection = defs.resolve_sensor_def("dbops_new_migration_files").asset_selection
        assert {k.to_user_string() for k in selection.resolve(defs.resolve_asset_graph())} == expected


# ---- what breaks the application: production's statements, undo files, assertions --------------------------------

RENAME = "ALTER TABLE big RENAME COLUMN val TO amount;\n"


def _cli_settings(prod: Production, folder: Path, tmp_path: Path, **extra: str) -> Settings:
    return load_settings({"DBOPS_DATABASE_URL": prod.url, "DBOPS_MIGRATIONS": str(folder),
                          "DBOPS_BACKUP_DIR": str(prod.store.root), "DBOPS_BACKUP_KEY": prod.key_text, **extra},
                         cwd=tmp_path)


def test_a_rename_that_breaks_a_production_query_is_caught_and_production_is_untouched(
        production: Production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = production.migrations(tmp_path / "m", **{"V2__rename_val.sql": RENAME})
    result = _materialize(production, folder, monkeypatch)
    assert not result.success
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["rehearsal_safe"]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
    problems = str(check.metadata["problems"].value)
    assert "no longer plans" in problems and "SELECT val FROM big WHERE id = $1" in problems
    assert 'column "val" does not exist' in problems
    figures = _figures(result)
    assert figures["broken_statements"] == 3 and figures["replayed_statements"] == 3  # all three name val
    assert figures["breaking_migrations"] == 1
    report = str(figures["report"])
    print(report)
    assert "rename column" in report and "expand" not in problems
    for step in ("add", "sync", "backfill", "switch", "drop"):
        assert step in report.lower()
    assert not result.asset_materializations_for_node(MIGRATE_OP)
    assert production.state() == (["1"], ["id", "val"]) and production.scratch_databases() == []

    # The command line: `plan --rehearse` prints the report and exits 1; `migrate` rehearses first and refuses.
    settings = _cli_settings(production, folder, tmp_path)
    assert dbops_step(["migrate", "plan", "--rehearse"], settings) == 1
    printed = capsys.readouterr().out
    assert "rehearsal: UNSAFE" in printed and "UNSAFE: production statement no longer plans" in printed
    assert "rename column" in printed
    with pytest.raises(MigrationError, match="migrate refused: the rehearsal on a restored copy found 3 problem"):
        dbops_step(["migrate"], settings)
    assert production.state() == (["1"], ["id", "val"]) and production.scratch_databases() == []


def test_undo_files_are_rehearsed_up_undo_up(production: Production, tmp_path: Path) -> None:
    folder = production.migrations(tmp_path / "m", **{
        "V2__note.sql": "ALTER TABLE big ADD COLUMN note text;\nCOMMENT ON COLUMN big.note IS 'free text';\n",
        "U2__note.sql": "ALTER TABLE big DROP COLUMN note;\n",
        "V3__tags.sql": "CREATE TABLE big_tags (id int REFERENCES big, tag text);\n"
                        "ALTER TABLE big ADD COLUMN flagged boolean;\n",
        "U3__tags.sql": "DROP TABLE big_tags;\n",  # forgets the column
    })
    report = rehearse(production.url, production.store, production.key, folder)
    print(report.text())
    by_script = {m.script: m for m in report.migrations}
    good, bad = by_script["V2__note.sql"].undo, by_script["V3__tags.sql"].undo
    assert good is not None and good.passed and good.script == "U2__note.sql"
    assert bad is not None and not bad.passed
    assert any("public.big.flagged" in d for d in bad.differences), bad.differences
    # Its column left behind: the second up fails on it, and that is said too.
    assert bad.error is not None and 'column "flagged" of relation "big" already exists' in bad.error
    assert not report.safe and [m.script for m in report.migrations] == ["V2__note.sql", "V3__tags.sql"]
    assert any("U3__tags.sql does not undo V3__tags.sql" in p for p in report.problems)
    assert "V3__tags.sql: UNSAFE" in report.text() and "undo U2__note.sql: undoes it" in report.text()
    assert production.state() == (["1"], ["id", "val"]) and production.scratch_databases() == []


def test_a_plan_regression_warns_without_blocking_the_production_migrate(
        production: Production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = production.migrations(tmp_path / "m", **{"V2__drop_pk.sql": "ALTER TABLE big DROP CONSTRAINT big_pkey;\n"})
    try:
        result = _materialize(production, folder, monkeypatch)
        check = {e.check_name: e for e in result.get_asset_check_evaluations()}["rehearsal_safe"]
        assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
        warnings = str(check.metadata["warnings"].value)
        print(warnings)
        assert "plan regression" in warnings and "SELECT val FROM big WHERE id = $1" in warnings
        assert "before" in warnings and "after" in warnings and "big_pkey" in warnings
        assert _figures(result)["plan_regressions"] >= 1 and _figures(result)["broken_statements"] == 0
        # A WARN does not block: production migrated in the same run.
        assert result.success and result.asset_materializations_for_node(MIGRATE_OP)
        assert production.state()[0] == ["1", "2"]
    finally:
        with connection(production.url) as conn:
            conn.execute("ALTER TABLE big ADD PRIMARY KEY (id)")
            conn.execute("DELETE FROM flyway_schema_history WHERE version = '2'")


def test_an_assertion_that_fails_rolls_back_on_the_copy_and_on_production(
        production: Production, tmp_path: Path) -> None:
    folder = production.migrations(tmp_path / "m", **{"V2__cap_val.sql": (
        "-- dbops:assert (SELECT count(*) FROM big) = 1000000\n"
        "UPDATE big SET val = 0 WHERE val > 998;\n"
        "-- dbops:assert NOT EXISTS (SELECT 1 FROM big WHERE val > 500)\n")})
    settings = _cli_settings(production, folder, tmp_path)
    with pytest.raises(MigrationError) as refused:
        dbops_step(["migrate"], settings)
    assert "V2__cap_val.sql line 3: assertion failed: `NOT EXISTS (SELECT 1 FROM big WHERE val > 500)` is false" \
        in str(refused.value) and "nothing was applied" in str(refused.value)
    # Gate off: the same file on production fails on the same assertion, in the same transaction as its UPDATE.
    off = _cli_settings(production, folder, tmp_path, DBOPS_REHEARSAL="off")
    with pytest.raises(MigrationError, match="V2__cap_val.sql line 3: assertion failed"):
        dbops_step(["migrate"], off)
    with connection(production.url) as conn:
        assert conn.execute("SELECT count(*) FROM big WHERE val > 998").fetchone()[0] == 1000  # type: ignore[index]
    assert production.state() == (["1"], ["id", "val"]) and production.scratch_databases() == []

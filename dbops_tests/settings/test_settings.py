"""The settings loader: defaults < dbops.yaml < DBOPS_* variables, many targets, secrets by reference, one-line
problems with their line numbers."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from dbops.settings import OPTIONS, SettingsError, check_settings, load_settings
from dbops.settings.options import BY_ENV, BY_KEY, SCHEDULES, cron_problem
from dbops.settings.render import render_text

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
SECRET = "s3cr3t-Passw0rd-xyz"


def write(tmp_path: Path, text: str, name: str = "dbops.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(env or {}, tmp_path)
    return [str(p) for p in info.value.problems]


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


# --- no file: one target, today's behaviour -------------------------------------------------------------------------


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """os.environ without any DBOPS_* / DAGSTER_HOME, working directory tmp_path: what both readers see."""
    for name in list(os.environ):
        if name.startswith("DBOPS_") or name == "DAGSTER_HOME":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("extra", [
    {},
    {"DBOPS_HOME": "state", "DBOPS_PG_PORT": "61234", "DBOPS_DB_NAME": "shop", "DBOPS_WAL_ARCHIVE": "off",
     "DBOPS_MIGRATIONS": "/srv/migrations", "DBOPS_PG_BIN": "/usr/lib/postgresql/15/bin"},
    {"DBOPS_DATABASE_URL": f"postgresql://app:{SECRET}@db.example:5432/shop",
     "DBOPS_DAGSTER_DATABASE_URL": f"postgresql://dag:{SECRET}@db.example:5432/dagster",
     "DBOPS_WAL_SPOOL": "/var/spool/wal", "DAGSTER_HOME": "/srv/dagster"},
])
def test_no_file_is_one_target_dbops_like_dbops_config(clean_environ: Path, monkeypatch: pytest.MonkeyPatch,
                                                       extra: dict[str, str]) -> None:
    """With no dbops.yaml, the one target `dbops` gives what the former dbops.config.Settings gave for the same
    variables (the values it computed, written out)."""
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    new = load_settings(None, clean_environ)
    home = (clean_environ / extra.get("DBOPS_HOME", ".dbops")).absolute()

    assert list(new.targets) == ["dbops"] and new.default_target == "dbops" and new.config_file is None
    assert new.home == home and new.staging_root == home / "staging"
    assert new.port == int(extra.get("DBOPS_PG_PORT", "55432")) and new.db_name == extra.get("DBOPS_DB_NAME", "dbops")
    assert new.migrations_dir == Path(extra.get("DBOPS_MIGRATIONS", str(PROJECT_DIR / "sql" / "migrations")))
    assert new.database_url == extra.get("DBOPS_DATABASE_URL")
    assert new.dagster_database_url == extra.get("DBOPS_DAGSTER_DATABASE_URL")
    assert new.pg_bin == (Path(extra["DBOPS_PG_BIN"]) if "DBOPS_PG_BIN" in extra else None)
    assert new.embedded == ("DBOPS_DATABASE_URL" not in extra)
    assert new.dagster_home == Path(extra.get("DAGSTER_HOME", str(home / "dagster")))
    if "DBOPS_WAL_SPOOL" in extra:
        assert new.wal_spool == Path(extra["DBOPS_WAL_SPOOL"])
    else:
        assert new.wal_spool == (None if extra.get("DBOPS_WAL_ARCHIVE") == "off" else home / "wal-spool")
    if not new.embedded:
        assert new.target_url() == extra["DBOPS_DATABASE_URL"] and new.dagster_url() == extra[
            "DBOPS_DAGSTER_DATABASE_URL"]
    target = new.target()
    assert (target.backup.keep_last, target.backup.keep_days) == (7, None)
    assert target.backup.directory == home / "backups" and target.backup.store == "local"
    assert target.rehearsal.enabled
    assert target.rehearsal.large_table_bytes == 10 * 1048576
    assert target.rehearsal.max_lock_seconds == 1.0 and target.rehearsal.sample_interval == 0.01
    assert target.validation.start_date is None and target.validation.backfill_days == 30
    assert target.targets_file == PROJECT_DIR / "monitoring" / "targets.yml"
    assert target.alerts.log_file == home / "alerts.log"
    assert target.backup.key_file == (home / "secrets" / "backup.key" if new.embedded else None)
    assert SECRET not in repr(new) and SECRET not in render_text(new)


def test_environment_values_are_validated_and_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"DBOPS_PG_PORT": "abc", "DBOPS_BACKUP_KEEP_LAST": "0", "DBOPS_REHEARSAL": "maybe"}, tmp_path)
    lines = [str(p) for p in info.value.problems]
    assert "DBOPS_PG_PORT: pg_port: must be a TCP port from 1 to 65535, got 'abc' — set it to e.g. 55432" in lines
    assert "DBOPS_BACKUP_KEEP_LAST: backup.keep_last: must be a positive integer, got '0' — set it to e.g. 7" in lines
    assert any(line.startswith("DBOPS_REHEARSAL: rehearsal.enabled: must be on or off") for line in lines)
    assert len(lines) == 3  # a target variable is one problem, not one per target
    assert str(info.value).startswith("DBOPS_PG_PORT: pg_port: must be a TCP port")  # the CLI's one line


# --- a file with two targets ----------------------------------------------------------------------------------------


TWO_TARGETS = """
home: state
targets:
  dbops:
    embedded: true
  shop:
    url_env: SHOP_DATABASE_URL
    production: true
    schemas: [public, sales]
    backup:
      store: s3
      keep_last: 3
      s3:
        bucket: backups
        endpoint: http://127.0.0.1:8333
        access_key_id_env: SHOP_S3_KEY_ID
        secret_access_key_env: SHOP_S3_SECRET
    alerts:
      slack_webhook_env: SHOP_SLACK
    schedules:
      restore_drill_weekly: {enabled: off, cron: "0 7 * * 6"}
"""


def test_two_targets_one_embedded_one_external_with_an_s3_store(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_TARGETS)
    env = {"SHOP_DATABASE_URL": f"postgresql://app:{SECRET}@db.example:5432/shop", "SHOP_S3_KEY_ID": "id",
           "SHOP_S3_SECRET": SECRET, "SHOP_SLACK": f"https://hooks.example/{SECRET}"}
    settings = load_settings(env, tmp_path)

    assert settings.config_file == path and list(settings.targets) == ["dbops", "shop"]
    assert settings.home == tmp_path / "state" and settings.default_target == "dbops"
    dbops, shop = settings.targets["dbops"], settings.targets["shop"]
    assert dbops.embedded and dbops.url is None and dbops.db_name == "dbops"
    assert dbops.backup.store == "local" and dbops.backup.directory == tmp_path / "state" / "backups" / "dbops"
    assert dbops.wal_spool == tmp_path / "state" / "wal-spool"
    assert not shop.embedded and shop.url is not None and shop.url.env == "SHOP_DATABASE_URL"
    assert shop.production and shop.schemas == ("public", "sales") and shop.wal_spool is None
    assert shop.backup.store == "s3" and shop.backup.keep_last == 3 and dbops.backup.keep_last == 7
    assert (shop.backup.s3.bucket, shop.backup.s3.prefix, shop.backup.s3.endpoint) == (
        "backups", "shop", "http://127.0.0.1:8333")
    assert shop.backup.s3.secret_access_key is not None and shop.backup.s3.secret_access_key.resolve() == SECRET
    assert shop.backup.key_file is None and shop.profile.exclude_roles == ()
    assert shop.schedules["restore_drill_weekly"].enabled is False
    assert shop.schedules["restore_drill_weekly"].cron == "0 7 * * 6"
    assert dbops.schedules["restore_drill_weekly"].enabled is True
    assert settings.target_url("shop") == env["SHOP_DATABASE_URL"]  # resolved when used
    assert settings.sources["targets.shop.backup.keep_last"] == f"dbops.yaml:{line_of(path, 'keep_last')}"
    assert settings.sources["targets.dbops.backup.keep_last"] == "default"
    assert check_settings(settings) == []
    # Printed, every secret is a reference.
    for text in (repr(settings), render_text(settings)):
        assert SECRET not in text
    assert "SHOP_DATABASE_URL (***)" in render_text(settings)


def test_a_file_without_targets_configures_the_one_target_dbops(tmp_path: Path) -> None:
    write(tmp_path, """
        home: state
        defaults:
          backup: {keep_last: 4}
        """)
    settings = load_settings({}, tmp_path)
    (target,) = settings.targets.values()
    assert target.name == "dbops" and target.embedded and target.backup.keep_last == 4
    assert target.backup.directory == tmp_path / "state" / "backups" and target.backup.s3.prefix == ""


def test_the_example_file_has_two_embedded_targets(tmp_path: Path) -> None:
    env = {"SHOP_S3_ACCESS_KEY_ID": "id", "SHOP_S3_SECRET_ACCESS_KEY": SECRET}
    settings = load_settings(env, tmp_path, config_file=PROJECT_DIR / "dbops.example.yaml")
    dbops, shop = settings.targets["dbops"], settings.targets["shop"]
    assert dbops.embedded and shop.embedded and (dbops.db_name, shop.db_name) == ("dbops", "shop")
    assert dbops.seed.scale == 1 and shop.seed.scale < 1
    assert shop.backup.store == "s3" and shop.backup.s3.endpoint == "http://127.0.0.1:8333"
    assert check_settings(settings) == []


# --- precedence -----------------------------------------------------------------------------------------------------


def test_precedence_defaults_file_environment(tmp_path: Path) -> None:
    """Global: default < file < variable. Target: default < defaults: < variable < the target's own key."""
    write(tmp_path, """
        pg_port: 6000
        log_level: info
        defaults:
          backup:
            keep_last: 5
            keep_days: 10
          rehearsal:
            max_lock_seconds: 2
        targets:
          a:
            backup: {keep_last: 2}
          b: {}
        """)
    base = load_settings({}, tmp_path)
    assert base.pg_port == 6000 and base.log_level == "INFO"  # file over default
    assert base.targets["b"].backup.keep_last == 5 and base.targets["a"].backup.keep_last == 2
    assert base.targets["a"].rehearsal.max_lock_seconds == 2 and base.targets["a"].validation.backfill_days == 30

    env = {"DBOPS_PG_PORT": "7000", "DBOPS_BACKUP_KEEP_LAST": "9", "DBOPS_BACKUP_KEEP_DAYS": "3"}
    over = load_settings(env, tmp_path)
    assert over.pg_port == 7000 and over.sources["pg_port"] == "DBOPS_PG_PORT"  # variable over file
    assert over.targets["b"].backup.keep_last == 9  # variable over defaults:
    assert over.targets["a"].backup.keep_last == 2  # the target's own key over the variable
    assert over.targets["a"].backup.keep_days == 3 and over.targets["b"].backup.keep_days == 3
    assert over.sources["targets.a.backup.keep_last"].startswith("dbops.yaml:")
    assert over.sources["targets.b.backup.keep_last"] == "DBOPS_BACKUP_KEEP_LAST"


def test_an_explicit_embedded_target_ignores_dbops_database_url(tmp_path: Path) -> None:
    """url_env and embedded are alternatives: the highest source that sets one decides."""
    write(tmp_path, """
        targets:
          dbops: {embedded: true}
          other: {}
        """)
    env = {"DBOPS_DATABASE_URL": f"postgresql://app:{SECRET}@db.example/app"}
    settings = load_settings(env, tmp_path)
    assert settings.targets["dbops"].embedded and settings.targets["dbops"].url is None
    assert not settings.targets["other"].embedded and settings.targets["other"].url.env == "DBOPS_DATABASE_URL"

    write(tmp_path, """
        defaults:
          backup: {key_file: keys/backup.key}
        targets:
          a: {embedded: false}
          b: {backup: {key_env: B_KEY}}
        """)
    settings = load_settings({**env, "DBOPS_BACKUP_KEY": "k" * 44}, tmp_path)
    a, b = settings.targets["a"], settings.targets["b"]
    assert not a.embedded and a.url.env == "DBOPS_DATABASE_URL"  # "embedded: false" keeps the variable's URL
    assert a.backup.key.env == "DBOPS_BACKUP_KEY" and a.backup.key_file is None  # the variable over defaults:
    assert b.backup.key.env == "B_KEY" and b.backup.key_file is None
    settings = load_settings(env, tmp_path)
    assert settings.targets["a"].backup.key is None
    assert settings.targets["a"].backup.key_file == tmp_path / "keys" / "backup.key"  # relative to the file

    lines = problems(tmp_path, """
        targets:
          a: {embedded: true, url_env: A_URL}
        """)
    assert lines == ["dbops.yaml:2: targets.a.url_env: is set together with embedded — give one of embedded or "
                     "url_env"]


# --- problems, one line each ----------------------------------------------------------------------------------------


def test_unknown_keys_name_the_closest_valid_one_with_the_line(tmp_path: Path) -> None:
    lines = problems(tmp_path, """
        home: state
        targts: {}
        backup: {keep_last: 3}
        targets:
          shop:
            pg_port: 1234
            keep_last: 3
            backup:
              keep_lst: 3
            schedules:
              restore_drill_wekly: {enabled: off}
        """)
    assert "dbops.yaml:2: targts: unknown key — did you mean targets?" in lines
    assert "dbops.yaml:3: backup: is a target option — put it under defaults: (every target) or targets.<name>: " \
           "(backup: ...)" in lines
    assert "dbops.yaml:6: targets.shop.pg_port: is a global option — move it to the top level of the file" in lines
    assert "dbops.yaml:7: targets.shop.keep_last: unknown key — did you mean backup.keep_last? (it belongs to " \
           "another section)" in lines
    assert "dbops.yaml:9: targets.shop.backup.keep_lst: unknown key — did you mean keep_last?" in lines
    assert "dbops.yaml:11: targets.shop.schedules.restore_drill_wekly: unknown key — did you mean " \
           "restore_drill_weekly?" in lines
    assert len(lines) == 6  # every problem, collected


def test_bad_values_are_one_line_each(tmp_path: Path) -> None:
    path = write(tmp_path, """
        pg_port: 99999
        targets:
          shop:
            backup:
              keep_last: x
              store: tape
            schedules:
              catalog_daily: {cron: "0 25 * * *"}
          Bad-Name: {}
        """)
    with pytest.raises(SettingsError) as info:
        load_settings({}, tmp_path)
    lines = [str(p) for p in info.value.problems]
    keep = line_of(path, "keep_last")
    assert f"dbops.yaml:{keep}: targets.shop.backup.keep_last: must be a positive integer, got 'x' — set it to e.g. 7" \
        in lines
    assert "dbops.yaml:1: pg_port: must be a TCP port from 1 to 65535, got '99999' — set it to e.g. 55432" in lines
    assert any(line.startswith(f"dbops.yaml:{line_of(path, 'tape')}: targets.shop.backup.store: must be one of "
                               "local, s3, got 'tape'") for line in lines)
    assert any(line.startswith(f"dbops.yaml:{line_of(path, 'catalog_daily')}: targets.shop.schedules.catalog_daily."
                               "cron: hour: '25' is outside 0-23") for line in lines)
    assert any(line.startswith(f"dbops.yaml:{line_of(path, 'Bad-Name')}: targets.Bad-Name: is not a valid target "
                               "name") for line in lines)
    assert all("\n" not in line and " — " in line for line in lines)


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    lines = problems(tmp_path, """
        targets:
          shop:
            schedules:
              wal_archive_every_15_min: {cron: */5 * * * *}
        """)
    assert len(lines) == 1 and lines[0].startswith("dbops.yaml:4: file: cannot be parsed")
    assert "quote values that start with *" in lines[0]


def test_literal_secrets_are_refused_and_never_echoed(tmp_path: Path) -> None:
    lines = problems(tmp_path, f"""
        dagster:
          url: postgresql://dagster:{SECRET}@db/dagster
        targets:
          shop:
            url: postgresql://app:{SECRET}@db.example/shop
            password: {SECRET}
            backup:
              s3:
                bucket: b
                endpoint: http://user:{SECRET}@s3.example
            alerts:
              smtp:
                password: {SECRET}
            profile:
              scratch_url_env: postgresql://app@db/scratch
          other:
            url_env: postgresql://app:{SECRET}@db/other
        """)
    text = "\n".join(lines)
    assert SECRET not in text
    assert "dbops.yaml:2: dagster.url: a literal secret is not accepted in the file — export it in an environment " \
           "variable and write url_env: <its name> (e.g. DAGSTER_DATABASE_URL)" in lines
    assert any(line.startswith("dbops.yaml:5: targets.shop.url: a literal secret") and "url_env" in line
               for line in lines)
    assert any(line.startswith("dbops.yaml:6: targets.shop.password: unknown key; secrets are never written")
               and "url_env" in line for line in lines)
    assert any(line.startswith("dbops.yaml:10: targets.shop.backup.s3.endpoint: contains a password") for line in lines)
    assert any(line.startswith("dbops.yaml:13: targets.shop.alerts.smtp.password: a literal secret")
               and "password_env" in line for line in lines)
    assert any(line.startswith("dbops.yaml:15: targets.shop.profile.scratch_url_env: must be the NAME of an "
                               "environment variable") for line in lines)
    assert any(line.startswith("dbops.yaml:17: targets.other.url_env: contains a password") for line in lines)
    assert len(lines) == 7


def test_unset_referenced_variables_are_reported_by_check(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_TARGETS)
    settings = load_settings({}, tmp_path)  # loading does not need them: they are read when used
    found = [str(p) for p in check_settings(settings)]
    url_line = line_of(path, "url_env")
    assert f"dbops.yaml:{url_line}: targets.shop.url_env: SHOP_DATABASE_URL is unset — export SHOP_DATABASE_URL " \
           "where dbops runs (dbops never reads a secret from the file), or fix the name" in found
    assert {re.search(r"(\w+) is unset", line)[1] for line in found} == {  # type: ignore[index]
        "SHOP_DATABASE_URL", "SHOP_S3_KEY_ID", "SHOP_S3_SECRET", "SHOP_SLACK"}
    assert "<unset: SHOP_DATABASE_URL>" in render_text(settings)
    with pytest.raises(Exception, match="SHOP_DATABASE_URL is unset"):
        settings.target_url("shop")


def test_a_set_variable_that_is_not_a_url_is_a_problem_without_its_value(tmp_path: Path) -> None:
    write(tmp_path, TWO_TARGETS)
    with pytest.raises(SettingsError) as info:
        load_settings({"SHOP_DATABASE_URL": f"mysql://app:{SECRET}@db/shop"}, tmp_path)
    (line,) = [str(p) for p in info.value.problems]
    assert line.startswith("dbops.yaml:6: targets.shop.url_env: SHOP_DATABASE_URL is not a usable PostgreSQL URL")
    assert SECRET not in line


def test_targets_may_not_share_a_database_or_a_store(tmp_path: Path) -> None:
    lines = problems(tmp_path, """
        targets:
          a: {db_name: app}
          b: {db_name: app}
          c: {backup: {directory: /srv/backups}}
          d: {backup: {directory: /srv/backups/d}}
          e: {db_name: dagster}
          f: {embedded: false}
          g: {backup: {store: s3}}
        """)
    assert any(line.startswith("dbops.yaml:3: targets.b.db_name: database 'app' on the embedded server is "
                               "targets.a's too") for line in lines)
    assert any(line.startswith("dbops.yaml:5: targets.d.backup.directory: is (or shares a folder with) the backup "
                               "store of targets.c") for line in lines)
    assert any(line.startswith("dbops.yaml:6: targets.e.db_name: 'dagster' is dbops' own") for line in lines)
    assert any(line.startswith("dbops.yaml:7: targets.f.embedded: is off but no url_env") for line in lines)
    assert any(line.startswith("dbops.yaml:8: targets.g.backup.s3.bucket: is needed with backup.store: s3")
               for line in lines)


def test_config_file_from_dbops_config_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DBOPS_CONFIG: config_file: no such file"):
        load_settings({"DBOPS_CONFIG": str(tmp_path / "missing.yaml")}, tmp_path)


def test_unknown_dbops_variables_are_warned_about(tmp_path: Path) -> None:
    settings = load_settings({"DBOPS_BACKUP_KEEPLAST": "3", "DBOPS_TEST_PG_BIN": "/x"}, tmp_path)
    assert settings.warnings == ("DBOPS_BACKUP_KEEPLAST: not a dbops variable, ignored — did you mean "
                                 "DBOPS_BACKUP_KEEP_LAST?",)


# --- the table itself -----------------------------------------------------------------------------------------------


def _variables_in(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        found |= set(re.findall(r"\bDBOPS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return found


def test_every_variable_dbops_reads_is_an_option() -> None:
    """Each DBOPS_* name in the code and the README is in the option table (with its old name)."""
    sources = [p for p in (PROJECT_DIR / "dbops").rglob("*.py") if "settings" not in p.parts]
    used = _variables_in([*sources, PROJECT_DIR / "README.md"]) - {"DBOPS_GX_URL"}  # a per-run internal name
    known = set(BY_ENV) | {"DBOPS_CONFIG"}
    assert used - known == set()
    migrate = ("DEFAULT_SCHEMA", "TABLE", "BASELINE_ON_MIGRATE", "BASELINE_VERSION", "PLACEHOLDER_REPLACEMENT",
               "PLACEHOLDERS")
    added = {f"DBOPS_MIGRATE_{n}" for n in migrate} | {"DBOPS_VALIDATION_TIME_COLUMNS", "DBOPS_ALERT_FAILURES"}
    new_sections = ("DBOPS_PARTITIONS_", "DBOPS_MATVIEWS", "DBOPS_LOGS_", "DBOPS_HEALTH_")
    added |= {o.env for o in OPTIONS if o.env and o.env.startswith(new_sections)}
    added |= {"DBOPS_OWNERS", "DBOPS_ALERT_RUNBOOK_BASE", "DBOPS_REHEARSAL_REPLAY_STATEMENTS",
              "DBOPS_REHEARSAL_PLAN_REGRESSION_FACTOR"}
    legacy = {o.env for o in OPTIONS if o.env and o.env.startswith("DBOPS_")} - {"DBOPS_TARGET", "DBOPS_CONFIG"}
    legacy -= added
    assert len(legacy) == 47 and "DAGSTER_HOME" in BY_ENV


def test_every_option_is_documented_and_has_an_example() -> None:
    assert len({o.key for o in OPTIONS}) == len(OPTIONS)
    for opt in OPTIONS:
        assert opt.description and (opt.example or opt.key.endswith(".cron")), opt.key
        if opt.secret:
            assert opt.key.endswith("_env"), opt.key
    assert BY_KEY["backup.keep_last"].default == 7


def test_schedules_are_the_code_locations() -> None:
    """The settings' schedule table is the code location's: every schedule built for the default target, with the
    default cron and on/off state of the settings (dbops/components/schedules.py reads them)."""
    import dagster as dg

    from dbops.definitions import load

    running = {s.name.removeprefix("dbops_"): s for s in load().get_repository_def().schedule_defs}
    assert {name for name, *_ in SCHEDULES} == set(running)
    for name, cron, on, _ in SCHEDULES:
        assert running[name].cron_schedule == cron, name
        assert cron_problem(cron) is None
        assert on == (running[name].default_status == dg.DefaultScheduleStatus.RUNNING), name
    for bad in ("* * * *", "60 * * * *", "0 0 32 * *", "0 0 * * 8", "a b c d e", "*/0 * * * *"):
        assert cron_problem(bad), bad


def test_a_team_database_gets_no_reference_matrix_or_rules_and_its_own_migrate_options(tmp_path: Path) -> None:
    (tmp_path / "lib-migrations").mkdir()
    write(tmp_path, """
        targets:
          dbops: {embedded: true}
          library:
            embedded: true
            schemas: [lending, public]
            migrations: lib-migrations
            migrate:
              baseline_version: "020"
              placeholders: {reminder_channel: email, empty: ""}
            validation:
              time_columns: {lending.loans: loaned_on}
    """)
    settings = load_settings({"DBOPS_MIGRATE_PLACEHOLDERS": "a=1,b=two"}, tmp_path)
    dbops, library = settings.targets["dbops"], settings.targets["library"]
    assert dbops.access_control is not None and dbops.validation.expectations is not None
    assert library.access_control is None and library.validation.expectations is None
    assert library.migrate.default_schema == "lending" and dbops.migrate.default_schema == "public"
    assert library.migrate.baseline_version == "020" and not library.migrate.baseline_on_migrate
    assert library.migrate.placeholders == (("empty", ""), ("reminder_channel", "email"))
    assert dbops.migrate.placeholders == (("a", "1"), ("b", "two"))  # the environment sets the default target's
    assert library.validation.time_columns == (("lending.loans", "loaned_on"),)
    assert "reminder_channel=email" in render_text(settings) and "a=1, b=two" in render_text(settings)
    with pytest.raises(SettingsError, match="not name=value"):
        load_settings({"DBOPS_MIGRATE_PLACEHOLDERS": "oops"}, tmp_path)


def test_the_team_example_file_configures_a_database_dbops_did_not_create(tmp_path: Path) -> None:
    """dbops.team.example.yaml, with its /srv folders made real: valid, no reference matrix or rule files."""
    text = (PROJECT_DIR / "dbops.team.example.yaml").read_text().replace("/srv/library/db", str(tmp_path / "db"))
    text = text.replace("/var/lib/dbops", str(tmp_path / "state")).replace("/var/backups", str(tmp_path / "b"))
    for folder in ("migrations", "pgbench"):
        (tmp_path / "db" / folder).mkdir(parents=True)
    path = tmp_path / "team.yaml"
    path.write_text(text)
    env = {"LIBRARY_DATABASE_URL": f"postgresql://admin:{SECRET}@db.internal:5432/library",
           "LIBRARY_BACKUP_KEY": "a" * 44}
    settings = load_settings(env, tmp_path, config_file=path)
    assert check_settings(settings) == []
    library = settings.target("library")
    assert library.production and not library.embedded and library.access_control is None
    assert library.validation.expectations is None and not settings.runs_reference_schema("library")
    assert (library.migrate.default_schema, library.migrate.baseline_version) == ("lending", "020")
    assert SECRET not in render_text(settings)

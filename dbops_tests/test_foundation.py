"""The ground floor: settings, redaction, the embedded server through the CLI, and the Dagster code location."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dbops.errors import ConfigError, ConnectionFailed
from dbops.pg.connect import connect
from dbops.pg.server import free_port
from dbops.redact import redact, redact_url
from dbops.settings import load_settings
from dbops_tests.conftest import make_test_dir, run_dbops


def test_redact_url_and_text() -> None:
    url = "postgresql://app:s3cr3t-pw@db.example:5432/shop"
    assert redact_url(url) == "postgresql://app:***@db.example:5432/shop"
    assert "s3cr3t-pw" not in redact(f"failed for {url} password=s3cr3t-pw")


def test_settings_reject_bad_port_and_url() -> None:
    with pytest.raises(ConfigError, match="DBOPS_PG_PORT"):
        load_settings({"DBOPS_PG_PORT": "abc"})
    with pytest.raises(ConfigError, match="postgresql://"):
        load_settings({"DBOPS_DATABASE_URL": "mysql://u:p@h/db"})


def test_unreachable_server_and_wrong_password_are_clear(pg_server) -> None:
    with pytest.raises(ConnectionFailed, match="is the server running"):
        connect(f"postgresql://postgres:pw@127.0.0.1:{free_port()}/postgres")
    bad = pg_server.url("postgres").replace(pg_server.password, "wrong-password")
    with pytest.raises(ConnectionFailed, match="password authentication failed") as info:
        connect(bad)
    assert "wrong-password" not in str(info.value)


def test_db_up_status_url_down_through_the_cli(tmp_path: Path) -> None:
    """`dbops db up` starts an embedded cluster with the required settings and two databases; down stops it."""
    home = make_test_dir("cli")
    port = free_port()
    env = {
        **os.environ,
        "DBOPS_HOME": str(home),
        "DBOPS_PG_PORT": str(port),
        "DBOPS_DB_NAME": "shop",
    }
    env.pop("DBOPS_DATABASE_URL", None)
    try:
        up = run_dbops(["db", "up"], env)
        assert up.returncode == 0, up.stderr
        password = (home / "superuser.password").read_text().strip()
        assert password not in up.stdout + up.stderr
        url = run_dbops(["db", "url"], env)
        assert url.stdout.strip() == f"postgresql://postgres:***@127.0.0.1:{port}/shop"
        assert run_dbops(["db", "status"], env).returncode == 0
        settings = load_settings(env)
        with connect(settings.target_url()) as conn:
            got = dict(conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('shared_preload_libraries', 'wal_level', 'summarize_wal', 'listen_addresses', 'port')"
            ).fetchall())
            dbs = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
        assert got == {"shared_preload_libraries": "pg_stat_statements", "wal_level": "replica",
                       "summarize_wal": "on", "listen_addresses": "127.0.0.1", "port": str(port)}
        assert {"shop", "dagster"} <= dbs
        assert (home / "run" / f".s.PGSQL.{port}").exists()  # the Unix socket too
        again = run_dbops(["db", "up"], env)
        assert again.returncode == 0 and "already running" in again.stdout
        down = run_dbops(["db", "down"], env)
        assert down.returncode == 0 and "stopped" in down.stdout
        assert run_dbops(["db", "status"], env).returncode == 3
    finally:
        run_dbops(["db", "down"], env)
        shutil.rmtree(home, ignore_errors=True)


def test_external_url_means_no_embedded_server(tmp_path: Path, fresh_db: str) -> None:
    env = {**os.environ, "DBOPS_DATABASE_URL": fresh_db, "DBOPS_HOME": str(tmp_path / "h")}
    result = run_dbops(["db", "up"], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: DBOPS_DATABASE_URL is set")
    assert not (tmp_path / "h" / "pgdata").exists()
    status = run_dbops(["db", "status"], env)
    assert status.returncode == 0 and "***" in status.stdout


def test_definitions_load() -> None:
    from dbops.definitions import load

    defs = load()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert "dbops/schema_migrations" in keys
    checks = {c.name for c in graph.asset_check_keys}
    assert {"migration_history_valid", "no_pending_migrations", "migrations_lint"} <= checks
    defs.resolve_all_job_defs()


def test_step_groups_get_their_own_help() -> None:
    import os

    for group in ("migrate", "seed", "backup", "validate"):
        result = run_dbops([group, "--help"], dict(os.environ))
        assert result.returncode == 0 and f"usage: dbops {group}" in result.stdout, (group, result.stderr)


def test_step_folders_dagster_groups_help_and_readme_use_the_same_names() -> None:
    """Every Dagster group is a step: dbops/<group>/ (domain) and dbops/components/<group>/ (Dagster), named so in the
    README's steps table and in `dbops --help`."""
    from dbops.definitions import load
    from dbops_tests.conftest import PROJECT_DIR

    graph = load().resolve_asset_graph()
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {"migrate", "catalog", "profile", "loadtest", "backup", "restore", "validate", "security",
                      "maintain", "health"}
    readme = (PROJECT_DIR / "README.md").read_text()
    steps = readme[readme.index("## The lifecycle steps"):readme.index("## Schedules")]
    shown = run_dbops(["--help"], dict(os.environ))
    assert shown.returncode == 0, shown.stderr
    listed = " ".join(shown.stdout.split()).split("(dbops run 'group:STEP'): ")[1].split(";")[0]
    assert set(listed.split(", ")) == groups, listed
    for group in groups:
        assert (PROJECT_DIR / "dbops" / group).is_dir(), group
        assert (PROJECT_DIR / "dbops" / "components" / group).is_dir(), group
        assert f"\n| {group} | " in steps and f"({group}) |" in steps, group
    brackets = {line.split("[", 1)[1].split("]")[0] for line in shown.stdout.splitlines() if "[" in line}
    assert brackets - {"-h", "STEP"} <= groups | {"seed", "settings"}  # every command's step, or a helper folder


def test_every_alerting_target_names_a_check_that_exists() -> None:
    """monitoring/targets.yml pages on asset checks; a typo there would silently never page."""
    import yaml

    from dbops.definitions import load
    from dbops.health.targets import load_targets
    from dbops.health.verdicts import check_names
    from dbops_tests.conftest import PROJECT_DIR

    declared = {(c["asset"], c["check"]) for c in yaml.safe_load((PROJECT_DIR / "monitoring" / "targets.yml")
                                                                  .read_text())["checks"]}
    # the targets file names a target's assets without the target: every target reads it for its own
    existing = {(k.asset_key.path[-1], k.name) for k in load().resolve_asset_graph().asset_check_keys
                if k.asset_key.path[0] == "dbops"}
    assert declared <= existing, declared - existing
    # database_health's checks are its metric targets (they alert as those, through the health observations)
    health = {name for asset, name in existing if asset == "database_health"}
    assert health == set(check_names(load_targets(PROJECT_DIR / "monitoring" / "targets.yml")).values())
    assert existing - {("database_health", n) for n in health} <= declared, existing - declared


def test_a_configuration_mistake_is_one_line_each_and_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI reads the settings once, before any command: every mistake one line, status 2, nothing started."""
    from dbops.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DBOPS_PG_PORT", "abc")
    monkeypatch.setenv("DBOPS_BACKUP_KEEP_LAST", "0")
    assert main(["db", "up"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: DBOPS_") for line in lines), lines
    assert not (tmp_path / "home").exists()

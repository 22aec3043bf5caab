"""One dbops component per target: the dg project layout, assets keyed ``<target>/<asset>``, everything named and
pooled per target, and two runs in one target's pool waiting for each other on Dagster's own run queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dbops.components.naming import pool
from dbops.instance import dagster_storage_env
from dbops_tests.conftest import PROJECT_DIR

TWO_TARGETS = """
targets:
  dbops:
    embedded: true
  shop:
    embedded: true
    db_name: shop
    schedules:
      restore_drill_weekly: {enabled: off, cron: "0 7 * * 6"}
"""
STEPS = {"migrate", "catalog", "profile", "loadtest", "backup", "restore", "validate", "security", "maintain",
         "health"}


@pytest.fixture
def two_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    """The code location loaded from its defs folder with a two-target dbops.yaml, as `dagster dev` loads it."""
    config = tmp_path / "dbops.yaml"
    config.write_text(TWO_TARGETS)
    monkeypatch.setenv("DBOPS_CONFIG", str(config))
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    from dbops.definitions import defs

    return defs()


def test_each_target_is_one_component_with_its_own_keys_names_and_pool(two_targets: dg.Definitions) -> None:
    graph = two_targets.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    by_target: dict[str, set[str]] = {}
    for key in keys:
        assert len(key.path) == 2, key  # <target>/<asset>, nothing unprefixed
        by_target.setdefault(key.path[0], set()).add(key.path[1])
    assert set(by_target) == {"dbops", "shop"}
    assert by_target["dbops"] == by_target["shop"] and "schema_migrations" in by_target["shop"]
    assert {graph.get(k).group_name for k in keys} == STEPS
    # every asset that reads or writes the database runs in its target's pool; only the observed health figures and
    # alerts, written by sensors, have no step to queue
    for key in keys:
        node = graph.get(key)
        if node.is_executable:
            assert node.pools == {pool(key.path[0])}, key
        else:
            assert key.path[1] in {"database_health", "alerts"}, key
    # checks hang on their own target's assets
    checks = {(c.asset_key.path[0], c.name) for c in graph.asset_check_keys}
    assert ("shop", "rehearsal_safe") in checks and ("dbops", "rehearsal_safe") in checks
    # schedules and sensors are named for their target, and a target's settings set its own
    schedules = {s.name: s for s in two_targets.schedules}
    sensors = {s.name for s in two_targets.sensors}
    assert all(name.startswith(("dbops_", "shop_")) for name in [*schedules, *sensors])
    assert {"dbops_alerts", "shop_alerts", "shop_database_health_sensor", "shop_wal_archive_sensor"} <= sensors
    assert schedules["shop_restore_drill_weekly"].cron_schedule == "0 7 * * 6"
    assert schedules["shop_restore_drill_weekly"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedules["dbops_restore_drill_weekly"].default_status == dg.DefaultScheduleStatus.RUNNING
    # a target's rehearsal gates its own migrations only
    migrations = graph.get(dg.AssetKey(["shop", "schema_migrations"]))
    assert migrations.parent_keys == {dg.AssetKey(["shop", "migration_rehearsal"])}
    dg.Definitions.validate_loadable(two_targets)


def test_the_code_location_is_a_dg_project_named_dbops() -> None:
    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert project["code_location_name"] == "dbops" and project["defs_module"] == "dbops.defs"
    location = yaml.safe_load((PROJECT_DIR / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert location == {"module_name": "dbops.definitions", "location_name": "dbops"}
    declared = yaml.safe_load((PROJECT_DIR / "dbops" / "defs" / "fleet" / "defs.yaml").read_text())
    assert declared["type"] == "dbops.components.DbopsFleet"


def _dg(args: list[str], tmp_path: Path, config: Path) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "dagster-home"  # an instance of its own: dg needs none of dbops' storage
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DBOPS_CONFIG": str(config), "DBOPS_HOME": str(tmp_path / "h"),
           "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
    return subprocess.run([str(Path(sys.executable).parent / "dg"), *args], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_dg_check_defs_and_dg_list_defs_pass(tmp_path: Path) -> None:
    config = tmp_path / "dbops.yaml"
    config.write_text(TWO_TARGETS)
    check = _dg(["check", "defs"], tmp_path, config)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = _dg(["list", "defs", "--json"], tmp_path, config)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assets = {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
    assert {"dbops/schema_migrations", "shop/schema_migrations", "shop/restore_drill"} <= assets


def test_dg_check_defs_fails_on_a_configuration_mistake(tmp_path: Path) -> None:
    config = tmp_path / "dbops.yaml"
    config.write_text(TWO_TARGETS.replace("db_name: shop", "db_nme: shop"))
    check = _dg(["check", "defs"], tmp_path, config)
    assert check.returncode != 0
    assert "db_nme" in check.stdout + check.stderr


# A run of one asset in a target's pool that notes when it held the database; launched as its own process, as the
# run launcher does, against the project's own dagster.yaml (PostgreSQL storage, pools default_limit 1).
CHILD = r"""
import json, sys, time
import dagster as dg
from dbops.components.naming import asset_key, pool
target, name, out = sys.argv[1:4]

@dg.asset(key=asset_key(target, name), pool=pool(target))
def step() -> None:
    began = time.time()
    time.sleep(2)
    with open(out, "w") as f:
        json.dump([began, time.time()], f)

with dg.DagsterInstance.get() as instance:
    assert dg.materialize([step], instance=instance).success
"""


def test_two_runs_in_one_targets_pool_wait_for_each_other(tmp_path: Path, fresh_db: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_DIR / "dbops" / "dagster.yaml").read_text())
    for name, value in {**dagster_storage_env(fresh_db), "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    env = dict(os.environ)
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the storage's tables, made once before the runs race
        # and each pool's row: two runs creating the same pool's limit at once abort one of them inside Dagster
        # (InFailedSqlTransaction on concurrency_limits), a race of a fresh instance, not of the pools under test
        for key in ("shop", "dbops"):
            instance.event_log_storage.initialize_concurrency_limit_to_default(key)
    runs = {"one": "shop", "two": "shop", "three": "dbops"}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, target, name, str(tmp_path / f"{name}.json")],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for name, target in runs.items()]
    for child in children:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0, out[-2000:]
    held = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in runs}
    one, two, three = held["one"], held["two"], held["three"]
    assert one[1] <= two[0] or two[1] <= one[0], held  # the shop runs took turns
    first, last = min(one[0], two[0]), max(one[1], two[1])
    assert three[0] < last and first < three[1], held  # the other target's run did not wait for them

"""Dagster idioms on every target's definitions: the lineage graph tells the lifecycle (migrate → catalog →
profile/advice → load test → backup → drill → integrity → audit → alerts) without changing what a schedule runs;
every check and job is described; every asset tagged with its step and target and linked to its source; freshness
policies on the backups, the catalog and the integrity validation; automation conditions, each with its own sensor,
that launch nothing on a first install and only what they name after an upstream update."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dbops.components.naming import asset_key, def_name
from dbops.components.schedules import AUTOMATIONS, STEP_SCHEDULES
from dbops.components.target import GRAPH_ONLY_DEPS, LIFECYCLE_DEPS, STEP_TAG, TARGET_TAG, fleet_defs
from dbops.settings import load_settings
from dbops_tests.conftest import PROJECT_DIR

TARGET = "shop"


def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str = "") -> dg.Definitions:
    """The fleet of a one-target dbops.yaml (``yaml_text`` adds to the target's block), as the code location builds
    it."""
    config = tmp_path / "dbops.yaml"
    config.write_text(f"targets:\n  {TARGET}:\n    embedded: true\n{yaml_text}")
    monkeypatch.setenv("DBOPS_CONFIG", str(config))
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    settings = load_settings({"DBOPS_HOME": str(tmp_path / "home")}, cwd=tmp_path, config_file=config)
    return fleet_defs(settings)


@pytest.fixture
def defs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    return load(tmp_path, monkeypatch)


def key(name: str) -> dg.AssetKey:
    return asset_key(TARGET, name)


def assets_by_key(defs: dg.Definitions) -> dict[dg.AssetKey, dg.AssetsDefinition | dg.AssetSpec]:
    out: dict[dg.AssetKey, dg.AssetsDefinition | dg.AssetSpec] = {}
    for a in defs.assets or []:
        for k in a.keys if isinstance(a, dg.AssetsDefinition) else [a.key]:  # type: ignore[union-attr]
            out[k] = a  # type: ignore[assignment]
    return out


def test_the_graph_is_the_lifecycle(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    for name, upstream in LIFECYCLE_DEPS.items():
        assert {key(u) for u in upstream} <= graph.get(key(name)).parent_keys, name
    # the story in order: each stage reaches the next through the graph
    story = ["schema_migrations", "schema_catalog", "query_profile", "index_advice", "load_test"]
    for up, down in zip(story, story[1:], strict=False):
        assert key(up) in graph.get(key(down)).parent_keys, (up, down)
    ancestors = {k: graph.get(k).parent_keys for k in graph.get_all_asset_keys()}

    def upstream_of(k: dg.AssetKey) -> set[dg.AssetKey]:
        seen: set[dg.AssetKey] = set()
        todo = [k]
        while todo:
            for p in ancestors[todo.pop()]:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    # every lifecycle step but the rehearsal and the observed health figures descends from the migrations, and
    # alerts from every step; the graph has no cycle (an asset is never its own ancestor)
    for name in LIFECYCLE_DEPS:
        if name != "schema_migrations":
            assert key("schema_migrations") in upstream_of(key(name)), name
    assert {key(n) for n in LIFECYCLE_DEPS} <= graph.get(key("alerts")).parent_keys
    assert key("restore_drill") in upstream_of(key("alerts"))
    for k in graph.get_all_asset_keys():
        assert k not in upstream_of(k), k


def test_lifecycle_deps_order_the_steps_of_one_run(defs: dg.Definitions) -> None:
    """A dep only added by target.py shows in the graph but does not order two steps of one run in Dagster 1.13: each
    step declares its lifecycle deps in its own decorator. Lists the ones still missing (their owners add them)."""
    by_key = assets_by_key(defs)
    unwired = []
    for name, upstream in LIFECYCLE_DEPS.items():
        asset = by_key[key(name)]
        assert isinstance(asset, dg.AssetsDefinition), name
        wired = set(asset.keys_by_input_name.values())
        unwired += [f"{name} <- {u}" for u in upstream if key(u) not in wired and (name, u) not in GRAPH_ONLY_DEPS]
    assert not unwired, f"deps not declared by the step itself: {unwired}"


def test_deps_do_not_change_what_schedules_and_sensors_run(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    for row in STEP_SCHEDULES:
        schedule = defs.resolve_schedule_def(def_name(TARGET, row.name))
        selected = defs.resolve_job_def(schedule.job_name).asset_layer.selected_asset_keys
        assert selected == {key(a) for a in (*row.assets, *row.gates)}, row.name
    sensors = {s.name: s for s in defs.sensors or []}
    migrations = sensors[def_name(TARGET, "new_migration_files")].asset_selection.resolve(graph)  # type: ignore
    assert migrations == {key("schema_migrations"), key("migration_rehearsal")}
    for auto in AUTOMATIONS:
        assert sensors[def_name(TARGET, auto.name)].asset_selection.resolve(graph) == {key(auto.asset)}  # type: ignore


def test_every_check_and_job_is_described(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    undescribed = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys
                         if not (graph.get_check_spec(c).description or "").strip())
    assert not undescribed, f"checks without a description: {undescribed}"
    jobs = [j for j in defs.get_repository_def().get_all_jobs() if not j.name.startswith("__")]
    assert not [j.name for j in jobs if not (j.description or "").strip()]
    for item in [*(defs.schedules or []), *(defs.sensors or [])]:
        assert (item.description or "").strip(), item.name  # type: ignore[union-attr]


def test_every_asset_is_tagged_and_linked_to_its_source(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    for k in graph.get_all_asset_keys():
        node = graph.get(k)
        assert node.tags[STEP_TAG] == node.group_name and node.tags[TARGET_TAG] == TARGET, k
        if not node.is_executable:
            continue
        refs = node.metadata["dagster/code_references"].code_references
        local = [r for r in refs if r.file_path.endswith(".py")]
        assert local, k
        path = Path(local[0].file_path)
        assert path.is_relative_to(PROJECT_DIR / "dbops" / "components"), (k, path)
        line = path.read_text().splitlines()[local[0].line_number - 1]
        assert line.lstrip().startswith(("def ", "@")), (k, line)  # the step's function or its decorator
    health = graph.get(key("database_health"))
    assert def_name(TARGET, "database_health_sensor") in (health.description or "")


def test_freshness_policies_follow_the_limits_and_the_schedules(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    targets = tmp_path / "targets.yml"
    content = yaml.safe_load((PROJECT_DIR / "monitoring" / "targets.yml").read_text())
    content.setdefault("limits", {})["backup_max_age_hours"] = 13
    targets.write_text(yaml.safe_dump(content))
    defs = load(tmp_path, monkeypatch, f"    targets_file: {targets}\n")
    graph = defs.resolve_asset_graph()

    def window(name: str) -> timedelta | None:
        policy = graph.get(key(name)).freshness_policy
        return None if policy is None else policy.fail_window.to_timedelta()  # type: ignore[attr-defined]

    assert window("logical_backup") == window("base_backup") == timedelta(hours=13)
    assert window("schema_catalog") == window("integrity_validation") == timedelta(hours=26)
    assert window("load_test") is None and window("query_profile") is None
    # a step nothing keeps fresh gets no policy (it would only ever fail); nor a daily policy on a weekly cron
    (tmp_path / "off").mkdir()
    off = load(tmp_path / "off", monkeypatch, f"""    targets_file: {targets}
    schedules:
      logical_backup_daily: {{enabled: off}}
      catalog_daily: {{cron: "0 2 * * 0"}}
      integrity_daily: {{enabled: off}}
""").resolve_asset_graph()
    assert off.get(key("logical_backup")).freshness_policy is None
    assert off.get(key("schema_catalog")).freshness_policy is None
    assert off.get(key("integrity_validation")).freshness_policy is None
    assert off.get(key("base_backup")).freshness_policy is not None


def test_automation_launches_nothing_at_install_and_the_catalog_after_a_migration(defs: dg.Definitions) -> None:
    sensors = {s.name: s for s in defs.sensors or []}
    assert sensors[def_name(TARGET, "catalog_after_migrations")].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors[def_name(TARGET, "advice_after_profile")].default_status == dg.DefaultSensorStatus.STOPPED
    repo_sensors = {s.name for s in defs.get_repository_def().sensor_defs}
    assert "default_automation_condition_sensor" not in repo_sensors  # every condition has its named sensor
    graph = defs.resolve_asset_graph()
    automated = {k.path[1] for k in graph.get_all_asset_keys() if graph.get(k).automation_condition is not None}
    assert automated == {a.asset for a in AUTOMATIONS}

    def evaluate(instance: dg.DagsterInstance, cursor=None):  # type: ignore[no-untyped-def]
        with warnings.catch_warnings():  # Dagster's own evaluation helper selects with a beta parameter
            warnings.simplefilter("ignore", dg.BetaWarning)
            return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

    def requested(result) -> set[str]:  # type: ignore[no-untyped-def]
        return {r.key.path[1] for r in result.results if r.true_subset.size}

    with dg.instance_for_test() as instance:
        first = evaluate(instance)
        assert first.total_requested == 0  # installing dbops, opening the UI: nothing runs
        for name in ("schema_migrations", "query_profile"):
            instance.report_runless_asset_event(dg.AssetMaterialization(key(name)))
        after = evaluate(instance, first.cursor)
        assert requested(after) == {"schema_catalog"}  # not the heavy advice: its condition waits for its cron
        assert evaluate(instance, after.cursor).total_requested == 0  # once per update


def test_a_targets_owners_own_every_one_of_its_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = load(tmp_path, monkeypatch, "    owners: [team:dba, oncall@example.com]\n").resolve_asset_graph()
    owners = {k.to_user_string(): list(graph.get(k).owners) for k in graph.get_all_asset_keys()}
    assert owners and all(o == ["team:dba", "oncall@example.com"] for o in owners.values()), owners


def test_without_owners_no_asset_claims_one(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    assert not [k for k in graph.get_all_asset_keys() if graph.get(k).owners]

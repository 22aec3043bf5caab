"""The materialized-view step in Dagster: ``<target>/materialized_views`` refreshes and records, its check
``materialized_views_fresh`` passes, fails once the record says the view is too old, and warns on a database with no
materialized view; the hourly schedule and the freshness policy are wired."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from dbops.components import maintain, migrate
from dbops.components.maintain.matviews import ASSET, CHECK, build
from dbops.components.naming import asset_key, op_name
from dbops.components.resources import DatabaseResource
from dbops.components.schedules import build_schedules
from dbops.components.target import shared_resources
from dbops.maintain.matviews import MatviewState
from dbops.pg.connect import connection
from dbops.settings import load_settings
from dbops_tests.foreign import ForeignSchema

TARGET = "dbops"  # no config file: the one embedded target
KEY = asset_key(TARGET, ASSET)


def run(url: str, *, check_only: bool = False, lock_timeout_s: float = 1.0) -> dg.ExecuteInProcessResult:
    defs = build(TARGET)
    return dg.materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"database": DatabaseResource(url=url)},
        selection=dg.AssetSelection.checks_for_assets(KEY) if check_only else None,
        run_config=None if check_only else {"ops": {op_name(TARGET, ASSET): {"config": {
            "lock_timeout_s": lock_timeout_s}}}},
        raise_on_error=False,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_refresh_asset_then_check_passes_and_fails_when_the_record_is_old(seeded_small: str, home: Path) -> None:
    result = run(seeded_small)
    assert result.success
    meta = result.asset_materializations_for_node(op_name(TARGET, ASSET))[0].metadata
    assert (meta["views"].value, meta["refreshed"].value, meta["skipped"].value, meta["failed"].value) == (1, 1, 0, 0)
    view = meta["per_view"].value["app.daily_sales"]
    assert view["method"] == "concurrently" and view["status"] == "refreshed" and view["rows"] > 0
    assert view["bytes"] > 0 and view["seconds"] > 0
    [row] = [r.data for r in meta["refreshes"].value.records]  # a table with its schema
    assert (row["view"], row["method"], row["status"]) == ("app.daily_sales", "concurrently", "refreshed")
    assert row["rows"] == view["rows"] and isinstance(row["seconds"], float)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK and evaluation.asset_key == KEY and evaluation.passed
    assert evaluation.metadata["views"].value == 1

    state = MatviewState.of(home, TARGET)
    assert meta["record"].value == str(state.path)
    recorded = state.load()
    recorded["app.daily_sales"]["refreshed_at"] = (dt.datetime.now(dt.UTC) - timedelta(hours=3)).isoformat()
    state.save(recorded)
    aged = run(seeded_small, check_only=True)
    assert aged.success and not aged.asset_materializations_for_node(op_name(TARGET, ASSET))
    [evaluation] = aged.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["stale_or_failed"].value == 1
    assert "app.daily_sales: refreshed 3.0 h ago, more than 2 h" in evaluation.metadata["problems"].value

    again = run(seeded_small)  # the next run refreshes it: fresh again
    assert again.success and again.get_asset_check_evaluations()[0].passed


def test_failed_refresh_is_an_error(migrated_db: str, home: Path) -> None:
    with connection(migrated_db) as conn:  # a view whose new rows CONCURRENTLY refuses: two identical rows
        conn.execute("CREATE TABLE public.src (k int)")
        conn.execute("CREATE MATERIALIZED VIEW public.dupes AS SELECT k FROM public.src")
        conn.execute("CREATE UNIQUE INDEX dupes_key ON public.dupes (k)")
        conn.execute("INSERT INTO public.src VALUES (2), (2)")
    result = run(migrated_db)
    assert result.success
    meta = result.asset_materializations_for_node(op_name(TARGET, ASSET))[0].metadata
    assert meta["failed"].value == 1 and meta["refreshed"].value == 1
    assert "duplicate" in meta["per_view"].value["public.dupes"]["reason"]
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "public.dupes: last refresh failed:" in evaluation.metadata["problems"].value


def test_team_database_without_materialized_views_warns(foreign_db: tuple[ForeignSchema, str], home: Path) -> None:
    _, url = foreign_db
    result = run(url)
    assert result.success
    meta = result.asset_materializations_for_node(op_name(TARGET, ASSET))[0].metadata
    assert meta["views"].value == 0 and meta["refreshes"].value == "no materialized view"
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["reason"].value.startswith("nothing checked: no materialized view")


def test_group_loads_with_schedule_and_freshness_policy(tmp_path: Path) -> None:
    steps = dg.Definitions.merge(migrate.build(TARGET, rehearsal=False), maintain.build(TARGET))
    own = {k for a in steps.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    target = load_settings({"DBOPS_HOME": str(tmp_path / "home")}, cwd=tmp_path).target(TARGET)
    merged = dg.Definitions.merge(steps, dg.Definitions(schedules=build_schedules(target, own),
                                                        resources=shared_resources()))
    dg.Definitions.validate_loadable(merged)
    graph = merged.resolve_asset_graph()
    node = graph.get(KEY)
    assert node.group_name == "maintain" and node.pools == {TARGET} and "postgres" in node.kinds
    assert asset_key(TARGET, "schema_migrations") in node.parent_keys
    assert dg.AssetCheckKey(KEY, CHECK) in graph.asset_check_keys
    schedule = merged.resolve_schedule_def("dbops_materialized_views_hourly")
    assert schedule.cron_schedule == "5 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    policy = build(TARGET, max_age_hours=target.matviews.max_age_hours).assets[0].specs_by_key[KEY].freshness_policy
    assert policy is not None and policy.fail_window.to_timedelta() == timedelta(hours=2)
    assert build(TARGET).assets[0].specs_by_key[KEY].freshness_policy is None

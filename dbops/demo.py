"""`dbops demo` (what `make demo` runs): the whole lifecycle on the embedded server, then the scorecard."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from dbops.definitions import defs
from dbops.instance import prepare_environment
from dbops.pg.connect import connection
from dbops.runner import run_selection
from dbops.scorecard import build_scorecard
from dbops.seed import seed
from dbops.settings import Settings


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def _done(started: float) -> None:
    print(f"   ({time.monotonic() - started:.1f} s)", flush=True)


def orders_present(url: str) -> bool:
    with connection(url) as conn:
        exists = conn.execute("SELECT to_regclass('app.orders') IS NOT NULL").fetchone()[0]  # type: ignore[index]
        if not exists:
            return False
        return conn.execute("SELECT EXISTS (SELECT 1 FROM app.orders)").fetchone()[0]  # type: ignore[index]


def unpartitioned_selection(defs: dg.Definitions) -> list[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    return sorted(
        (
            key
            for key in graph.get_all_asset_keys()
            if graph.get(key).is_executable and not graph.get(key).is_partitioned
        ),
        key=lambda k: k.to_user_string(),
    )


# The demo's load test: the 10,000-user ramp through PgBouncer, with short steps so the demo stays a few minutes.
DEMO_LOAD_TEST = {"load_test": {"config": {"ramp": [100, 10000], "duration_s": 15, "capacity_duration_s": 10}}}


def integrity_window(days: int = 30) -> tuple[str, str]:
    """The last ``days`` complete UTC days: the seed data spans the 60 days before today's midnight."""
    today = datetime.now(UTC).date()
    return (today - timedelta(days=days)).isoformat(), (today - timedelta(days=1)).isoformat()


def run_demo(settings: Settings, scale: float = 1.0) -> int:
    began = time.monotonic()
    t = _step("embedded PostgreSQL")
    settings = prepare_environment(settings)
    _done(t)

    failures = 0
    with dg.DagsterInstance.get() as instance:
        t = _step("migrate (group migrate: the rehearsal on the latest backup, then schema_migrations)")
        summary = run_selection(defs, "group:migrate", instance, log_level=settings.log_level)
        print(summary.render())
        failures += not summary.success
        _done(t)

        t = _step(f"seed (scale {scale:g})")
        if orders_present(settings.target_url()):
            print("   already seeded; keeping the data (`dbops seed --reset` reseeds)")
        else:
            result = seed(settings.target_url(), scale)
            print("\n".join("   " + line for line in result.render().splitlines()))
        _done(t)

        graph = defs.resolve_asset_graph()
        rest = [k for k in unpartitioned_selection(defs) if graph.get(k).group_name != "migrate"]
        if rest:
            t = _step("lifecycle: " + ", ".join(k.to_user_string() for k in rest))
            selection = " or ".join(f'key:"{k.to_user_string()}"' for k in rest)
            summary = run_selection(defs, selection, instance, ops_config=DEMO_LOAD_TEST, log_level=settings.log_level)
            print(summary.render())
            failures += not summary.success
            _done(t)

        if "integrity_validation" in {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}:
            first, last = integrity_window()
            t = _step(f"integrity validation backfill: {first} to {last} (30 daily partitions, one run)")
            summary = run_selection(defs, "integrity_validation", instance, partition_range=(first, last),
                                    log_level=settings.log_level)
            print(summary.render())
            failures += not summary.success
            _done(t)

        t = _step("scorecard")
        card = build_scorecard(instance)
        print(card.render())
        _done(t)
    print(f"\ndemo finished in {time.monotonic() - began:.1f} s; the runs are in the Dagster UI (`make ui`)")
    if card.failed:
        print("targets missed: " + ", ".join(r.target.metric for r in card.failed) + " (measured, see above)")
    # A missed target is a finding, reported above; the demo fails only when a step could not run.
    return 1 if failures else 0

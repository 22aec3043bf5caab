"""A target's health group loads beside the other steps, and a malformed targets file stops the code location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from dbops.components import health
from dbops.components.naming import asset_key
from dbops.components.resources import default_resources

TARGET = "dbops"  # no config file: the one embedded target


def test_health_defs_load_as_group_health() -> None:
    defs = dg.Definitions.merge(health.build(TARGET), dg.Definitions(resources=default_resources()))
    dg.Definitions.validate_loadable(defs)
    assert {s.name for s in defs.sensors or []} == {"dbops_database_health_sensor", "dbops_alerts"}
    spec = defs.resolve_asset_graph().get(asset_key(TARGET, "database_health"))
    assert spec.key.to_user_string() == "dbops/database_health"
    assert spec.group_name == "health"


def test_a_malformed_targets_file_stops_the_code_location_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "targets.yml"
    bad.write_text("metrics:\n  - {metric: cache_hit_ratio, op: '<', threshold: 0.99, for: 2 weeks}\n")
    # The code location, as `dagster dev` and `dbops run` load it: each target's health step reads its targets file.
    proc = subprocess.run([sys.executable, "-c", "from dbops.definitions import load; load()"], capture_output=True,
                          text=True, env={**os.environ, "DBOPS_TARGETS": str(bad)}, timeout=120, check=False)
    assert proc.returncode != 0
    assert f"TargetsError: {bad}: metrics[1] (cache_hit_ratio).for: '2 weeks' is not a duration" in proc.stderr


def test_the_lineage_graph_ends_in_alerts_downstream_of_every_lifecycle_step() -> None:
    from dbops.components.health.sensors import ALERTED_ASSETS
    from dbops.definitions import load

    graph = load().resolve_asset_graph()
    alerts = graph.get(asset_key(TARGET, "alerts"))
    assert alerts.group_name == "health" and alerts.kinds
    assert "recorded by the dbops_alerts sensor" in (alerts.description or "")
    assert "dbops_database_health_sensor" in (graph.get(asset_key(TARGET, "database_health")).description or "")
    defined = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable or k.path[-1] ==
               "database_health"}
    assert set(alerts.parent_keys) == {asset_key(TARGET, name) for name in ALERTED_ASSETS}
    assert set(alerts.parent_keys) <= defined  # every dep is a real step of the target, none a dangling key
    assert not graph.get(asset_key(TARGET, "alerts")).child_keys  # the end of the graph

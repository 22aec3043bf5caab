"""The health group loads beside the other steps, and a malformed targets file stops the code location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from dbops.defs import health
from dbops.defs.resources import default_resources


def test_health_defs_load_as_group_health() -> None:
    defs = dg.Definitions.merge(health.defs, dg.Definitions(resources=default_resources()))
    dg.Definitions.validate_loadable(defs)
    assert {s.name for s in defs.sensors or []} == {"database_health_sensor", "dbops_alerts"}
    spec = defs.resolve_asset_graph().get(dg.AssetKey("database_health"))
    assert spec.group_name == "health"


def test_a_malformed_targets_file_stops_the_code_location_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "targets.yml"
    bad.write_text("metrics:\n  - {metric: cache_hit_ratio, op: '<', threshold: 0.99, for: 2 weeks}\n")
    proc = subprocess.run([sys.executable, "-c", "import dbops.defs.health"], capture_output=True, text=True,
                          env={**os.environ, "DBOPS_TARGETS": str(bad)}, timeout=120, check=False)
    assert proc.returncode != 0
    assert f"TargetsError: {bad}: metrics[1] (cache_hit_ratio).for: '2 weeks' is not a duration" in proc.stderr

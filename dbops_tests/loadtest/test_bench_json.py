"""bench/loadtest.py end to end on a tiny scale: one JSON document with the documented shape (no figure asserted
beyond "measured")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def test_bench_prints_one_json_document_with_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "loadtest.json"
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "bench" / "loadtest.py"), "--scale", "0.02", "--clients", "2", "--duration", "1",
         "--rounds", "2", "--ramp", "5,10", "--ramp-duration", "1", "--think-time", "0.2", "--pool-sizes", "1,2",
         "--quiet-wait", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)  # stdout is the one document; progress goes to stderr
    assert json.loads(out.read_text()) == report
    summary = report["summary"]
    for key in ("think_time_s", "users", "users_tps", "users_p95_ms", "degradation_p95_ratio", "server_cpu_ms_per_tx",
                "statements_ms_per_tx", "plan_ms_per_tx", "exec_ms_per_tx", "place_order_tps_spread",
                "place_order_stable_10pct", "pgbouncer_max_cl_waiting", "pgbouncer_max_maxwait_ms",
                "pgbouncer_max_sv_active", "recommended_default_pool_size", "recommended_max_connections",
                "cpus", "load_avg_before", "load_avg_after"):
        assert key in summary, key
    assert summary["think_time_s"] == 0.2 and summary["users"] == 10
    assert summary["server_cpu_ms_per_tx"] > 0 and summary["exec_ms_per_tx"] > 0
    assert summary["plan_ms_per_tx"] > 0  # track_planning is on in the bench's server
    assert isinstance(summary["place_order_stable_10pct"], bool)
    spread = summary["place_order_tps_spread"]
    assert spread["min"] <= spread["median"] <= spread["max"] and len(report["place_order"]["dbops_tps"]) == 2
    assert summary["recommended_default_pool_size"] in (1, 2)
    assert summary["cpus"] >= 1 and len(summary["load_avg_before"]) == 3
    assert report["settle_after_seed"]["settled"] is True  # VACUUM ANALYZE done, autovacuum idle within 2 min
    for step in report["users"]["steps"]:
        assert len(step["rounds"]) == 2 and step["pgbouncer"]["samples"] >= 1 and step["tps_spread"] is not None
    assert [s["pool_size"] for s in report["pool_sizes"]["steps"]] == [1, 2]
    protocols = report["protocols"]
    assert protocols["extended"]["protocol"] == "extended" and protocols["prepared"]["protocol"] == "prepared"
    assert protocols["through_pgbouncer_prepared"]["supported"] in (True, False)
    assert report["measures"]["server_cpu_ms_per_tx"].startswith("user+system CPU")

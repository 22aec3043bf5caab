"""A check whose asset raised before it reported leaves only its planned event: the alert sensor's reading of the
latest evaluation must take that as "not run" (the asset's failure is the incident), never crash the tick."""

from __future__ import annotations

import dagster as dg

from dbops.health.lifecycle import check_outcome

KEY = dg.AssetKey(["t", "a"])


@dg.asset(key=KEY, check_specs=[dg.AssetCheckSpec("c", asset=KEY, description="never reached")])
def raises() -> dg.MaterializeResult:
    raise RuntimeError("boom")


@dg.asset(key=KEY, check_specs=[dg.AssetCheckSpec("c", asset=KEY, description="reported")])
def reports() -> dg.MaterializeResult:
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="c", passed=False)])


def test_a_check_planned_but_never_reported_is_not_run() -> None:
    instance = dg.DagsterInstance.ephemeral()
    assert not dg.materialize([raises], instance=instance, raise_on_error=False).success
    assert check_outcome(instance, "a", "c", "t") is None
    dg.materialize([reports], instance=instance, raise_on_error=False)
    outcome = check_outcome(instance, "a", "c", "t")
    assert outcome is not None and outcome[0] is False

"""The asset checks of ``<target>/database_health``: one per metric target of the target's targets file.

The health sensor records an evaluation whenever a check's outcome changes (the figure crossed its threshold and
stayed past it for the target's ``for``, came back, or stopped being measured), so the UI shows each check's state
without an evaluation per minute. Executed from the UI ("Execute"), the checks sample the database at once and judge
that sample alone: a breach shorter than its ``for`` passes, as it would not page yet.
"""


from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from dbops.components.metadata import figures
from dbops.components.naming import asset_key, def_name
from dbops.components.resources import DatabaseResource, launch_target
from dbops.health.metrics import collect_health
from dbops.health.runbooks import alert_name, runbook_url
from dbops.health.targets import MetricTarget, Targets
from dbops.health.verdicts import Verdict, check_names, judge

SEVERITY = {"critical": dg.AssetCheckSeverity.ERROR, "warning": dg.AssetCheckSeverity.WARN}


def check_description(target: MetricTarget) -> str:
    return (f"Fails when {target.key.removeprefix('metric:')} for {target.for_seconds:g} s (the targets file's "
            f"'for'): {target.summary or target.key}. Recorded by the health sensor when its outcome changes.")


def health_check_specs(target: str, targets: Targets) -> list[dg.AssetCheckSpec]:
    key = asset_key(target, "database_health")
    by_key = {t.key: t for t in targets.metrics}
    return [dg.AssetCheckSpec(name, asset=key, description=check_description(by_key[metric_key]))
            for metric_key, name in check_names(targets).items()]


def verdict_metadata(verdict: Verdict, runbook_base: str) -> dict[str, dg.MetadataValue]:
    t = verdict.target
    since = (datetime.fromtimestamp(verdict.breached_since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
             if verdict.breached_since is not None else None)
    runbook = runbook_url(alert_name(t.key), runbook_base)
    facts = figures({"value": verdict.value, "threshold": t.threshold, "target": f"not {t.op} {t.threshold:g}",
                     "for_seconds": t.for_seconds, "breached_since": since, "detail": verdict.detail})
    if not verdict.measured:
        facts["reason"] = dg.MetadataValue.text(verdict.detail)
    facts["runbook"] = (dg.MetadataValue.url(runbook) if "://" in runbook else dg.MetadataValue.path(runbook))
    return facts


def evaluation(target: str, verdict: Verdict, runbook_base: str) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=asset_key(target, "database_health"), check_name=verdict.check_name, passed=verdict.passed,
        severity=SEVERITY[verdict.severity], metadata=verdict_metadata(verdict, runbook_base),
        description=verdict.detail)


def build_health_checks(target: str, targets: Targets) -> dg.AssetChecksDefinition:
    """The checks of ``database_health``, executable: a fresh sample judged at once; a figure past its threshold
    fails whatever its ``for`` (that is how long the alert waits)."""

    @dg.multi_asset_check(
        specs=health_check_specs(target, targets),
        name=def_name(target, "database_health_checks"),
        description=f"Samples {target}'s database now and judges every health target of its targets file.",
        can_subset=True,
    )
    def database_health_checks(context: dg.AssetCheckExecutionContext,
                               database: DatabaseResource) -> Iterator[dg.AssetCheckResult]:
        settings = launch_target(target)
        sample = collect_health(database.for_target(target).target_url,
                                long_query_seconds=settings.health.long_query_seconds,
                                pooler_url=target_pooler_url(target))
        verdicts, _ = judge(targets, sample.metrics, sample.details, sample.at, error=sample.error)
        selected = {k.name for k in context.selected_asset_check_keys}
        for verdict in verdicts:
            if verdict.check_name in selected:
                yield dg.AssetCheckResult(
                    asset_key=asset_key(target, "database_health"), check_name=verdict.check_name,
                    passed=verdict.measured and verdict.breached_since is None,  # past its threshold now
                    severity=SEVERITY[verdict.severity],
                    metadata=verdict_metadata(verdict, settings.alerts.runbook_base), description=verdict.detail)

    return database_health_checks


def target_pooler_url(target: str) -> str | None:
    """The admin console URL of ``target``'s PgBouncer (``health.pooler_url_env``), read now; None without one."""
    ref = launch_target(target).health.pooler_url
    return ref.resolve() if ref is not None and ref.is_set else None

"""The latest figures of the other lifecycle steps, read from the Dagster instance's records: what the other steps
recorded, for alerts and Prometheus alike (backup age, drill RTO, load-test latency, audit findings, integrity
violations...), and the outcomes of a target's finished runs (failed or not) for the failure alerts.

The one module of a step that reads Dagster: records of the instance (materializations, check evaluations), never
definitions, so `dbops metrics` and the alert sensor read the same figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from dbops.health.alerts import ASSET, CHECK, RUN, Outcome
from dbops.health.targets import CheckTarget
from dbops.redact import redact


@dataclass
class LifecycleFigures:
    """Per asset: when it last materialized and its numeric metadata; per check: (passed, when)."""

    materialized_at: dict[str, float] = field(default_factory=dict)
    numbers: dict[str, dict[str, float]] = field(default_factory=dict)
    checks: dict[tuple[str, str], tuple[bool, float]] = field(default_factory=dict)
    backup_age_seconds: float | None = None


LIFECYCLE_ASSETS = ("schema_migrations", "schema_catalog", "query_profile", "index_advice", "load_test",
                    "logical_backup", "base_backup", "restore_drill", "backup_retention", "integrity_validation",
                    "index_integrity", "security_audit")
BACKUP_ASSETS = ("logical_backup", "base_backup")


def _numeric(value: object) -> float | None:
    raw = getattr(value, "value", value)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw)


def asset_key(target: str, asset: str) -> dg.AssetKey:
    """Target ``shop``'s asset ``load_test`` is ``shop/load_test`` (an empty target: the bare name)."""
    return dg.AssetKey([target, asset] if target else [asset])


def check_outcome(instance: dg.DagsterInstance, asset: str, check: str,
                  target: str = "") -> tuple[bool, float] | None:
    """(passed, when) of ``target``'s check's latest completed evaluation; None when it never ran (or its asset is
    absent).

    A record without an evaluation is a check still planned (None: not run yet) or one whose step failed (missed).
    """
    record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(asset_key(target, asset), check))
    if record is None:
        return None
    # An evaluation, or the planned event of a check that never reported (its step failed or is still running),
    # which carries no outcome: then the record's status tells.
    passed = getattr(record.evaluation, "passed", None)
    status = getattr(record.status, "value", record.status)
    if passed is None and status in ("PLANNED", "IN_PROGRESS"):
        return None
    if passed is None:
        passed = status == "SUCCEEDED"
    return bool(passed), float(record.event.timestamp if record.event else record.create_timestamp)


def lifecycle_figures(instance: dg.DagsterInstance, checks: tuple[CheckTarget, ...] = (),
                      now: float | None = None, target: str = "") -> LifecycleFigures:
    """The figures of ``target``'s assets (``<target>/<asset>``)."""
    figures = LifecycleFigures()
    for asset in LIFECYCLE_ASSETS:
        event = instance.get_latest_materialization_event(asset_key(target, asset))
        if event is None or event.asset_materialization is None:
            continue
        figures.materialized_at[asset] = float(event.timestamp)
        numbers = {}
        for key, value in event.asset_materialization.metadata.items():
            number = _numeric(value)
            if number is not None:
                numbers[key] = number
        figures.numbers[asset] = numbers
    backups = [figures.materialized_at[a] for a in BACKUP_ASSETS if a in figures.materialized_at]
    if backups:
        figures.backup_age_seconds = (time.time() if now is None else now) - max(backups)
    for check in checks:
        outcome = check_outcome(instance, check.asset, check.check, target)
        if outcome is not None:
            figures.checks[(check.asset, check.check)] = outcome
    return figures


TARGET_TAG = "dbops/target"  # the CLI tags its runs with their target
FIRST_TICK_LOOKBACK_S = 86400.0  # a first tick reads the runs that finished in the last day, not the whole history
RUNS_PER_TICK = 100
ERROR_CHARS = 300
_RUN_EVENTS = (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_SUCCESS)
_RUN_RECORDS = {dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
                dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ASSET_MATERIALIZATION,
                dg.DagsterEventType.ASSET_CHECK_EVALUATION, dg.DagsterEventType.RUN_FAILURE}


def first_error_line(error: object) -> str:
    """The first line of a Dagster ``SerializableErrorInfo``: the user's exception under Dagster's wrappers
    ("Error occurred while executing op ..."), redacted and cut to 300 characters."""
    seen = 0
    while error is not None and seen < 10 and str(getattr(error, "cls_name", "")).startswith("Dagster") and getattr(
            error, "cause", None) is not None:
        error, seen = error.cause, seen + 1
    message = str(getattr(error, "message", "") or "") if error is not None else ""
    line = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    line = redact(line)
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1] + "…"


def _within(key: dg.AssetKey, target: str) -> str | None:
    """``load_test`` for ``shop/load_test`` of target ``shop`` (None: another target's asset)."""
    if not target:
        return key.to_user_string()
    return "/".join(key.path[1:]) if len(key.path) > 1 and key.path[0] == target else None


def run_outcomes(instance: dg.DagsterInstance, run_id: str, at: float, failed: bool,
                 target: str) -> list[Outcome]:
    """The outcomes of one finished run for ``target``: each asset it materialized or whose step failed, each check
    it evaluated (or whose step failed), and the run itself when it succeeded or when it failed for no asset's or
    check's reason (a crash, a resource, an op that is no asset). Empty when the run is another target's."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return []
    tagged = run.tags.get(TARGET_TAG)
    if tagged is not None and tagged != target:
        return []
    records = instance.get_records_for_run(run_id, of_type=_RUN_RECORDS).records
    step_assets: dict[str, set[str]] = {}
    step_checks: dict[str, set[str]] = {}
    materialized: set[str] = set()
    evaluated: set[str] = set()
    outcomes: list[Outcome] = []
    failures: list[tuple[str, object, float]] = []
    run_error: object = None
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        data, step, kind = event.event_specific_data, event.step_key or "", event.event_type
        when = float(record.timestamp)
        if kind == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            name = _within(data.asset_key, target)
            if name is not None:
                step_assets.setdefault(step, set()).add(name)
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
            name = _within(data.asset_key, target)
            if name is not None:
                step_checks.setdefault(step, set()).add(f"{name}:{data.check_name}")
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            name = _within(record.asset_key or event.asset_key, target)
            if name is not None and name not in materialized:
                materialized.add(name)
                outcomes.append(Outcome(ASSET, name, False, when, run_id))
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            name = _within(data.asset_key, target)
            if name is not None:
                check = f"{name}:{data.check_name}"
                evaluated.add(check)
                warn = getattr(data.severity, "value", data.severity) == "WARN"
                error = first_error_line(_Message(data.description or _check_facts(data.metadata or {})))
                outcomes.append(Outcome(CHECK, check, not data.passed, when, run_id,
                                        "warning" if warn and not data.passed else "critical",
                                        f"severity {getattr(data.severity, 'value', data.severity)}"
                                        + (f": {error}" if error else "")))
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            failures.append((step, data.error, when))
        elif kind == dg.DagsterEventType.RUN_FAILURE:
            run_error = getattr(data, "error", None) or _Message(event.message or "")
    if tagged is None and not step_assets and not step_checks:
        return []  # an untagged run of no asset of this target: another target's job, or none of dbops'
    partition = _partition(run)
    for step, error, when in failures:
        line = first_error_line(error)
        assets = sorted(step_assets.get(step, set()) - materialized)
        outcomes += [Outcome(ASSET, name, True, when, run_id, error=line, partition=partition) for name in assets]
        if not step_assets.get(step):  # a check step that raised: the check could not tell (a check in an asset's
            # step is not evaluated when the asset fails: that is the asset's incident)
            outcomes += [Outcome(CHECK, c, True, when, run_id, error=line, partition=partition)
                         for c in sorted(step_checks.get(step, set()) - evaluated)]
    label = _run_label(run, step_assets, step_checks)
    if not failed:
        outcomes.append(Outcome(RUN, label, False, at, run_id))
    elif not any(o.failed for o in outcomes):
        line = first_error_line(run_error) or (first_error_line(failures[0][1]) if failures else "")
        outcomes.append(Outcome(RUN, label, True, at, run_id, error=line, partition=partition))
    return outcomes


def _partition(run: dg.DagsterRun) -> str:
    """The partition a run materialized (``2025-01-03``), or its range (``2025-01-01...2025-01-30``); "" if none."""
    tags = run.tags
    if tags.get("dagster/partition"):
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return f"{start}...{end}" if start and end else ""


def _check_facts(metadata: dict[str, object], most: int = 4) -> str:
    """What a failed check reported: its ``reason``, else its first few numbers and texts (``orphans=1``)."""
    reason = metadata.get("reason")
    if reason is not None:
        return str(getattr(reason, "value", reason))
    facts = []
    for key, raw in metadata.items():
        value = getattr(raw, "value", raw)
        if isinstance(value, bool | int | float | str) and len(facts) < most:
            facts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(facts)


class _Message:
    """A plain message where an error is expected (``first_error_line`` takes either)."""

    cls_name = ""
    cause = None

    def __init__(self, message: str) -> None:
        self.message = message


def _run_label(run: dg.DagsterRun, step_assets: dict[str, set[str]], step_checks: dict[str, set[str]]) -> str:
    """The job of a run (with the assets of a subset); an ad-hoc selection (Dagster's implicit asset job) by what
    it selected."""
    names: Iterable[str] = sorted({n for ns in step_assets.values() for n in ns}) or sorted(
        {c for cs in step_checks.values() for c in cs})
    if not run.job_name.startswith("__"):
        # a subset of a job (`dbops run load_test` runs <target>_lifecycle on one asset) is its own incident
        return f"{run.job_name} [{', '.join(names)}]" if run.asset_selection and names else run.job_name
    return "materialize " + ", ".join(names) if names else run.job_name


def failure_outcomes(instance: dg.DagsterInstance, target: str, after: int | None,
                     now: float | None = None, limit: int = RUNS_PER_TICK) -> tuple[list[Outcome], int | None]:
    """The outcomes of ``target``'s runs that finished (failed or succeeded) after the run-status event ``after``
    (a storage id; None: those of the last day), oldest first, at most ``limit`` runs; and the storage id to read
    from next time."""
    since = None if after is not None else (time.time() if now is None else now) - FIRST_TICK_LOOKBACK_S
    records = []
    for event_type in _RUN_EVENTS:
        records += instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after, after_timestamp=since),
            limit=limit, ascending=True).records
    records = sorted(records, key=lambda r: r.storage_id)[:limit]
    outcomes: list[Outcome] = []
    for record in records:
        failed = record.event_log_entry.dagster_event_type == dg.DagsterEventType.RUN_FAILURE
        outcomes += run_outcomes(instance, record.run_id, float(record.timestamp), failed, target)
        after = record.storage_id
    return outcomes, after

"""`dbops run`: materialize a job or an asset selection in-process against the persistent Dagster instance.

The run is recorded in the same PostgreSQL storage as `dbops ui` uses, so it shows up in the UI afterwards.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import dagster as dg

from dbops.errors import DbopsError
from dbops.redact import redact

CLI_JOB = "__dbops_cli_run"
# The public tags of one run over a range of partitions (Dagster's "single-run backfill", BackfillPolicy.single_run).
PARTITION_RANGE_START, PARTITION_RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Tags that make a run materialize every partition from ``first`` to ``last`` in one go."""
    return {PARTITION_RANGE_START: first, PARTITION_RANGE_END: last}


@dataclass
class StepOutcome:
    kind: str  # "asset" or "check"
    name: str
    ok: bool
    detail: str = ""
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass
class RunSummary:
    run_id: str
    success: bool
    outcomes: list[StepOutcome]
    failure: str | None = None

    def render(self) -> str:
        lines = [f"run {self.run_id}: {'SUCCESS' if self.success else 'FAILURE'}"]
        previous, repeats = None, 0
        for item in self.outcomes:
            mark = "ok  " if item.ok else "FAIL"
            figures = ", ".join(f"{k}={v}" for k, v in item.metadata.items())
            line = f"  {mark} {item.kind:5} {item.name}" + (f"  [{figures}]" if figures else "")
            if line == previous and not item.detail:  # one line per asset for a ranged run over many partitions
                repeats += 1
                continue
            if repeats:
                lines[-1] += f"  (x{repeats + 1} partitions)"
            previous, repeats = line, 0
            lines.append(line)
            if item.detail:
                lines.append(f"        {item.detail}")
        if repeats:
            lines[-1] += f"  (x{repeats + 1} partitions)"
        if self.failure:
            lines.append(f"  error: {self.failure}")
        return "\n".join(lines)


def _plain(value: object) -> object | None:
    """A printable scalar for a metadata value, or None for tables and markdown."""
    inner = getattr(value, "value", value)
    if isinstance(inner, bool | int | float):
        return inner
    if isinstance(inner, str) and len(inner) <= 60 and "\n" not in inner:
        return inner
    return None


def _figures(metadata: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in ((k, _plain(v)) for k, v in metadata.items()) if v is not None}


_BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def target_selection(selection: str, target: str | None) -> str | dg.AssetSelection:
    """``selection`` within ``target``'s assets: a bare asset name is ``<target>/<name>``, anything else in Dagster's
    selection syntax (``group:migrate``, ``*``, ``key:"shop/load_test"``) is kept to the keys under ``<target>/``.
    Without a target, the selection is Dagster's, over every target."""
    if target is None:
        return selection
    if _BARE_NAME.match(selection):
        return dg.AssetSelection.assets(dg.AssetKey([target, selection]))
    # Parsing a group selection raises a BetaWarning about a parameter Dagster passes itself (include_sources).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        parsed = dg.AssetSelection.from_string(selection)
    return parsed & dg.AssetSelection.key_prefixes([target])


def op_config_for(target: str | None, ops_config: dict | None) -> dict | None:
    """Op config keyed by asset name (``load_test``) rekeyed to the target's op names (``shop__load_test``)."""
    if not ops_config or target is None:
        return ops_config
    return {(f"{target}__{name}" if "__" not in name else name): value for name, value in ops_config.items()}


def resolve_job(defs: dg.Definitions, selection: str, target: str | None = None) -> dg.JobDefinition:
    """A job by name, else an asset job built from Dagster's selection syntax (``group:migrate``, ``*``, a key),
    within ``target``'s assets when one is given."""
    job_names = {job.name for job in defs.jobs or []}  # type: ignore[union-attr]
    if selection in job_names:
        return defs.resolve_job_def(selection)
    try:
        chosen = target_selection(selection, target)
    except Exception as exc:  # dagster raises several types for a bad selection
        raise DbopsError(
            f"cannot select {selection!r}: {str(exc).splitlines()[0]}",
            "give a job name, an asset key, or a selection such as 'group:migrate' (see `dbops run --list`)",
        ) from exc
    merged = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job(CLI_JOB, selection=chosen)]))
    try:
        job = merged.resolve_job_def(CLI_JOB)
    except Exception as exc:  # dagster raises several types for a bad selection
        raise DbopsError(
            f"cannot select {selection!r}: {str(exc).splitlines()[0]}",
            "give a job name, an asset key, or a selection such as 'group:migrate' (see `dbops run --list`)",
        ) from exc
    if not job.asset_layer.executable_asset_keys:
        where = f" of target {target!r}" if target else ""
        raise DbopsError(f"selection {selection!r} matches no asset{where}",
                         "see `dbops run --list` for the asset keys")
    return job


def run_selection(
    defs: dg.Definitions,
    selection: str,
    instance: dg.DagsterInstance,
    partition_key: str | None = None,
    partition_range: tuple[str, str] | None = None,
    ops_config: dict | None = None,
    log_level: str = "WARNING",
    target: str | None = None,
) -> RunSummary:
    """Materialize ``selection`` (within ``target``'s assets, see :func:`target_selection`) in-process;
    ``partition_range`` (first, last) makes one ranged run (a backfill); ``ops_config`` is keyed by asset name;
    ``log_level`` (the ``log_level`` setting, DBOPS_LOG_LEVEL) is what the terminal gets of the step events."""
    job = resolve_job(defs, selection, target)
    ops_config = op_config_for(target, ops_config)
    # Step-by-step events go to the instance (and the UI); the terminal gets warnings and the summary below.
    level = log_level.upper()
    run_config: dict = {"loggers": {"console": {"config": {"log_level": level}}}}
    if ops_config:
        run_config["ops"] = ops_config
    tags = partition_range_tags(*partition_range) if partition_range is not None else {}
    if target:
        tags["dbops/target"] = target
    result = job.execute_in_process(
        instance=instance, partition_key=partition_key, raise_on_error=False, run_config=run_config, tags=tags
    )
    outcomes: list[StepOutcome] = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization  # type: ignore[union-attr]
            outcomes.append(StepOutcome("asset", mat.asset_key.to_user_string(), True, "", _figures(mat.metadata)))
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data  # type: ignore[assignment]
            severity = getattr(ev.severity, "value", str(ev.severity))
            detail = "" if ev.passed else f"severity {severity}"
            outcomes.append(
                StepOutcome("check", f"{ev.asset_key.to_user_string()}:{ev.check_name}", ev.passed, detail,
                            _figures(ev.metadata))
            )
        elif event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error  # type: ignore[union-attr]
            message = error.message.strip().splitlines()[-1] if error else "step failed"
            cause = error.cause if error else None
            while cause is not None:
                message = cause.message.strip().splitlines()[-1]
                cause = cause.cause
            outcomes.append(StepOutcome("step", event.step_key or "?", False, redact(message)))
    failure = None if result.success else next((o.detail for o in outcomes if not o.ok and o.kind == "step"), None)
    return RunSummary(result.run_id, result.success, outcomes, failure)


def list_definitions(defs: dg.Definitions) -> str:
    """Assets (keyed ``<target>/<asset>``) with their group, pool and checks, then schedules and sensors with their
    default state."""
    graph = defs.resolve_asset_graph()
    lines = ["assets:"]
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        marks = [f"group={node.group_name}"]
        if node.pools:
            marks.append("pool=" + ",".join(sorted(node.pools)))
        if node.is_partitioned:
            marks.append("partitioned")
        if not node.is_executable:
            marks.append("observed")
        lines.append(f"  {key.to_user_string():36} {' '.join(marks)}")
        for check_key in sorted(node.check_keys, key=lambda c: c.name):
            lines.append(f"      check {check_key.name}")
    schedules = sorted(defs.schedules or [], key=lambda s: s.name)  # type: ignore[union-attr]
    if schedules:
        lines.append("schedules:")
        for schedule in schedules:
            state = "on" if schedule.default_status == dg.DefaultScheduleStatus.RUNNING else "off"
            lines.append(f"  {schedule.name:44} {schedule.cron_schedule:16} {state}")
    sensors = sorted(defs.sensors or [], key=lambda s: s.name)  # type: ignore[union-attr]
    if sensors:
        lines.append("sensors:")
        for sensor in sensors:
            state = "on" if sensor.default_status == dg.DefaultSensorStatus.RUNNING else "off"
            lines.append(f"  {sensor.name:44} {'':16} {state}")
    jobs = sorted(job.name for job in defs.jobs or [])  # type: ignore[union-attr]
    if jobs:
        lines.append("jobs: " + ", ".join(jobs))
    return "\n".join(lines)

"""`dbops run`: a selection of one target's assets, run in this process as a run of the target's job in the code
location (``<target>_lifecycle``), recorded in the persistent Dagster instance the UI reads.

A run from the command line is then a run like one the UI launched: its job is a job of the code location ``dbops``
(workspace.yaml), and it carries the location's origin, so the UI re-executes it (all steps, from failure, a
selection). It is tagged ``dbops/command`` (the command line, secrets redacted) and ``dbops/target``.

While it runs, each step's start and end and each line dbops' own assets log (``context.log.info``) are printed as
they happen, one short line each with the seconds since the run started (:class:`Progress`); ``verbose`` prints
Dagster's whole log instead. Mistakes in the request (an unknown selection or partition, a partitioned asset without
one, an observed asset) are a :class:`DbopsError` before anything runs.
"""

from __future__ import annotations

import difflib
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

# Private Dagster modules, here only (dbops_tests/test_layout.py PRIVATE_DAGSTER): a run the UI re-executes needs the
# code location's origin, which no public API gives a run executed in this process (dagster issue #19458).
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origins_from_yaml_paths

from dbops.errors import DbopsError
from dbops.redact import redact

# The public tags of one run over a range of partitions (Dagster's "single-run backfill", BackfillPolicy.single_run).
PARTITION_RANGE_START, PARTITION_RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
COMMAND_TAG, TARGET_TAG = "dbops/command", "dbops/target"
# The code location's name in workspace.yaml, as the UI knows it (`dbops ui`).
WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"
LIST_HINT = "see `dbops run --list` for the asset keys"


def lifecycle_job_name(target: str) -> str:
    """``<target>_lifecycle``: the job of every asset of ``target`` (dbops.components.jobs builds it) that `dbops run`
    executes with a selection."""
    return f"{target}_lifecycle"


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Tags that make a run materialize every partition from ``first`` to ``last`` in one go."""
    return {PARTITION_RANGE_START: first, PARTITION_RANGE_END: last}


@dataclass
class StepOutcome:
    kind: str  # "asset", "check" or "step"
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
    job_name: str = ""

    def render(self) -> str:
        """One line per outcome; a ranged run's materializations of one asset (one per partition) as one line."""
        lines = [f"run {self.run_id} ({self.job_name}): {'SUCCESS' if self.success else 'FAILURE'}"]
        groups: list[list[StepOutcome]] = []
        for item in self.outcomes:
            last = groups[-1][0] if groups else None
            if last is not None and item.kind == "asset" and (last.kind, last.name, last.ok) == (
                    item.kind, item.name, item.ok) and not item.detail:
                groups[-1].append(item)
            else:
                groups.append([item])
        for group in groups:
            item = group[0]
            mark = "ok  " if item.ok else "WARN" if item.detail == "severity WARN" else "FAIL"
            if len(group) > 1:
                lines.append(f"  {mark} {item.kind:5} {item.name}  ({len(group)} partitions; the figures of each "
                             "in the Dagster UI)")
                continue
            figures = ", ".join(f"{k}={v}" for k, v in item.metadata.items())
            lines.append(f"  {mark} {item.kind:5} {item.name}" + (f"  [{figures}]" if figures else ""))
            if item.detail:
                lines.append(f"        {item.detail}")
        return "\n".join(lines)

    def error(self, rerun: str = "") -> DbopsError:
        """The run's failure as one line: what failed and how to see more."""
        failed = [o for o in self.outcomes if not o.ok and o.kind == "step"]
        what = f"{failed[0].name} failed: {failed[0].detail}" if failed else f"run {self.run_id} failed"
        if len(failed) > 1:
            what += f" (and {len(failed) - 1} more step{'s' if len(failed) > 2 else ''})"
        how = f"rerun with --verbose{' (' + rerun + ')' if rerun else ''} for Dagster's log, or open run " \
              f"{self.run_id[:8]} in the Dagster UI and re-execute it from failure"
        return DbopsError(what, how)


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


def step_asset(step_key: str | None) -> str:
    """``shop__load_test`` -> ``shop/load_test`` (the op of an asset is ``<target>__<asset>``)."""
    return (step_key or "run").replace("__", "/", 1)


_QUALIFIED = re.compile(r"^(?P<module>[A-Za-z_][\w.]*)\.(?P<cls>[A-Za-z_]\w*): ")


def error_text(message: str) -> str:
    """An exception's first line without its module path: dbops' own errors and ``dg.Failure`` as their text only,
    anything else as ``ClassName: text``."""
    text = message.strip().splitlines()[0] if message.strip() else "step failed"  # "module.Class: text" first
    found = _QUALIFIED.match(text)
    if found:
        rest = text[found.end():]
        module, cls = found["module"], found["cls"]
        own = module.startswith("dbops") or (module.startswith("dagster") and cls == "Failure")
        text = rest if own else f"{cls}: {rest}"
    return redact(text)


class Progress:
    """Prints a run's phases as they happen: each step's start and end and each line dbops' own assets log at INFO
    or above (Dagster's own events and debug lines left out), ``   12.3 s  shop/load_test  <what>``."""

    def __init__(self, write: Callable[[str], None] | None = None, labels: dict[str, str] | None = None) -> None:
        self.write = write or (lambda line: print(line, flush=True))
        self.labels = labels or {}
        self.began = time.monotonic()
        self.started: dict[str, float] = {}

    def line(self, step_key: str | None, text: str) -> None:
        label = self.labels.get(step_key or "") or step_asset(step_key)
        self.write(f"  {time.monotonic() - self.began:7.1f} s  {label}  {redact(text)}")

    def __call__(self, entry) -> None:  # noqa: ANN001 - dagster's EventLogEntry
        event = entry.dagster_event
        if event is None:
            if entry.step_key and entry.level >= 20 and entry.user_message:
                self.line(entry.step_key, entry.user_message.strip().splitlines()[0])
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.started[event.step_key] = time.monotonic()
            self.line(event.step_key, "started")
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            took = time.monotonic() - self.started.get(event.step_key, self.began)
            if kind == "STEP_SUCCESS":
                self.line(event.step_key, f"done ({took:.1f} s)")
            else:
                error = event.event_specific_data.error
                self.line(event.step_key, f"FAILED after {took:.1f} s: {_deepest(error)}")


def step_labels(defs: dg.Definitions, target: str) -> dict[str, str]:
    """The steps of ``target``'s assets named after what they run: ``shop/load_test`` for the asset's op
    (``shop__load_test``), ``shop/load_test:no_failed_transactions`` for a check in an op of its own."""
    graph = defs.resolve_asset_graph()
    labels = {}
    for key in graph.get_all_asset_keys():
        if key.path[0] != target:
            continue
        op = f"{target}__{key.path[-1]}"
        labels[op] = key.to_user_string()
        for check in graph.get(key).check_keys:
            labels[f"{op}_{check.name}"] = f"{key.to_user_string()}:{check.name}"
    return labels


def _deepest(error) -> str:  # noqa: ANN001 - dagster's SerializableErrorInfo
    if error is None:
        return "step failed"
    while error.cause is not None:
        error = error.cause
    return error_text(error.message)


_BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def target_selection(selection: str, target: str) -> dg.AssetSelection:
    """``selection`` within ``target``'s assets: a bare asset name is ``<target>/<name>``, anything else in Dagster's
    selection syntax (``group:migrate``, ``*``, ``key:"shop/load_test"``) is kept to the keys under ``<target>/``."""
    if _BARE_NAME.match(selection):
        return dg.AssetSelection.assets(dg.AssetKey([target, selection]))
    # Parsing a group selection raises a BetaWarning about a parameter Dagster passes itself (include_sources).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        parsed = dg.AssetSelection.from_string(selection)
    return parsed & dg.AssetSelection.key_prefixes([target])


def op_config_for(target: str, ops_config: dict | None) -> dict | None:
    """Op config keyed by asset name (``load_test``) rekeyed to the target's op names (``shop__load_test``)."""
    if not ops_config:
        return ops_config
    return {(f"{target}__{name}" if "__" not in name else name): value for name, value in ops_config.items()}


def observing_sensor(defs: dg.Definitions, key: dg.AssetKey) -> str | None:
    """The sensor that records observations of ``key`` (``<target>_<asset>_sensor``), when there is one."""
    name = "_".join(key.path) + "_sensor"
    return name if name in {s.name for s in defs.sensors or []} else None  # type: ignore[union-attr]


@dataclass
class Request:
    """What one `dbops run` executes: a job of the code location and the asset keys selected in it."""

    job: dg.JobDefinition
    keys: list[dg.AssetKey]
    partitioned: list[dg.AssetKey]


def resolve_request(defs: dg.Definitions, selection: str, target: str) -> Request:
    """``selection`` (a job name, an asset name, or Dagster's selection syntax within ``target``'s assets) as a job
    of the code location and the keys to run; a mistake is a :class:`DbopsError` naming the fix."""
    graph = defs.resolve_asset_graph()
    job_names = {job.name for job in defs.jobs or []}  # type: ignore[union-attr]
    if selection in job_names:
        job = defs.resolve_job_def(selection)
        keys = sorted(job.asset_layer.executable_asset_keys, key=lambda k: k.to_user_string())
    else:
        job = defs.resolve_job_def(lifecycle_job_name(target)) if lifecycle_job_name(target) in job_names else None
        if job is None:
            raise DbopsError(f"target {target!r} has no job {lifecycle_job_name(target)!r} in the code location",
                             "see `dbops run --list`")
        if _BARE_NAME.match(selection):
            key = dg.AssetKey([target, selection])
            if not graph.has(key):
                names = sorted(k.path[-1] for k in graph.get_all_asset_keys() if k.path[0] == target)
                close = difflib.get_close_matches(selection, names + sorted(job_names), n=1)
                raise DbopsError(f"target {target!r} has no asset or job named {selection!r}",
                                 (f"did you mean {close[0]}? " if close else "") + LIST_HINT)
            if not graph.get(key).is_executable or key not in job.asset_layer.executable_asset_keys:
                sensor = observing_sensor(defs, key)
                by = f"the sensor {sensor}" if sensor else "a sensor"
                raise DbopsError(
                    f"{key.to_user_string()} is observed by {by}, not materialized: there is nothing to run",
                    f"turn {sensor or 'the sensor'} on in the Dagster UI (Automation), or read its figures with "
                    "`dbops metrics show`")
        try:
            chosen = target_selection(selection, target).resolve(graph)
        except Exception as exc:  # dagster raises several types for a bad selection
            raise DbopsError(f"cannot select {selection!r}: {str(exc).strip().splitlines()[0]}",
                             "give a job name, an asset name, or a selection such as 'group:migrate' "
                             "(see `dbops run --list`)") from exc
        runnable = job.asset_layer.executable_asset_keys
        keys = sorted((k for k in chosen if k in runnable), key=lambda k: k.to_user_string())
        if not keys:
            raise DbopsError(f"selection {selection!r} matches no asset of target {target!r} that runs", LIST_HINT)
    partitioned = [k for k in keys if graph.get(k).is_partitioned]
    return Request(job, keys, partitioned)


def _describe_partitions(partitions_def: dg.PartitionsDefinition) -> str:
    keys = partitions_def.get_partition_keys()
    return f"{keys[0]} to {keys[-1]}" if keys else "none yet"


def check_partitions(defs: dg.Definitions, request: Request, partition_key: str | None,
                     partition_range: tuple[str, str] | None) -> None:
    """A partitioned asset needs a partition (or a range) that exists; an unpartitioned selection takes none."""
    graph = defs.resolve_asset_graph()
    names = ", ".join(k.path[-1] for k in request.partitioned)
    if not request.partitioned:
        if partition_key or partition_range:
            raise DbopsError("no selected asset is partitioned, so --partition/--from/--to do not apply",
                             "leave them out")
        return
    partitions_def = graph.get(request.partitioned[0]).partitions_def
    assert partitions_def is not None
    span = _describe_partitions(partitions_def)
    if partition_key is None and partition_range is None:
        raise DbopsError(f"{names} is partitioned ({span}): a run needs a partition",
                         "give --partition KEY for one, or --from KEY --to KEY for a range in one run")
    wanted = [partition_key] if partition_key else list(partition_range or ())
    for key in wanted:
        if not partitions_def.has_partition_key(key):
            raise DbopsError(f"{names} has no partition {key!r} (partitions {span})",
                             "give a partition key in that range (`dbops run --list` shows which assets are "
                             "partitioned)")
    if partition_range is not None:
        first, last = partition_range
        all_keys = partitions_def.get_partition_keys()
        if all_keys.index(first) > all_keys.index(last):
            raise DbopsError(f"--from {first} comes after --to {last}", "swap them")


def location_origin(job_name: str, repository_name: str):  # noqa: ANN201 - dagster's RemoteJobOrigin
    """The origin the UI gives a run of ``job_name``: code location ``dbops`` of workspace.yaml (loaded the way
    the webserver loads it), repository ``repository_name``. With it the UI re-executes the run."""
    (location,) = location_origins_from_yaml_paths([str(WORKSPACE)])
    return RemoteRepositoryOrigin(location, repository_name).get_job_origin(job_name)


def run_selection(
    defs: dg.Definitions,
    selection: str,
    instance: dg.DagsterInstance,
    partition_key: str | None = None,
    partition_range: tuple[str, str] | None = None,
    ops_config: dict | None = None,
    log_level: str = "WARNING",
    target: str = "dbops",
    *,
    verbose: bool = False,
    command: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run ``selection`` of ``target`` (see :func:`resolve_request`) as a run of the code location's job;
    ``partition_range`` (first, last) makes one ranged run; ``ops_config`` is keyed by asset name. The terminal gets
    the phases (``progress``: a line writer, print by default); ``verbose``, or ``log_level`` DEBUG/INFO
    (DBOPS_LOG_LEVEL), gives Dagster's own log at that level instead."""
    request = resolve_request(defs, selection, target)
    check_partitions(defs, request, partition_key, partition_range)
    job = request.job

    level = "DEBUG" if verbose else log_level.upper()
    full_log = verbose or level in ("DEBUG", "INFO")
    run_config: dict = {
        "execution": {"config": {"in_process": {}}},  # steps in this process, as the summary and progress need
        "loggers": {"console": {"config": {"log_level": level if full_log else "CRITICAL"}}},
    }
    ops = op_config_for(target, ops_config)
    if ops:
        run_config["ops"] = ops
    tags = {**job.run_tags, TARGET_TAG: target}
    tags[COMMAND_TAG] = redact(" ".join(["dbops", *(command if command is not None else sys.argv[1:])]))[:200]
    if partition_range is not None:
        tags.update(partition_range_tags(*partition_range))
    elif partition_key is not None:
        tags[PARTITION_TAG] = partition_key

    all_keys = set(job.asset_layer.executable_asset_keys)
    run = instance.create_run_for_job(
        job_def=job,
        run_config=run_config,
        tags=tags,
        asset_selection=None if set(request.keys) == all_keys else set(request.keys),
        remote_job_origin=location_origin(job.name, defs.get_repository_def().name),
    )
    if not full_log:
        instance.add_event_listener(run.run_id, Progress(progress, step_labels(defs, target)))
    # The job of ``defs`` as it is (the definitions this process built); a re-execution from the UI rebuilds it
    # from the code location.
    result = execute_run(InMemoryJob(job), run, instance, raise_on_error=False)
    return summarize(result.run_id, result.success, result.all_events, job.name)


def summarize(run_id: str, success: bool, events, job_name: str = "") -> RunSummary:  # noqa: ANN001
    outcomes: list[StepOutcome] = []
    for event in events:
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
            outcomes.append(StepOutcome("step", step_asset(event.step_key), False, _deepest(error)))
    failure = None if success else next((o.detail for o in outcomes if not o.ok and o.kind == "step"), None)
    return RunSummary(run_id, success, outcomes, failure, job_name)


def instigator_states(defs: dg.Definitions, instance: dg.DagsterInstance | None) -> dict[str, bool]:
    """Schedules and sensors someone turned on (True) or off (False) in the UI, by name: the state stored in the
    instance for code location ``dbops``, which wins over the default in code."""
    if instance is None:
        return {}
    (location,) = location_origins_from_yaml_paths([str(WORKSPACE)])
    repository = defs.get_repository_def().name
    found = {}
    for state in instance.all_instigator_state():
        origin = state.origin.repository_origin
        if (origin.code_location_origin.location_name, origin.repository_name) != (location.location_name,
                                                                                   repository):
            continue
        if state.status.value in ("RUNNING", "STOPPED"):  # else DECLARED_IN_CODE: the default holds
            found[state.name] = state.status.value == "RUNNING"
    return found


def _state(default_on: bool, stored: bool | None) -> str:
    if stored is None or stored == default_on:
        return "on" if (default_on if stored is None else stored) else "off"
    return f"{'on' if stored else 'off'} (set in the UI; default {'on' if default_on else 'off'})"


def list_definitions(defs: dg.Definitions, instance: dg.DagsterInstance | None = None) -> str:
    """Assets (keyed ``<target>/<asset>``) with their group, pool, partitions and checks (blocking ones marked),
    observed assets with the sensor observing them, then schedules and sensors with their state (the default in
    code, or what was set in the UI, read from ``instance``) and cron, and the jobs."""
    stored = instigator_states(defs, instance)
    graph = defs.resolve_asset_graph()
    lines = ["assets (group, pool; partitioned: needs --partition or --from/--to; observed: by a sensor, not run):"]
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        marks = [f"group={node.group_name}"]
        if node.pools:
            marks.append("pool=" + ",".join(sorted(node.pools)))
        if node.is_partitioned and node.partitions_def is not None:
            marks.append(f"partitioned ({_describe_partitions(node.partitions_def)})")
        if not node.is_executable:
            sensor = observing_sensor(defs, key)
            marks.append(f"observed by {sensor}" if sensor else "observed")
        lines.append(f"  {key.to_user_string():36} {' '.join(marks)}")
        for check_key in sorted(node.check_keys, key=lambda c: c.name):
            blocking = graph.get_check_spec(check_key).blocking
            lines.append(f"      check {check_key.name}" + ("  blocking (a failure stops what depends on it)"
                                                            if blocking else ""))
    schedules = sorted(defs.schedules or [], key=lambda s: s.name)  # type: ignore[union-attr]
    if schedules:
        lines.append("schedules (state, UTC cron):")
        for schedule in schedules:
            state = _state(schedule.default_status == dg.DefaultScheduleStatus.RUNNING, stored.get(schedule.name))
            lines.append(f"  {schedule.name:44} {state:4} {schedule.cron_schedule}")
    sensors = sorted(defs.sensors or [], key=lambda s: s.name)  # type: ignore[union-attr]
    if sensors:
        lines.append("sensors (state, interval):")
        for sensor in sensors:
            state = _state(sensor.default_status == dg.DefaultSensorStatus.RUNNING, stored.get(sensor.name))
            lines.append(f"  {sensor.name:44} {state:4} every {sensor.minimum_interval_seconds or 30} s")
    jobs = sorted(job.name for job in defs.jobs or [])  # type: ignore[union-attr]
    if jobs:
        lines.append("jobs: " + ", ".join(jobs))
    return "\n".join(lines)

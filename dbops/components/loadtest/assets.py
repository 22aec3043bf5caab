"""The ``<target>/load_test`` asset: pgbench workloads on the managed database, a capacity run and a users ramp."""

import dagster as dg

from dbops.components.checks import nothing_checked
from dbops.components.metadata import figures, table
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, launch_limits, launch_target
from dbops.health.targets import Limits
from dbops.loadtest.replay import NothingToReplay
from dbops.loadtest.runner import STEP_COLUMNS, LoadTestPlan, LoadTestResult, run_load_test, think_time_text
from dbops.loadtest.workloads import has_reference_schema

REPLAY_COLUMNS = {
    "script": "the replay script", "calls": "calls in pg_stat_statements", "weight": "share of the replay (pgbench @w)",
    "tps": "transactions/s at the last step", "avg_ms": "mean latency at the last step",
    "p95_ms": "95th percentile at the last step", "failures": "failed transactions at the last step",
    "statement": "the statement replayed", "parameters": "where each $n takes its values from",
}

CHECKS = {
    "read_latency_avg_under_target": "mean latency of the read transactions (the worst step of the capacity run and "
    "the ramp) below the targets file's limits.read_avg_ms (or read_avg_target_ms); WARN when no read ran",
    "write_throughput_over_target": "write transactions/s (the best step, the capacity run's closed loop first) above "
    "limits.write_tps (or write_tps_target); WARN when no write ran",
    "no_failed_transactions": "no transaction failed and no client was aborted, in any step of either run",
    "degradation_within_bound": "p95 latency at the largest user step / p95 at the first, at the same think time, at "
    "most limits.degradation_ratio (or degradation_bound); WARN when the ramp has a single step",
}


class LoadTestConfig(dg.Config):
    """What to run; the defaults are a modest weekly run, the 10k-user ramp is one config away.

    ``profile`` / ``capacity_profile``: ``read``, ``write``, ``mixed`` (dbops' reference workloads, schema app), ``own``
    (the target's loadtest.workloads scripts), ``replay`` (its top read statements from pg_stat_statements), scripts
    ``name@10``, or ``auto``: mixed and write on the reference schema; on any other database the ramp replays its top
    read statements and the capacity run (write throughput) is left out unless capacity_profile names a script of
    yours that writes.
    """

    profile: str = "auto"
    ramp: list[int] = [100, 1000]
    duration_s: int = 30
    think_time_s: float = 10.0
    capacity_profile: str = "auto"
    capacity_users: int = 8
    capacity_duration_s: int = 15
    rate: float | None = None
    pooler: str = "auto"
    warmup_s: int = 5
    random_seed: int | None = None
    allow_production: bool = False
    # Unset: the target's limits (its targets file: read_avg_ms, write_tps, degradation_ratio).
    read_avg_target_ms: float | None = None
    write_tps_target: float | None = None
    degradation_bound: float | None = None


def _check_results(config: LoadTestConfig, limits: Limits, capacity: LoadTestResult | None,
                   ramp: LoadTestResult) -> list[dg.AssetCheckResult]:
    read_target = config.read_avg_target_ms if config.read_avg_target_ms is not None else limits.read_avg_ms
    tps_target = config.write_tps_target if config.write_tps_target is not None else limits.write_tps
    bound = config.degradation_bound if config.degradation_bound is not None else limits.degradation_ratio
    read_avg, write_tps = _read_avg_and_write_tps(capacity, ramp)
    failures = sum(r.failures for r in (capacity, ramp) if r is not None)
    degradation = ramp.degradation
    return [
        _figure_check("read_latency_avg_under_target", "read_avg_ms", read_avg, read_avg is not None
                      and read_avg < read_target, {"target_ms": float(read_target)},
                      "not measured: the profiles ran no read transaction"),
        _figure_check("write_throughput_over_target", "write_tps", write_tps, write_tps is not None
                      and write_tps > tps_target, {"target_tps": float(tps_target)},
                      "not measured: the profiles ran no write transaction (a script writes when it has INSERT, "
                      "UPDATE, DELETE, MERGE or COPY)"),
        dg.AssetCheckResult(
            check_name="no_failed_transactions",
            passed=failures == 0,
            metadata=figures({"failures": failures}),
        ),
        _figure_check("degradation_within_bound", "degradation_p95_ratio", degradation, degradation is not None
                      and degradation <= bound, {"bound": float(bound)},
                      "not measured: the ramp needs at least two steps"),
    ]


def _read_avg_and_write_tps(capacity: LoadTestResult | None,
                            ramp: LoadTestResult) -> tuple[float | None, float | None]:
    """The worst mean read latency and the best write throughput of both runs (None: not measured)."""
    runs = [r for r in (capacity, ramp) if r is not None]
    read_avg = max((r.read_avg_ms for r in runs if r.read_avg_ms is not None), default=None)
    write_tps = max((r.write_tps for r in runs if r.write_tps is not None), default=None)
    return read_avg, write_tps


def _figure_check(name: str, key: str, value: float | None, passed: bool, limit: dict[str, float],
                  unmeasured: str) -> dg.AssetCheckResult:
    """A check of one measured figure; a figure that was not measured is a WARN saying why (no made-up value)."""
    if value is None:
        return nothing_checked(unmeasured, name, **limit)
    return dg.AssetCheckResult(check_name=name, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=figures({key: value, **limit}))


def _metadata(ramp: LoadTestResult, capacity: LoadTestResult | None) -> dict[str, dg.MetadataValue]:
    """A few headline figures (the scorecard reads ``max_users`` and ``read_p99_ms_at_max_users``), each users figure
    with its think time, and one table per run (a row per user step); what was not measured is left out."""
    head = ramp.headline()
    read_avg, write_tps = _read_avg_and_write_tps(capacity, ramp)
    values: dict[str, object] = {
        "summary": ramp.summary(),
        "profile": ramp.profile,
        "max_users": head["max_users"],
        "think_time_s": head["think_time_s"],  # the think time of every users figure here (left out: closed loop)
        "load": think_time_text(ramp.think_time_s),
        "read_p99_ms_at_max_users": head["read_p99_ms_at_max_users"],
        "p95_ms_at_max_users": head["p95_ms_at_max_users"],
        "tps_at_max_users": head["tps_at_max_users"],
        "read_avg_ms": read_avg,  # as the checks judge them: the worse read mean, the better write tps of both runs
        "write_tps": write_tps,
        "degradation_p95_ratio": head["degradation_p95_ratio"],
        "failures": ramp.failures + (capacity.failures if capacity is not None else 0),
        "pooler": ramp.via,
        "seconds": ramp.seconds + (capacity.seconds if capacity is not None else 0.0),
        "cleaned_rows": ramp.cleaned_rows + (capacity.cleaned_rows if capacity is not None else 0),
    }
    if ramp.replay is not None:
        values["replayed_statements"] = len(ramp.replay.statements)
        values["skipped_statements"] = len(ramp.replay.skipped)
    if capacity is not None:
        values["capacity_summary"] = capacity.summary()
        values["capacity_tps"] = capacity.steps[0].total["tps"] if capacity.steps else None
    metadata = figures(values)
    metadata["ramp"] = table(ramp.step_rows(), STEP_COLUMNS, STEP_COLUMNS)
    if capacity is not None:
        metadata["capacity"] = table(capacity.step_rows(), STEP_COLUMNS, STEP_COLUMNS)
    for name, run in (("capacity", capacity), ("ramp", ramp)):
        if run is not None and run.replay is not None:  # what was replayed, and what was not and why
            metadata[f"{name}_replayed"] = table(run.replay.rows(run.steps[-1].scripts if run.steps else None),
                                                 REPLAY_COLUMNS, REPLAY_COLUMNS)
            if run.replay.skipped:
                metadata[f"{name}_replay_skipped"] = table(run.replay.skipped_rows(), ["statement", "calls", "reason"])
    return metadata


def build(target: str) -> dg.Definitions:
    """``target``'s load test (its weekly schedule, off by default, is in dbops/components/schedules.py)."""

    @dg.asset(
        key=asset_key(target, "load_test"),
        deps=[asset_key(target, "schema_migrations")],  # load the migrated schema, never a half-migrated one
        group_name="loadtest",
        kinds={"postgres", "pgbench"},
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec(name, asset=asset_key(target, "load_test"), description=text)
                     for name, text in CHECKS.items()],
        description="Measures the database under load with pgbench: a closed-loop capacity run (write throughput) and "
                    "a users ramp with think time (through PgBouncer when users exceed max_connections). Percentiles "
                    "come from pgbench's per-transaction logs; rows the writes create are deleted afterwards. Refuses "
                    "a production target unless allow_production is set.",
    )
    def load_test(context: dg.AssetExecutionContext, config: LoadTestConfig,
                  database: DatabaseResource) -> dg.MaterializeResult:
        database = database.for_target(target)
        settings = launch_target(target)
        common = dict(pooler=config.pooler, warmup_s=config.warmup_s, random_seed=config.random_seed,
                      workloads_dir=settings.loadtest.workloads, replay_statements=settings.loadtest.replay_statements,
                      exclude_roles=tuple(settings.profile.exclude_roles))
        guard = dict(production=database.is_production, allow_production=config.allow_production,
                     progress=context.log.info)
        profile, capacity_profile = config.profile, config.capacity_profile
        if "auto" in (profile, capacity_profile):
            reference = has_reference_schema(database.target_url)
            profile = ("mixed" if reference else "replay") if profile == "auto" else profile
            if capacity_profile == "auto":
                capacity_profile = "write" if reference else ""
                if not reference and config.capacity_users > 0:
                    context.log.info("no capacity run: the database has no reference schema and capacity_profile is "
                                     "auto (name a script of yours that writes to measure write throughput)")
        capacity = None
        try:
            if config.capacity_users > 0 and capacity_profile:
                capacity = run_load_test(database.target_url, LoadTestPlan(
                    profile=capacity_profile, users=[config.capacity_users], duration_s=config.capacity_duration_s,
                    think_time_s=None, rate=config.rate, **common), **guard)
                context.log.info("capacity run: " + capacity.summary())
            context.log.info(f"ramp: {', '.join(f'{u:,}' for u in config.ramp)} users, "
                             f"{think_time_text(config.think_time_s or None)}")
            ramp = run_load_test(database.target_url, LoadTestPlan(
                profile=profile, users=list(config.ramp), duration_s=config.duration_s,
                think_time_s=config.think_time_s or None, rate=config.rate, **common), **guard)
        except NothingToReplay as exc:  # measured nothing: every check WARN with the reason, never a pass
            reason = f"nothing checked: {exc}"
            context.log.warning(reason)
            return dg.MaterializeResult(
                metadata={"reason": reason, "database": dg.MetadataValue.text(database.display_url)},
                check_results=[nothing_checked(reason, name) for name in CHECKS])
        context.log.info("ramp: " + ramp.summary())
        metadata = _metadata(ramp, capacity)
        metadata["database"] = dg.MetadataValue.text(database.display_url)
        checks = _check_results(config, launch_limits(target), capacity, ramp)
        return dg.MaterializeResult(metadata=metadata, check_results=checks)


    return dg.Definitions(assets=[load_test])

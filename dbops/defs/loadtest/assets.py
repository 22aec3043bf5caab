"""The ``load_test`` asset: pgbench workloads on the managed database, a capacity run and a users ramp."""

import dagster as dg

from dbops.defs.resources import DatabaseResource
from dbops.loadtest.runner import LoadTestPlan, LoadTestResult, run_load_test

CHECKS = (
    "read_latency_avg_under_target",
    "write_throughput_over_target",
    "no_failed_transactions",
    "degradation_within_bound",
)


class LoadTestConfig(dg.Config):
    """What to run; the defaults are a modest weekly run, the 10k-user ramp is one config away."""

    profile: str = "mixed"
    ramp: list[int] = [100, 1000]
    duration_s: int = 30
    think_time_s: float = 10.0
    capacity_profile: str = "write"
    capacity_users: int = 8
    capacity_duration_s: int = 15
    rate: float | None = None
    pooler: str = "auto"
    warmup_s: int = 5
    random_seed: int | None = None
    allow_production: bool = False
    read_avg_target_ms: float = 50.0
    write_tps_target: float = 1000.0
    degradation_bound: float = 1.5


def _check_results(config: LoadTestConfig, capacity: LoadTestResult | None,
                   ramp: LoadTestResult) -> list[dg.AssetCheckResult]:
    runs = [r for r in (capacity, ramp) if r is not None]
    read_avg = max((r.read_avg_ms for r in runs if r.read_avg_ms is not None), default=None)
    write_tps = max((r.write_tps for r in runs if r.write_tps is not None), default=None)
    failures = sum(r.failures for r in runs)
    degradation = ramp.degradation
    warn = dg.AssetCheckSeverity.WARN
    return [
        dg.AssetCheckResult(
            check_name="read_latency_avg_under_target",
            passed=read_avg is not None and read_avg < config.read_avg_target_ms,
            severity=warn if read_avg is None else dg.AssetCheckSeverity.ERROR,
            metadata={"read_avg_ms": read_avg if read_avg is not None else -1.0,
                      "target_ms": config.read_avg_target_ms},
            description=None if read_avg is not None else "not measured: the profiles ran no read transaction",
        ),
        dg.AssetCheckResult(
            check_name="write_throughput_over_target",
            passed=write_tps is not None and write_tps > config.write_tps_target,
            severity=warn if write_tps is None else dg.AssetCheckSeverity.ERROR,
            metadata={"write_tps": write_tps if write_tps is not None else -1.0,
                      "target_tps": config.write_tps_target},
            description=None if write_tps is not None else "not measured: the profiles ran no write transaction",
        ),
        dg.AssetCheckResult(
            check_name="no_failed_transactions",
            passed=failures == 0,
            metadata={"failures": failures},
        ),
        dg.AssetCheckResult(
            check_name="degradation_within_bound",
            passed=degradation is not None and degradation <= config.degradation_bound,
            severity=warn if degradation is None else dg.AssetCheckSeverity.ERROR,
            metadata={"degradation_p95_ratio": degradation if degradation is not None else -1.0,
                      "bound": config.degradation_bound},
            description=None if degradation is not None else "not measured: the ramp needs at least two steps",
        ),
    ]


@dg.asset(
    group_name="loadtest",
    kinds={"postgres", "pgbench"},
    check_specs=[dg.AssetCheckSpec(name, asset="load_test") for name in CHECKS],
    description="Measures the database under load with pgbench: a closed-loop capacity run (write throughput) and a "
    "users ramp with think time (through PgBouncer when users exceed max_connections). Percentiles come from "
    "pgbench's per-transaction logs; rows the writes create are deleted afterwards. Refuses a production target "
    "unless allow_production is set.",
)
def load_test(context: dg.AssetExecutionContext, config: LoadTestConfig,
              database: DatabaseResource) -> dg.MaterializeResult:
    common = dict(pooler=config.pooler, warmup_s=config.warmup_s, random_seed=config.random_seed)
    guard = dict(production=database.is_production, allow_production=config.allow_production, log=context.log.info)
    capacity = None
    if config.capacity_users > 0:
        capacity = run_load_test(database.target_url, LoadTestPlan(
            profile=config.capacity_profile, users=[config.capacity_users], duration_s=config.capacity_duration_s,
            think_time_s=None, rate=config.rate, **common), **guard)
        context.log.info("capacity run\n" + capacity.table())
    ramp = run_load_test(database.target_url, LoadTestPlan(
        profile=config.profile, users=list(config.ramp), duration_s=config.duration_s,
        think_time_s=config.think_time_s or None, rate=config.rate, **common), **guard)
    context.log.info("ramp\n" + ramp.table())
    metadata: dict[str, object] = {f"ramp/{k}": v for k, v in ramp.metadata().items()}
    if capacity is not None:
        metadata.update({f"capacity/{k}": v for k, v in capacity.metadata().items()})
        metadata["capacity_table"] = dg.MetadataValue.md(capacity.table())
    metadata["ramp_table"] = dg.MetadataValue.md(ramp.table())
    # Flat figures for the scorecard: the largest user count reached without errors, and read p99 there.
    clean_steps = [st for st in ramp.steps if not st.error]
    if clean_steps:
        metadata["max_users"] = clean_steps[-1].users
        if clean_steps[-1].reads["transactions"]:
            metadata["read_p99_ms_at_max_users"] = clean_steps[-1].reads["p99_ms"]
    metadata["database"] = dg.MetadataValue.text(database.display_url)
    return dg.MaterializeResult(metadata=metadata, check_results=_check_results(config, capacity, ramp))


load_test_job = dg.define_asset_job("load_test_job", selection=[load_test])

weekly_load_test = dg.ScheduleDefinition(
    name="weekly_load_test",
    job=load_test_job,
    cron_schedule="0 3 * * 0",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    run_config={"ops": {"load_test": {"config": {"ramp": [100, 1000, 5000, 10000], "duration_s": 60}}}},
    description="Sundays 03:00: the full 100 → 10,000 users ramp. Off by default: turn it on for a staging target.",
)

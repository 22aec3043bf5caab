"""``<target>/query_profile`` and ``<target>/index_advice`` (group ``profile``) with their checks; the work is in
dbops.profile."""

from pathlib import Path

import dagster as dg

from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, launch_limits, launch_settings
from dbops.pg.connect import database_name
from dbops.profile.advise import advise
from dbops.profile.plans import explain_top
from dbops.profile.report import advice_table, profile_table, render_markdown, tables_table
from dbops.profile.statements import SnapshotStore, profile
from dbops.profile.tables import table_facts

CACHE_HIT_TARGET = 0.99


class ProfileConfig(dg.Config):
    top: int = 20
    snapshot_dir: str = ""  # default: $DBOPS_HOME/profile


class AdviceConfig(dg.Config):
    top: int = 20
    review_dir: str = ""  # default: the target's profile.review_dir ($DBOPS_REVIEW_DIR, review/migrations)
    verify: bool = True
    allow_scratch_on_production: bool = False  # a scratch clone costs the production server I/O and disk


def build(target: str) -> list[dg.AssetsDefinition]:
    """``target``'s profile assets."""

    @dg.asset(
        key=asset_key(target, "query_profile"),
        group_name="profile",
        kinds={"postgres"},
        pool=pool(target),
        check_specs=[
            dg.AssetCheckSpec("slow_queries_under_target", asset=asset_key(target, "query_profile"),
                              description="mean time of the slowest 10 % of statements below the targets file's "
                              "limits.slow_query_mean_ms"),
            dg.AssetCheckSpec("cache_hit_ratio", asset=asset_key(target, "query_profile"),
                              description=f"buffer cache hit ratio >= {CACHE_HIT_TARGET}"),
        ],
        description="Top statements from pg_stat_statements since the previous materialization (or the stats reset), "
        "their plans' anti-patterns, and table facts (cache hits, vacuum, wraparound, sequences, bloat).",
    )
    def query_profile(context: dg.AssetExecutionContext, config: ProfileConfig,
                      database: DatabaseResource) -> dg.MaterializeResult:
        database = database.for_target(target)
        slow_ms = launch_limits(target).slow_query_mean_ms
        root = Path(config.snapshot_dir) if config.snapshot_dir else launch_settings().home / "profile"
        store = SnapshotStore(root, database_name(database.target_url))
        with database.connect() as conn:
            prof = profile(conn, store, config.top, launch_settings().target(database.target).profile.exclude_roles)
            plans = explain_top(conn, prof.top)
            facts = table_facts(conn)
        flags = sum(len(p.flags) for p in plans.values())
        context.log.info(f"{prof.statements} statements, {prof.calls} calls, slowest 10 % mean "
                         f"{prof.slowest_10pct_mean_ms:.2f} ms, {flags} plan flags")
        hit = facts.cache_hit_ratio
        return dg.MaterializeResult(
            metadata={
                "top_statements": dg.MetadataValue.md(render_markdown(profile_table(prof, plans))),
                "tables": dg.MetadataValue.md(render_markdown(tables_table(facts))),
                "dagster/row_count": dg.MetadataValue.int(prof.statements),
                "calls": dg.MetadataValue.int(prof.calls),
                "total_time_ms": dg.MetadataValue.float(float(prof.total_ms)),
                "p95_mean_ms": dg.MetadataValue.float(float(prof.p95_mean_ms)),
                "slowest_10pct_mean_ms": dg.MetadataValue.float(float(prof.slowest_10pct_mean_ms)),
                "plan_flags": dg.MetadataValue.int(flags),
                "cache_hit_ratio": dg.MetadataValue.float(float(hit) if hit is not None else 1.0),
                "xid_age": dg.MetadataValue.int(facts.xid_age),
                "sequences_in_danger": dg.MetadataValue.int(len(facts.sequences_in_danger)),
                "stats_reset": dg.MetadataValue.bool(prof.stats_reset),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="slow_queries_under_target",
                    passed=prof.slowest_10pct_mean_ms < slow_ms,
                    metadata={"slowest_10pct_mean_ms": float(prof.slowest_10pct_mean_ms), "target_ms": float(slow_ms)},
                ),
                dg.AssetCheckResult(
                    check_name="cache_hit_ratio",
                    passed=hit is None or hit >= CACHE_HIT_TARGET,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"cache_hit_ratio": hit if hit is not None else 1.0, "target": CACHE_HIT_TARGET},
                ),
            ],
        )


    @dg.asset(
        key=asset_key(target, "index_advice"),
        group_name="profile",
        kinds={"postgres"},
        deps=[query_profile],
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec("no_unindexed_foreign_keys", asset=asset_key(target, "index_advice"),
                                       description="every foreign key is served by an index")],
        description="Unused, duplicate and redundant indexes, unindexed foreign keys, and candidate indexes for the "
                    "top statements (since the stats reset) measured on a scratch copy; verified advice ranks first "
                    "and gets a CREATE INDEX CONCURRENTLY migration in the review folder, never applied.",
    )
    def index_advice(context: dg.AssetExecutionContext, config: AdviceConfig,
                     database: DatabaseResource) -> dg.MaterializeResult:
        database = database.for_target(target)
        settings = launch_settings()
        target_settings = settings.target(target)
        scratch_url = target_settings.profile.scratch_url.resolve() if target_settings.profile.scratch_url else None
        verify = config.verify
        if verify and database.is_production and not scratch_url and not config.allow_scratch_on_production:
            context.log.warning("production target and no DBOPS_SCRATCH_URL (restored copy): candidates are proposed, "
                                "not verified; set allow_scratch_on_production to clone on the production server")
            verify = False
        with database.connect() as conn:
            prof = profile(conn, None, config.top, target_settings.profile.exclude_roles)
        review = Path(config.review_dir) if config.review_dir else target_settings.profile.review_dir
        report = advise(database.target_url, prof, review_dir=review,
                        migrations_dir=target_settings.migrations, scratch_url=scratch_url, bin_dir=settings.pg_bin,
                        verify_candidates=verify, staging_root=settings.staging_root,
                        history=(target_settings.migrate.default_schema, target_settings.migrate.table))
        unindexed = [f for f in report.findings if f.kind == "unindexed_fk"]
        best = max((a.measurement.speedup for a in report.verified if a.measurement), default=0.0)
        context.log.info(f"{len(report.verified)} verified of {len(report.advice)} candidates "
                         f"(copy: {report.scratch_method}); {len(report.findings)} findings on existing indexes")
        return dg.MaterializeResult(
            metadata={
                "advice": dg.MetadataValue.md(render_markdown(advice_table(report))),
                "candidates": dg.MetadataValue.int(len(report.advice)),
                "verified": dg.MetadataValue.int(len(report.verified)),
                "best_speedup": dg.MetadataValue.float(best),
                "unused_indexes": dg.MetadataValue.int(sum(f.kind == "unused" for f in report.findings)),
                "duplicate_indexes": dg.MetadataValue.int(
                    sum(f.kind in ("duplicate", "redundant") for f in report.findings)),
                "unindexed_foreign_keys": dg.MetadataValue.int(len(unindexed)),
                "review_migrations": dg.MetadataValue.json([str(a.migration) for a in report.verified if a.migration]),
            },
            check_results=[dg.AssetCheckResult(
                check_name="no_unindexed_foreign_keys",
                passed=not unindexed,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"unindexed": dg.MetadataValue.json([f.detail for f in unindexed])},
            )],
        )

    return [query_profile, index_advice]

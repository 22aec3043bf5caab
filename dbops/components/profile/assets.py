"""``<target>/query_profile`` and ``<target>/index_advice`` (group ``profile``) with their checks; the work is in
dbops.profile."""

from pathlib import Path

import dagster as dg

from dbops.components.checks import nothing_checked
from dbops.components.metadata import figures, path, table
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, launch_limits, launch_settings
from dbops.pg.connect import database_name
from dbops.profile.advise import AdviceReport, advise
from dbops.profile.indexes import Finding
from dbops.profile.plans import explain_top
from dbops.profile.report import (
    ADVICE_COLUMNS,
    PROFILE_COLUMNS,
    TABLE_COLUMNS,
    advice_rows,
    profile_rows,
    table_rows,
)
from dbops.profile.statements import QueryProfile, SnapshotStore, profile
from dbops.profile.tables import table_facts

CACHE_HIT_TARGET = 0.99
TABLE_QUERY_WIDTH = 300  # a table cell shows a longer statement than a terminal line
TABLE_LIMIT = 50
IDLE_REASON = ("nothing checked: no statement ran since the previous profile (or the statistics reset), so no "
               "statement was judged")
NO_READS_REASON = ("nothing checked: the database has read no block since its statistics were reset, so there is no "
                   "cache hit ratio")
NO_FOREIGN_KEYS_REASON = "nothing checked: the database has no foreign key"


def _slow_check(prof: QueryProfile, slow_ms: float) -> dg.AssetCheckResult:
    if prof.slowest_10pct_mean_ms is None:
        return nothing_checked(check_name="slow_queries_under_target", reason=IDLE_REASON, target_ms=slow_ms)
    return dg.AssetCheckResult(
        check_name="slow_queries_under_target", passed=bool(prof.slow_queries_under(slow_ms)),
        metadata=figures({"slowest_10pct_mean_ms": prof.slowest_10pct_mean_ms, "target_ms": slow_ms,
                          "statements": prof.statements}))


def _cache_check(hit: float | None) -> dg.AssetCheckResult:
    if hit is None:
        return nothing_checked(check_name="cache_hit_ratio", reason=NO_READS_REASON, target=CACHE_HIT_TARGET)
    return dg.AssetCheckResult(check_name="cache_hit_ratio", passed=hit >= CACHE_HIT_TARGET,
                               severity=dg.AssetCheckSeverity.WARN,
                               metadata=figures({"cache_hit_ratio": hit, "target": CACHE_HIT_TARGET}))


def _foreign_key_check(report: AdviceReport, unindexed: list[Finding]) -> dg.AssetCheckResult:
    if not report.foreign_keys:
        return nothing_checked(check_name="no_unindexed_foreign_keys", reason=NO_FOREIGN_KEYS_REASON)
    return dg.AssetCheckResult(
        check_name="no_unindexed_foreign_keys", passed=not unindexed, severity=dg.AssetCheckSeverity.WARN,
        metadata={**figures({"foreign_keys": report.foreign_keys, "unindexed": len(unindexed)}),
                  "unindexed_foreign_keys": table([{"table": f.table, "detail": f.detail} for f in unindexed],
                                                  ["table", "detail"])})


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
        deps=[asset_key(target, "schema_catalog")],  # the lifecycle: profile the catalogued schema
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
        say = context.log.info
        with database.connect() as conn:
            prof = profile(conn, store, config.top, launch_settings().target(database.target).profile.exclude_roles,
                           progress=say)
            plans = explain_top(conn, prof.top, progress=say)
            say("reading table facts (scans, vacuum, bloat, sequences, cache hits, wraparound)")
            facts = table_facts(conn)
        flags = sum(len(p.flags) for p in plans.values())
        hit = facts.cache_hit_ratio
        metadata = {
            "top_statements": table(profile_rows(prof, plans, width=TABLE_QUERY_WIDTH), PROFILE_COLUMNS,
                                    PROFILE_COLUMNS),
            "tables": table(table_rows(facts, TABLE_LIMIT), TABLE_COLUMNS, TABLE_COLUMNS),
            **figures({
                "statements": prof.statements,  # a statement count, not dagster/row_count (that counts rows)
                "calls": prof.calls,
                "total_time_ms": prof.total_ms,
                "p95_mean_ms": prof.p95_mean_ms,  # None when idle: left out
                "slowest_10pct_mean_ms": prof.slowest_10pct_mean_ms,
                "plan_flags": flags,
                "cache_hit_ratio": hit,  # None when nothing was read: left out
                "xid_age": facts.xid_age,
                "sequences_in_danger": len(facts.sequences_in_danger),
                "stats_reset": prof.stats_reset,
                "bloat_method": facts.bloat_method,
            }),
            "snapshot": path(store.path),
        }
        return dg.MaterializeResult(metadata=metadata,
                                    check_results=[_slow_check(prof, slow_ms), _cache_check(hit)])

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
            prof = profile(conn, None, config.top, target_settings.profile.exclude_roles, progress=context.log.info)
        review = Path(config.review_dir) if config.review_dir else target_settings.profile.review_dir
        report = advise(database.target_url, prof, review_dir=review,
                        migrations_dir=target_settings.migrations, scratch_url=scratch_url, bin_dir=settings.pg_bin,
                        verify_candidates=verify, staging_root=settings.staging_root,
                        history=(target_settings.migrate.default_schema, target_settings.migrate.table),
                        progress=context.log.info)
        unindexed = [f for f in report.findings if f.kind == "unindexed_fk"]
        speedups = [a.measurement.speedup for a in report.verified if a.measurement]
        context.log.info(f"{len(report.verified)} verified of {len(report.advice)} candidates "
                         f"(copy: {report.scratch_method or 'none'}); {len(report.findings)} findings on existing "
                         "indexes")
        metadata = {
            "advice": table(advice_rows(report), ADVICE_COLUMNS, ADVICE_COLUMNS),
            **figures({
                "candidates": len(report.advice),
                "verified": len(report.verified),
                "best_speedup": max(speedups) if speedups else None,  # nothing verified: left out
                "unused_indexes": sum(f.kind == "unused" for f in report.findings),
                "duplicate_indexes": sum(f.kind in ("duplicate", "redundant") for f in report.findings),
                "unindexed_foreign_keys": len(unindexed),
                "foreign_keys": report.foreign_keys,
                "scratch_copy": report.scratch_method,
            }),
            "review_dir": path(review),
            **{f"review_migration/{a.candidate.name}": path(a.migration) for a in report.verified if a.migration},
        }
        return dg.MaterializeResult(metadata=metadata, check_results=[_foreign_key_check(report, unindexed)])

    return [query_profile, index_advice]

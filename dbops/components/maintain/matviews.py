"""Group ``maintain``: ``<target>/materialized_views`` refreshes the target's materialized views (CONCURRENTLY when a
unique index allows it, under a lock timeout), with the check ``materialized_views_fresh``.

The refresh times live in dbops' own record (``$DBOPS_HOME/maintain/<target>/matviews.json``, see
:mod:`dbops.maintain.matviews`): PostgreSQL keeps none. The asset succeeds when it went through every view; a view
that failed or was skipped is in its metadata and the log, and the check turns it into an ERROR (failed, or older
than ``matviews.max_age_hours``). A target without materialized views is a WARN, never a pass.
"""


from datetime import timedelta
from typing import Any

import dagster as dg

from dbops.components import metadata as mt
from dbops.components.checks import nothing_checked
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, launch_settings, launch_target
from dbops.errors import ConfigError
from dbops.maintain.matviews import (
    LOCK_TIMEOUT_S,
    REFRESHED,
    SKIPPED,
    FreshnessReport,
    MatviewState,
    RefreshResult,
    assess,
    find_views,
    refresh_views,
)
from dbops.pg.connect import database_name

ASSET = "materialized_views"
CHECK = "materialized_views_fresh"


class MaterializedViewsConfig(dg.Config):
    lock_timeout_s: float = LOCK_TIMEOUT_S  # a view not locked within this is skipped, retried on the next run


def _state(target: str, url: str) -> MatviewState:
    return MatviewState.of(launch_settings().home, launch_target(target).name, database_name(url))


def _scope(target: str) -> str:
    settings = launch_target(target)
    if settings.matviews.views:
        return "matviews.views " + ", ".join(settings.matviews.views)
    return "schemas " + (", ".join(settings.schemas) if settings.schemas else "(every user schema)")


REFRESH_COLUMNS = ["view", "method", "status", "seconds", "rows", "bytes", "as_role", "note"]
FRESHNESS_COLUMNS = ["view", "refreshed_at", "age_hours", "last_status", "note"]


def refresh_table(results: list[RefreshResult]) -> dg.MetadataValue:
    """One row per view refreshed or tried (a size not read is left empty)."""
    if not results:
        return dg.MetadataValue.text("no materialized view")
    return mt.table([{"view": r.view, "method": r.method, "status": r.status, "seconds": float(r.seconds),
                      "rows": r.rows, "bytes": r.bytes, "as_role": r.as_role, "note": r.reason or r.why}
                     for r in results], REFRESH_COLUMNS)


def freshness_table(report: FreshnessReport) -> dg.MetadataValue:
    """One row per view: when dbops last refreshed it and how old that is (a view never refreshed has no age)."""
    return mt.table([{"view": f.view, "refreshed_at": f.refreshed_at or "never",
                      "age_hours": None if f.age_hours is None else float(f.age_hours),
                      "last_status": f.last_status, "note": f.reason or "fresh"} for f in report.views],
                    FRESHNESS_COLUMNS)


def build_materialized_views(target: str, max_age_hours: float | None = None) -> dg.AssetsDefinition:
    """The asset; ``max_age_hours`` (the target's ``matviews.max_age_hours``, when the caller has its settings) adds
    Dagster's own freshness policy on it as well."""
    policy = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=max_age_hours)) if max_age_hours else None

    @dg.asset(
        key=asset_key(target, ASSET),
        group_name="maintain",
        deps=[asset_key(target, "schema_migrations")],
        pool=pool(target),
        kinds={"postgres"},
        freshness_policy=policy,
        description="Refreshes each materialized view of the target (matviews.views, or every one of its schemas): "
        "REFRESH MATERIALIZED VIEW CONCURRENTLY when it is populated and has a unique index on plain columns without "
        "WHERE, else a plain REFRESH (ACCESS EXCLUSIVE: readers wait); under a lock timeout, so a busy view is "
        "skipped with the sessions holding it. Records per view the method, seconds, rows and size, and the refresh "
        "time in $DBOPS_HOME/maintain/<target>/matviews.json (PostgreSQL keeps none).",
    )
    def materialized_views(context: dg.AssetExecutionContext, config: MaterializedViewsConfig,
                           database: DatabaseResource) -> dg.MaterializeResult:
        database = database.for_target(target)
        settings = launch_target(target)
        state = _state(target, database.target_url)
        with database.connect() as conn:
            views = find_views(conn, schemas=settings.schemas, views=settings.matviews.views)
            if views:
                context.log.info(f"refreshing {len(views)} materialized view(s) ({_scope(target)})")
            results = refresh_views(conn, views, lock_timeout_s=config.lock_timeout_s, state=state)
        if not views:
            context.log.warning(f"nothing refreshed: no materialized view ({_scope(target)})")
        for r in results:
            line = f"{r.view}: {r.status} ({r.method}, {r.seconds:.3f} s) {r.reason or r.why}"
            if r.status == REFRESHED:
                context.log.info(line)
            elif r.status == SKIPPED:
                context.log.warning(line)
            else:
                context.log.error(line)
        per_view: dict[str, Any] = {
            r.view: {k: v for k, v in {"method": r.method, "status": r.status, "seconds": float(r.seconds),
                                       "rows": r.rows, "bytes": r.bytes, "as_role": r.as_role,
                                       "refreshed_at": r.refreshed_at, "reason": r.reason or r.why}.items()
                     if v is not None}
            for r in results
        }
        return dg.MaterializeResult(metadata={
            **mt.figures({
                "views": len(results),
                "refreshed": sum(r.status == REFRESHED for r in results),
                "skipped": sum(r.status == SKIPPED for r in results),
                "failed": sum(r.status not in (REFRESHED, SKIPPED) for r in results),
                "seconds": float(sum(r.seconds for r in results)),
                "per_view": per_view,
            }),
            "refreshes": refresh_table(results),
            "record": mt.path(state.path),
            "scope": dg.MetadataValue.text(_scope(target)),
        })

    return materialized_views


def build_materialized_views_fresh(target: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key(target, ASSET),
        name=CHECK,
        pool=pool(target),
        description="Each materialized view of the target was refreshed by dbops less than matviews.max_age_hours "
        "ago and its last refresh did not fail (ERROR otherwise; a view dbops never refreshed has no known age). "
        "No materialized view at all: WARN, nothing checked.",
    )
    def materialized_views_fresh(database: DatabaseResource) -> dg.AssetCheckResult:
        database = database.for_target(target)
        settings = launch_target(target)
        state = _state(target, database.target_url)
        try:
            with database.connect() as conn:
                views = find_views(conn, schemas=settings.schemas, views=settings.matviews.views)
        except ConfigError as exc:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                       metadata={"reason": dg.MetadataValue.text(str(exc))})
        if not views:
            reason = f"nothing checked: no materialized view ({_scope(target)})"
            return nothing_checked(reason)
        report = assess(views, state.load(), settings.matviews.max_age_hours)
        bad = report.bad
        return dg.AssetCheckResult(
            passed=not bad,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                **mt.figures({
                    "views": report.checked,
                    "stale_or_failed": len(bad),
                    "max_age_hours": float(report.max_age_hours),
                    # no view with a known age: not measured, left out
                    "oldest_age_hours": max((float(f.age_hours) for f in report.views if f.age_hours is not None),
                                            default=None),
                }),
                "views_table": freshness_table(report),
                "problems": dg.MetadataValue.text("; ".join(f"{f.view}: {f.reason}" for f in bad) or "none"),
            },
        )

    return materialized_views_fresh


def build(target: str, max_age_hours: float | None = None) -> dg.Definitions:
    """``max_age_hours`` given (the target's ``matviews.max_age_hours``) also puts a Dagster FreshnessPolicy on the
    asset; without it the check alone measures freshness."""
    return dg.Definitions(assets=[build_materialized_views(target, max_age_hours)],
                          asset_checks=[build_materialized_views_fresh(target)])

"""``<target>/schema_migrations``: the target's schema, brought to the latest migration."""

from collections.abc import Sequence

import dagster as dg

from dbops.components import metadata as mt
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, MigrationsResource


def apply_pending(
    context: dg.AssetExecutionContext, database: DatabaseResource, migrations: MigrationsResource
) -> dg.MaterializeResult:
    migrator = migrations.migrator(database.target_url)
    context.log.info(f"applying the pending migrations of {migrations.path} to {database.display_url}")
    result = migrator.apply()
    if result.baselined:
        context.log.info(f"baselined at {result.baselined} (migrate.baseline_on_migrate); the adopted schema is "
                         f"recorded in {migrations.baseline_record.sql_path}")
    for item in result.applied:
        context.log.info(f"applied {item.script} in {item.execution_ms} ms")
    context.log.info(f"{len(result.applied)} migration(s) applied in {result.total_ms} ms; now at version "
                     f"{result.current_version or 'none'}")
    rows = [{"version": m.version or "R", "description": m.description, "script": m.script, "ms": m.execution_ms}
            for m in result.applied]
    return dg.MaterializeResult(
        metadata={
            "current_version": dg.MetadataValue.text(result.current_version or "none"),
            "baselined_at": dg.MetadataValue.text(result.baselined or "none"),
            "applied_versions": dg.MetadataValue.text(
                ", ".join(m.version or m.script for m in result.applied) or "none"
            ),
            **mt.figures({
                "applied_count": len(result.applied),
                "total_ms": result.total_ms,
                # nothing applied: no migration was timed
                "max_migration_ms": max((m.execution_ms for m in result.applied), default=None),
            }),
            "applied": mt.table(rows, ["version", "description", "script", "ms"]) if rows
            else dg.MetadataValue.text("nothing pending"),
            "database": dg.MetadataValue.text(database.display_url),
        }
    )


def build_schema_migrations(target: str, deps: Sequence[dg.AssetKey] = ()) -> dg.AssetsDefinition:
    """The asset of ``target``, waiting for ``deps`` (its ``migration_rehearsal`` when the rehearsal gates it).

    Built by the decorator rather than by adding deps to a finished asset (``map_asset_specs``): in Dagster 1.13 a dep
    added that way shows in the graph but does not order the steps, so the gate would not hold.
    """

    @dg.asset(
        key=asset_key(target, "schema_migrations"),
        deps=list(deps),
        group_name="migrate",
        kinds={"postgres", "sql"},
        pool=pool(target),
        description="Applies pending versioned and repeatable migrations from the target's migrations folder "
        "(Flyway-compatible), one transaction each, under an advisory lock so concurrent runs never apply a version "
        "twice.",
    )
    def schema_migrations(context: dg.AssetExecutionContext, database: DatabaseResource,
                          migrations: MigrationsResource) -> dg.MaterializeResult:
        return apply_pending(context, database.for_target(target), migrations.for_target(target))

    return schema_migrations

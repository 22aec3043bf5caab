"""``no_schema_drift`` on ``<target>/schema_catalog``: the live schema is exactly what the migrations produce."""

import dagster as dg

from dbops.catalog.drift import detect_drift
from dbops.components.catalog.resources import CatalogResource
from dbops.components.checks import nothing_checked
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, MigrationsResource, launch_target


def build_no_schema_drift(target: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key(target, "schema_catalog"),
        pool=pool(target),
        description="Replays the target's migrations into a scratch database on the same server (a baselined "
                    "database: from the schema its baseline adopted) and compares its schema with the live one; any "
                    "difference (an index created by hand, a column altered outside a migration) fails the check.",
    )
    def no_schema_drift(
        database: DatabaseResource, migrations: MigrationsResource, catalog: CatalogResource
    ) -> dg.AssetCheckResult:
        database, migrations, catalog = (database.for_target(target), migrations.for_target(target),
                                         catalog.for_target(target))
        report = detect_drift(database.target_url, migrations.path, schemas=catalog.schema_filter,
                              target=launch_target(target), record=migrations.baseline_record)
        if report.unchecked:
            return nothing_checked(report.unchecked)
        lines = report.lines()
        return dg.AssetCheckResult(
            passed=not report.drifted,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "differences": dg.MetadataValue.int(len(lines)),
                "expected_version": dg.MetadataValue.text(report.expected_version or "none"),
                "baseline": dg.MetadataValue.text(report.baseline or "none"),
                "drift": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "none"),
            },
        )

    return no_schema_drift

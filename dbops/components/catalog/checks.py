"""``no_schema_drift`` on ``<target>/schema_catalog``: the live schema is exactly what the migrations produce."""

import dagster as dg

from dbops.catalog.drift import detect_drift
from dbops.components.catalog.resources import CatalogResource
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, MigrationsResource


def build_no_schema_drift(target: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key(target, "schema_catalog"),
        pool=pool(target),
        description="Replays sql/migrations into a scratch database on the same server and compares its schema with "
                    "the live one; any difference (an index created by hand, a column altered outside a migration) "
                    "fails the check.",
    )
    def no_schema_drift(
        database: DatabaseResource, migrations: MigrationsResource, catalog: CatalogResource
    ) -> dg.AssetCheckResult:
        database, migrations, catalog = (database.for_target(target), migrations.for_target(target),
                                         catalog.for_target(target))
        report = detect_drift(database.target_url, migrations.path, schemas=catalog.schema_filter)
        lines = report.lines()
        return dg.AssetCheckResult(
            passed=not report.drifted,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "differences": dg.MetadataValue.int(len(lines)),
                "expected_version": dg.MetadataValue.text(report.expected_version or "none"),
                "drift": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "none"),
            },
        )

    return no_schema_drift

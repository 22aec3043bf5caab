"""``no_schema_drift``: the live schema is exactly what the migrations produce."""

import dagster as dg

from dbops.catalog.drift import detect_drift
from dbops.defs.catalog.resources import CatalogResource
from dbops.defs.resources import DatabaseResource, MigrationsResource


@dg.asset_check(
    asset="schema_catalog",
    description="Replays sql/migrations into a scratch database on the same server and compares its schema with the "
    "live one; any difference (an index created by hand, a column altered outside a migration) fails the check.",
)
def no_schema_drift(
    database: DatabaseResource, migrations: MigrationsResource, catalog: CatalogResource
) -> dg.AssetCheckResult:
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

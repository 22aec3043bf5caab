"""Checks on ``<target>/schema_migrations``: history matches the files, nothing pending, and the files lint clean."""

import dagster as dg

from dbops.components import metadata as mt
from dbops.components.checks import nothing_checked
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, MigrationsResource
from dbops.errors import DbopsError


def build_checks(target: str) -> list[dg.AssetChecksDefinition]:
    migrations_key = asset_key(target, "schema_migrations")

    @dg.asset_check(
        asset=migrations_key,
        blocking=True,
        pool=pool(target),
        description="History in flyway_schema_history matches the files: no changed checksum, missing file, failed "
        "row or out-of-order pending version.",
    )
    def migration_history_valid(database: DatabaseResource, migrations: MigrationsResource) -> dg.AssetCheckResult:
        url = database.for_target(target).target_url
        try:
            migrations.for_target(target).migrator(url).validate()
        except DbopsError as exc:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                       metadata={"problems": dg.MetadataValue.text(str(exc))})
        return dg.AssetCheckResult(passed=True)

    @dg.asset_check(asset=migrations_key, pool=pool(target), description="Every migration file has been applied.")
    def no_pending_migrations(database: DatabaseResource, migrations: MigrationsResource) -> dg.AssetCheckResult:
        pending = migrations.for_target(target).migrator(database.for_target(target).target_url).pending()
        return dg.AssetCheckResult(
            passed=not pending,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "pending_count": dg.MetadataValue.int(len(pending)),
                "pending": dg.MetadataValue.text(", ".join(p.script for p in pending) or "none"),
            },
        )

    @dg.asset_check(
        asset=migrations_key,
        description="squawk finds no error-level problem in the migration files (rules excluded by configuration "
        "are listed in the metadata).",
    )
    def migrations_lint(migrations: MigrationsResource) -> dg.AssetCheckResult:
        migrations = migrations.for_target(target)
        files = sorted(migrations.path.glob("*.sql"))
        findings = migrations.migrator("").lint(files)  # no connection: placeholders as the settings give them
        errors = [f for f in findings if f.level.lower() == "error"]
        rows = [{"file": f.file, "line": f.line, "level": f.level, "rule": f.rule, "message": f.message}
                for f in findings]
        if not files:
            return nothing_checked(f"nothing checked: no migration file in {migrations.path}")
        return dg.AssetCheckResult(
            passed=not errors,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                **mt.figures({"files": len(files), "findings": len(findings), "errors": len(errors)}),
                "report": mt.table(rows, ["file", "line", "level", "rule", "message"]) if rows
                else dg.MetadataValue.text("no findings"),
            },
        )

    return [migration_history_valid, no_pending_migrations, migrations_lint]

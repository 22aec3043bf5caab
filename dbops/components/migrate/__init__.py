"""Dagster group ``migrate``: one target's migrations, their checks, the rehearsal and the new-files sensor."""

import dagster as dg

from dbops.components.migrate.assets import build_schema_migrations
from dbops.components.migrate.checks import build_checks
from dbops.components.migrate.rehearsal import build_rehearsal
from dbops.components.migrate.sensors import build_new_migration_files
from dbops.components.naming import asset_key


def build(target: str, *, rehearsal: bool) -> dg.Definitions:
    """With ``rehearsal``, ``schema_migrations`` waits for ``migration_rehearsal`` and its blocking check."""
    gate = [asset_key(target, "migration_rehearsal")] if rehearsal else []
    return dg.Definitions(
        assets=[build_rehearsal(target), build_schema_migrations(target, gate)],
        asset_checks=build_checks(target),
        sensors=[build_new_migration_files(target)],
    )

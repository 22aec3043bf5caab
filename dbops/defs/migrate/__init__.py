"""Dagster group ``migrate``."""

import dagster as dg

from dbops.defs.migrate.assets import build_schema_migrations, schema_migrations
from dbops.defs.migrate.checks import migration_history_valid, migrations_lint, no_pending_migrations
from dbops.defs.migrate.rehearsal import REHEARSAL, migration_rehearsal
from dbops.defs.migrate.sensors import new_migration_files
from dbops.defs.resources import launch_target


def build_migrate_defs(rehearsal: bool) -> dg.Definitions:
    """With ``rehearsal``, production ``schema_migrations`` waits for ``migration_rehearsal`` and its blocking check."""
    return dg.Definitions(
        assets=[migration_rehearsal, build_schema_migrations([REHEARSAL.path[-1]]) if rehearsal else schema_migrations],
        asset_checks=[migration_history_valid, no_pending_migrations, migrations_lint],
        sensors=[new_migration_files],
    )


defs = build_migrate_defs(launch_target().rehearsal.enabled)

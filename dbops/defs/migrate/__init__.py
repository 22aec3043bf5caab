"""Dagster group ``migrate``."""

import dagster as dg

from dbops.defs.migrate.assets import schema_migrations
from dbops.defs.migrate.checks import migration_history_valid, migrations_lint, no_pending_migrations
from dbops.defs.migrate.sensors import new_migration_files

defs = dg.Definitions(
    assets=[schema_migrations],
    asset_checks=[migration_history_valid, no_pending_migrations, migrations_lint],
    sensors=[new_migration_files],
)

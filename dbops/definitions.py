"""The dbops code location: every lifecycle step's definitions merged, with the shared resources."""

from __future__ import annotations

import dagster as dg

from dbops.defs import backup, catalog, health, loadtest, migrate, profile, restore, security, validate
from dbops.defs.catalog.resources import CatalogResource
from dbops.defs.resources import BackupResource, MigrationsResource, default_resources
from dbops.defs.schedules import build_schedules
from dbops.defs.security.resources import SecurityResource

STEP_DEFS = [
    migrate.defs, catalog.defs, profile.defs, loadtest.defs, backup.defs, restore.defs, validate.defs, security.defs,
    health.defs,
]


def build_defs() -> dg.Definitions:
    resources = {
        **default_resources(),
        "migrations": MigrationsResource(),
        "catalog": CatalogResource(),
        "security": SecurityResource(),
        "backups": BackupResource(),
    }
    merged = dg.Definitions.merge(*STEP_DEFS, dg.Definitions(resources=resources))
    # The lifecycle schedules are built once every step's assets are known (a schedule for a missing step is skipped).
    # A step that ships its own schedule keeps it.
    keys = merged.resolve_asset_graph().get_all_asset_keys()
    own = {s.name for s in merged.schedules or []}
    extra = [s for s in build_schedules(keys) if s.name not in own]
    return dg.Definitions.merge(merged, dg.Definitions(schedules=extra))


defs = build_defs()

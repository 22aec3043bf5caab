"""The dbops code location: every lifecycle step's definitions merged, with the shared resources."""

from __future__ import annotations

import dagster as dg

from dbops.defs import catalog, migrate
from dbops.defs.catalog.resources import CatalogResource
from dbops.defs.migrate.resources import MigrationsResource
from dbops.defs.resources import default_resources

STEP_DEFS = [migrate.defs, catalog.defs]


def build_defs() -> dg.Definitions:
    resources = {**default_resources(), "migrations": MigrationsResource(), "catalog": CatalogResource()}
    return dg.Definitions.merge(*STEP_DEFS, dg.Definitions(resources=resources))


defs = build_defs()

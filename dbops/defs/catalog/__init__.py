"""Dagster group ``catalog``."""

import dagster as dg

from dbops.defs.catalog.assets import schema_catalog
from dbops.defs.catalog.checks import no_schema_drift

defs = dg.Definitions(assets=[schema_catalog], asset_checks=[no_schema_drift])

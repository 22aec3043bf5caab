"""Dagster group ``catalog``: one target's schema catalog and its drift check."""

import dagster as dg

from dbops.components.catalog.assets import build_schema_catalog
from dbops.components.catalog.checks import build_no_schema_drift


def build(target: str) -> dg.Definitions:
    return dg.Definitions(assets=[build_schema_catalog(target)], asset_checks=[build_no_schema_drift(target)])

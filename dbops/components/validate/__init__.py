"""Dagster group ``validate``: integrity validation of one target's data (fact tables by day, dimensions, indexes)."""

import dagster as dg

from dbops.components.validate.assets import build as build_assets
from dbops.components.validate.sensors import build_revalidate_after_migration


def build(target: str) -> dg.Definitions:
    return dg.Definitions(assets=build_assets(target), sensors=[build_revalidate_after_migration(target)])

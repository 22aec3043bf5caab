"""Dagster group ``profile``: one target's query profile and index advice."""

import dagster as dg

from dbops.components.profile.assets import build as build_assets


def build(target: str) -> dg.Definitions:
    return dg.Definitions(assets=build_assets(target))

"""Dagster group ``restore``: the restore drill of one target's latest logical and base backups."""

import dagster as dg

from dbops.components.restore.assets import build_restore_drill


def build(target: str) -> dg.Definitions:
    return dg.Definitions(assets=[build_restore_drill(target)])

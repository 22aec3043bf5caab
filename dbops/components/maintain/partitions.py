"""Group ``maintain``: partitions (being built)."""

import dagster as dg


def build(target: str) -> dg.Definitions:
    return dg.Definitions()

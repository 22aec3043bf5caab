"""Group ``maintain``: partition maintenance and materialized-view refresh, per target."""

import dagster as dg

from dbops.components.maintain import matviews, partitions


def build(target: str) -> dg.Definitions:
    return dg.Definitions.merge(partitions.build(target), matviews.build(target))

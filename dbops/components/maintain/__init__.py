"""Group ``maintain``: partition maintenance and materialized-view refresh, per target."""

import dagster as dg

from dbops.components.maintain import matviews, partitions


def build(target: str, *, matview_max_age_hours: float | None = None) -> dg.Definitions:
    """``matview_max_age_hours`` (the target's ``matviews.max_age_hours``) also puts Dagster's freshness policy on
    ``materialized_views``."""
    return dg.Definitions.merge(partitions.build(target), matviews.build(target, matview_max_age_hours))

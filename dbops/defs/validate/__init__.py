"""Dagster group ``validate``: integrity validation of the data (fact tables by day, dimensions, indexes)."""

import dagster as dg

from dbops.defs.validate.assets import dimension_integrity, index_integrity, integrity_validation
from dbops.defs.validate.schedules import dimension_integrity_daily, integrity_daily, integrity_daily_job
from dbops.defs.validate.sensors import revalidate_after_migration

defs = dg.Definitions(
    assets=[integrity_validation, dimension_integrity, index_integrity],
    jobs=[integrity_daily_job],
    schedules=[integrity_daily, dimension_integrity_daily],
    sensors=[revalidate_after_migration],
)

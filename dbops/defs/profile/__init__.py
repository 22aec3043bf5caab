"""Dagster group ``profile``: query_profile and index_advice; their checks are declared on the assets."""

import dagster as dg

from dbops.defs.profile.assets import index_advice, query_profile

defs = dg.Definitions(assets=[query_profile, index_advice])

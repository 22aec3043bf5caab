"""Dagster group ``loadtest``: the load test."""

import dagster as dg

from dbops.defs.loadtest.assets import load_test, load_test_job, weekly_load_test

defs = dg.Definitions(assets=[load_test], jobs=[load_test_job], schedules=[weekly_load_test])

"""Load test: pgbench-driven workloads on the reference schema, users with think time, PgBouncer for many users."""

from dbops.loadtest.runner import LoadTestPlan, LoadTestResult, cleanup_rows, run_load_test
from dbops.loadtest.workloads import PROFILES, LoadTestError

__all__ = ["PROFILES", "LoadTestError", "LoadTestPlan", "LoadTestResult", "cleanup_rows", "run_load_test"]

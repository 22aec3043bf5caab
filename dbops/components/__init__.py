"""dbops' Dagster Components and the thin Dagster layer they are built from: one folder per lifecycle step, each with
a ``build(target)`` that returns that step's definitions for one target; domain code lives elsewhere."""

from dbops.components.target import DbopsFleet, DbopsTarget

__all__ = ["DbopsFleet", "DbopsTarget"]

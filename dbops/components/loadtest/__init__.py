"""Dagster group ``loadtest``: one target's load test."""

from dbops.components.loadtest.assets import build

__all__ = ["build"]

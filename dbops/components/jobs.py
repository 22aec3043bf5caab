"""The jobs of one target in the code location (``<target>_<name>``): what `dbops run` launches, so a run from the
command line is a run of a job the UI knows (and can re-execute)."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg


def build_jobs(target: str, asset_keys: Iterable[dg.AssetKey]) -> list[dg.JobDefinition]:
    """``target``'s jobs over its assets (``asset_keys``)."""
    return []

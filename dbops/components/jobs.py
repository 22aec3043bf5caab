"""The jobs of one target in the code location (``<target>_<name>``): what `dbops run` launches, so a run from the
command line is a run of a job the UI knows (and can re-execute).

``<target>_lifecycle`` covers every materializable asset of the target (and their checks); `dbops run <selection>`
runs it with an asset selection, so the run is named after it in the UI, tagged ``dbops/command`` and
``dbops/target``. An observed asset (``database_health``, recorded by its sensor) is not in it: nothing materializes
it.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from dbops.runner import lifecycle_job_name


def build_jobs(target: str, asset_keys: Iterable[dg.AssetKey]) -> list[dg.JobDefinition]:
    """``target``'s jobs over its assets (``asset_keys``)."""
    keys = sorted(set(asset_keys), key=lambda k: k.to_user_string())
    if not keys:
        return []
    return [dg.define_asset_job(
        lifecycle_job_name(target),
        selection=dg.AssetSelection.assets(*keys).materializable(),
        description=f"Every step of target {target}'s lifecycle (migrate → catalog → profile → load test → backup → "
                    "restore drill → integrity → security → maintenance), each asset with its checks. `dbops run` "
                    "launches a selection of it (tagged dbops/command); materialize a subset from the asset graph.",
        tags={"dbops/target": target},
    )]

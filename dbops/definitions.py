"""The dbops code location (``dbops``): the dg defs folder, ``dbops/defs``, loaded automatically."""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import dagster as dg

# Dagster 1.13 converts a component's asset checks through a beta constructor parameter of its own when the asset graph
# is resolved: a warning about Dagster, not about dbops' definitions, that every `dbops run` would print.
warnings.filterwarnings("ignore", message=r"Parameter `execution_type` of function `AssetsDefinition.__init__`")


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@cache
def load() -> dg.Definitions:
    """The code location's definitions, for the CLI (``dbops run``, the demo, the scorecard): built once a process."""
    return defs()

"""The one shape of a check that had nothing to judge (no rows, no rules, no file, nothing measured): a WARN naming
why, never a pass ("nothing is green after checking nothing")."""

from __future__ import annotations

from typing import Any

import dagster as dg

from dbops.components.metadata import figures


def nothing_checked(reason: str, check_name: str | None = None, description: str | None = None,
                    **facts: Any) -> dg.AssetCheckResult:
    """A WARN with ``reason`` in its metadata (and as its description unless ``description`` is given) beside the
    ``facts`` (figures, limits) that were known; ``check_name`` only where the asset has several checks."""
    return dg.AssetCheckResult(check_name=check_name, passed=False, severity=dg.AssetCheckSeverity.WARN,
                               metadata={**figures(facts), "reason": dg.MetadataValue.text(reason)},
                               description=description or reason)

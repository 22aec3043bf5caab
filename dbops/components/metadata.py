"""Metadata every asset and check of dbops attaches, built one way: numbers through :func:`number` (an int stays an
int, a float is rounded, ``None`` — not measured — is left out rather than shown as -1 or 0.0), whole dicts through
:func:`figures`, rows through :func:`table` (a ``MetadataValue.table`` with its schema, which the UI shows whole where
markdown is cut off), files through :func:`path`.

Dagster rejects ``MetadataValue.float(0)`` (an int) and a float field given ``None``; building every value here means
an idle database (no statement ran, nothing measured) cannot crash a materialization.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg

DECIMALS = 3  # ms, seconds, ratios: three decimals are below what a measurement on a shared machine can resolve
SIGNIFICANT = 3  # a value below 1 keeps three significant digits (0.000412 s stays 0.000412, not 0.0)


def round_figure(value: float) -> float:
    """``value`` rounded for display: three decimals, or three significant digits below 1."""
    if value == 0 or not math.isfinite(value):
        return value
    if abs(value) >= 1:
        return round(value, DECIMALS)
    return round(value, max(DECIMALS, SIGNIFICANT - 1 - math.floor(math.log10(abs(value)))))


def number(value: Any) -> dg.MetadataValue | None:
    """An int or float metadata value (a float rounded; NaN and infinity kept out), or None when ``value`` is None
    (not measured: leave the key out). A bool is a bool; a numeric string is refused (figures are numbers)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(round_figure(value)) if math.isfinite(value) else None
    raise TypeError(f"not a number: {value!r}")


def value(raw: Any) -> dg.MetadataValue | None:
    """Any figure or fact as metadata: numbers by :func:`number`, a Path as a path, a date as text, a str as text, a
    dict or list as JSON (its floats rounded), a ready MetadataValue as it is; None is left out."""
    if raw is None:
        return None
    if isinstance(raw, dg.MetadataValue):
        return raw
    if isinstance(raw, bool | int | float):
        return number(raw)
    if isinstance(raw, Path):
        return dg.MetadataValue.path(str(raw))
    if isinstance(raw, datetime | date):
        return dg.MetadataValue.text(raw.isoformat())
    if isinstance(raw, str):
        return dg.MetadataValue.text(raw)
    if isinstance(raw, Mapping | list | tuple):
        return dg.MetadataValue.json(_rounded(raw))
    return dg.MetadataValue.text(str(raw))


def figures(values: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """``values`` as metadata, each through :func:`value`; keys whose value is None (not measured) are left out."""
    out: dict[str, dg.MetadataValue] = {}
    for key, raw in values.items():
        converted = value(raw)
        if converted is not None:
            out[key] = converted
    return out


def path(raw: str | Path) -> dg.MetadataValue:
    """A file or folder, shown (and copyable) as a path."""
    return dg.MetadataValue.path(str(raw))


_TYPES = ((bool, "bool"), (int, "int"), (float, "float"))


def _column_type(cells: Sequence[Any]) -> str:
    present = [c for c in cells if c is not None]
    for kind, name in _TYPES:
        if present and all(isinstance(c, kind) and (kind is bool or not isinstance(c, bool)) for c in present):
            return name
    if present and all(isinstance(c, int | float) and not isinstance(c, bool) for c in present):
        return "float"
    return "string"


def _cell(raw: Any) -> Any:
    if raw is None or isinstance(raw, bool | int | str):
        return raw
    if isinstance(raw, float):
        return round_figure(raw) if math.isfinite(raw) else None
    return str(raw)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
          descriptions: Mapping[str, str] | None = None) -> dg.MetadataValue:
    """``rows`` (dicts) as a table with its schema: ``columns`` (default: the keys of the first row, in order) typed
    from their cells (int, float, bool, else string), floats rounded, a missing cell empty."""
    names = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    descriptions = descriptions or {}
    schema = dg.TableSchema(columns=[
        dg.TableColumn(name, _column_type([r.get(name) for r in rows]), description=descriptions.get(name))
        for name in names
    ])
    # every record has every column (Dagster refuses records with different fields); a missing cell is None (empty)
    records = [dg.TableRecord({n: _cell(r.get(n)) for n in names}) for r in rows]
    return dg.MetadataValue.table(records, schema=schema)


def _rounded(raw: Any) -> Any:
    if isinstance(raw, float):
        return round_figure(raw) if math.isfinite(raw) else None
    if isinstance(raw, Mapping):
        return {str(k): _rounded(v) for k, v in raw.items()}
    if isinstance(raw, list | tuple):
        return [_rounded(v) for v in raw]
    if isinstance(raw, Path | date | datetime):
        return str(raw)
    return raw

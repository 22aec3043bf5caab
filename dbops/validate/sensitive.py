"""Columns whose values never appear in a report: declared under ``sensitive:`` in ``sql/access-control.yml``.

The file is written for the security audit; dbops reads it here only to mask sample rows. Accepted shapes::

    sensitive:
      - app.users.email                # schema.table.column
      app.users: [email, password_hash]  # or a mapping table -> columns
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dbops.errors import DbopsError
from dbops.validate.rules import DEFAULT_SCHEMA

MASK = "***"
# Masked even when the access-control file is missing: a sample row must never leak a credential.
ALWAYS_SENSITIVE = ("password", "password_hash", "secret", "token", "api_key")


class AccessControlError(DbopsError):
    """sql/access-control.yml cannot be read."""


def _qualify(name: str) -> str:
    return name if "." in name else f"{DEFAULT_SCHEMA}.{name}"


def load_sensitive(path: Path) -> dict[str, set[str]]:
    """Sensitive columns keyed by qualified table name (``{}`` when the file does not exist)."""
    if not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise AccessControlError(f"{path}:{line}: invalid YAML", "fix the file's indentation or quoting") from exc
    entries = doc.get("sensitive") if isinstance(doc, dict) else None
    out: dict[str, set[str]] = {}

    def add(table: str, column: str) -> None:
        out.setdefault(_qualify(table), set()).add(column)

    if isinstance(entries, dict):
        for table, cols in entries.items():
            for col in cols if isinstance(cols, list) else [cols]:
                if isinstance(col, dict):  # - {column: email, reason: ...}
                    col = col.get("column")
                if col:
                    add(str(table), str(col))
    elif isinstance(entries, list):
        for item in entries:
            if isinstance(item, dict):
                table, col = item.get("table"), item.get("column")
                cols = item.get("columns") or ([col] if col else [])
                for c in cols:
                    if table:
                        add(str(table), str(c))
            elif isinstance(item, str) and item.count(".") >= 1:
                table, _, col = item.rpartition(".")
                add(table, col)
    return out


def mask_row(table: str, row: dict[str, Any], sensitive: dict[str, set[str]]) -> dict[str, Any]:
    """A copy of ``row`` fit for metadata: sensitive values masked, everything else as text."""
    hidden = sensitive.get(table, set())
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in hidden or key.lower() in ALWAYS_SENSITIVE:
            out[key] = MASK
        elif value is None or isinstance(value, (int, float, bool, str)):
            out[key] = value
        else:
            out[key] = str(value)
    return out

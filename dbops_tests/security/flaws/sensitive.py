"""Flaws of the sensitive rules (see __init__.py for the shape)."""

from __future__ import annotations

HBA: list[str] = []
SETTINGS: dict[str, str] = {}
SQL: list[str] = []
EXPECTED: dict = {}

"""The weakened cluster, by area: each module holds the pg_hba lines (``HBA``, appended in area order: a finding names
its line number), server settings (``SETTINGS``), SQL run as the superuser on the reference database ``ref``
(``SQL``) and the findings expected of them (``EXPECTED``: (rule, subject) -> (severity, OWASP Top 10:2025 category)).
The weakened-cluster test expects exactly the union: each flaw found once, nothing else."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from dbops_tests.security.flaws import base, objects, roles, sensitive, server

AREAS: tuple[ModuleType, ...] = (base, roles, objects, server, sensitive)


def combined() -> tuple[list[str], dict[str, str], list[str]]:
    hba: list[str] = []
    settings: dict[str, str] = {}
    statements: list[str] = []
    for area in AREAS:
        hba += list(getattr(area, "HBA", []))
        for name, value in getattr(area, "SETTINGS", {}).items():
            if name in settings and settings[name] != value:
                raise ValueError(f"{area.__name__} sets {name} to {value!r}, another area to {settings[name]!r}")
            settings[name] = value
        statements += list(getattr(area, "SQL", []))
    return hba, settings, statements


def expected() -> dict[tuple[str, str], tuple[Any, str]]:
    out: dict[tuple[str, str], tuple[Any, str]] = {}
    for area in AREAS:
        for key, value in area.EXPECTED.items():
            if key in out:
                raise ValueError(f"{key} is expected by two areas")
            out[key] = value
    return out

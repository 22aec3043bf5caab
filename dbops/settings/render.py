"""The resolved settings as a tree, for ``dbops config show|check``: every value, where it came from, no secret."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from dbops.redact import redact
from dbops.settings.load import option_values
from dbops.settings.model import SecretRef, Settings
from dbops.settings.options import Option

COMMENT_COLUMN = 56


def display(opt: Option, value: Any) -> str:
    """One value as printed: a secret shows as ``NAME (***)`` or ``<unset: NAME>``, never its content."""
    if isinstance(value, SecretRef):
        return f"{value.env} (***)" if value.is_set else f"<unset: {value.env}>"
    if value is None:
        return "none"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    text = opt.kind.text(value)
    return f'"{text}"' if opt.key.endswith(".cron") else text


def tree(settings: Settings, target: str | None = None) -> dict[str, Any]:
    """Nested ``{key: (display value, source)}``; ``target`` keeps only that target."""
    out: dict[str, Any] = {}
    for full, opt, value in option_values(settings):
        parts = full.split(".")
        if parts[0] == "targets" and target is not None and parts[1] != target:
            continue
        level = out
        for part in parts[:-1]:
            level = level.setdefault(part, {})
        level[parts[-1]] = (display(opt, value), settings.sources.get(full, "default"))
    return out


def plain(node: dict[str, Any]) -> dict[str, Any]:
    """The tree without sources (JSON)."""
    return {k: plain(v) if isinstance(v, dict) else v[0] for k, v in node.items()}


def sources(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in node.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(sources(value, full))
        else:
            out[full] = value[1]
    return out


def _lines(node: dict[str, Any], indent: int) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    pad = "  " * indent
    for key, value in node.items():
        if isinstance(value, dict) and set(value) == {"enabled", "cron"}:  # a schedule: one line
            (on, on_src), (cron, cron_src) = value["enabled"], value["cron"]
            where = ", ".join(dict.fromkeys((on_src, cron_src)))
            lines.append((f"{pad}{key}: {{enabled: {on}, cron: {cron}}}", where))
        elif isinstance(value, dict):
            lines.append((f"{pad}{key}:", ""))
            lines.extend(_lines(value, indent + 1))
        else:
            lines.append((f"{pad}{key}: {value[0]}", value[1]))
    return lines


def render_text(settings: Settings, target: str | None = None) -> str:
    """The tree as indented ``key: value  # source`` lines."""
    origin = settings.config_file or "no configuration file (DBOPS_* variables and defaults)"
    out = [f"# dbops settings from {origin}; default target: {settings.default_target}"]
    for left, where in _lines(tree(settings, target), 0):
        out.append(f"{left:<{COMMENT_COLUMN}}  # {where}" if where else left)
    return redact("\n".join(out))

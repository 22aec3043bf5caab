"""Differences between two schema snapshots: what a migration (or a hand-made change) did to the schema.

Only structure is compared. Statistics (row estimates, sizes) always differ and are ignored; partitions are compared
only when asked, because a daily job creates them and a schema replayed from migrations never has the same set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Per-table members compared one by one (name -> definition dict).
_TABLE_MEMBERS = (("constraint", "constraints"), ("index", "indexes"), ("trigger", "triggers"),
                  ("policy", "policies"))
_TABLE_PROPERTIES = ("kind", "owner", "row_security", "force_row_security", "partition_key", "comment", "grants")


@dataclass(frozen=True)
class Change:
    """One difference, e.g. ``added index app.orders.orders_note_idx``."""

    action: str  # added | removed | changed
    kind: str  # table, column, index, constraint, trigger, policy, view, function, schema, extension, partition,
    # domain, enum, composite type, range, sequence
    name: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action} {self.kind} {self.name}" + (f": {self.detail}" if self.detail else "")

    def as_dict(self) -> dict[str, str]:
        return {"action": self.action, "kind": self.kind, "name": self.name, "detail": self.detail}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("definition") or value.get("type") or ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _compare_named(kind: str, prefix: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes = []
    for name in sorted(old.keys() - new.keys()):
        changes.append(Change("removed", kind, f"{prefix}{name}", _describe(old[name])))
    for name in sorted(new.keys() - old.keys()):
        changes.append(Change("added", kind, f"{prefix}{name}", _describe(new[name])))
    for name in sorted(old.keys() & new.keys()):
        if old[name] != new[name]:
            detail = f"{_describe(old[name])} -> {_describe(new[name])}"
            changes.append(Change("changed", kind, f"{prefix}{name}", detail))
    return changes


def _columns(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: {k: v for k, v in c.items() if k != "name"} for c in table.get("columns", [])}


def _column_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    old_cols, new_cols = _columns(old), _columns(new)
    changes = []
    for col in sorted(old_cols.keys() - new_cols.keys()):
        changes.append(Change("removed", "column", f"{name}.{col}", old_cols[col]["type"]))
    for col in sorted(new_cols.keys() - old_cols.keys()):
        changes.append(Change("added", "column", f"{name}.{col}", new_cols[col]["type"]))
    for col in sorted(old_cols.keys() & new_cols.keys()):
        before, after = old_cols[col], new_cols[col]
        fields = [f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(before.keys() | after.keys())
                  if before.get(k) != after.get(k)]
        if fields:
            changes.append(Change("changed", "column", f"{name}.{col}", "; ".join(fields)))
    return changes


def diff(old: dict[str, Any] | None, new: dict[str, Any], *, partitions: bool = True) -> list[Change]:
    """Every structural difference from ``old`` to ``new`` (``old=None``: everything is new)."""
    old = old or {"schemas": {}, "extensions": {}, "tables": {}, "views": {}, "functions": {}}
    changes: list[Change] = []
    changes += _compare_named("schema", "", old.get("schemas", {}), new.get("schemas", {}))
    changes += _compare_named("extension", "", old.get("extensions", {}), new.get("extensions", {}))

    old_tables, new_tables = old.get("tables", {}), new.get("tables", {})
    for name in sorted(old_tables.keys() - new_tables.keys()):
        changes.append(Change("removed", "table", name))
    for name in sorted(new_tables.keys() - old_tables.keys()):
        changes.append(Change("added", "table", name, f"{len(new_tables[name].get('columns', []))} columns"))
    for name in sorted(old_tables.keys() & new_tables.keys()):
        before, after = old_tables[name], new_tables[name]
        for prop in _TABLE_PROPERTIES:
            if before.get(prop) != after.get(prop):
                changes.append(Change("changed", "table", name, f"{prop} {before.get(prop)!r} -> {after.get(prop)!r}"))
        changes += _column_changes(name, before, after)
        for kind, key in _TABLE_MEMBERS:
            changes += _compare_named(kind, f"{name}.", before.get(key, {}), after.get(key, {}))
        if partitions:
            old_parts, new_parts = before.get("partitions", {}), after.get("partitions", {})
            changes += _compare_named("partition", "", {k: v["bound"] for k, v in old_parts.items()},
                                      {k: v["bound"] for k, v in new_parts.items()})
            for part in sorted(old_parts.keys() & new_parts.keys()):  # a partition's own keys and indexes
                for kind, key in (("constraint", "constraints"), ("index", "indexes")):
                    if key in old_parts[part] and key in new_parts[part]:
                        changes += _compare_named(kind, f"{part}.", _own(old_parts[part][key]),
                                                  _own(new_parts[part][key]))

    old_views, new_views = old.get("views", {}), new.get("views", {})
    for name in sorted(old_views.keys() - new_views.keys()):
        changes.append(Change("removed", old_views[name]["kind"], name))
    for name in sorted(new_views.keys() - old_views.keys()):
        changes.append(Change("added", new_views[name]["kind"], name))
    for name in sorted(old_views.keys() & new_views.keys()):
        before, after = old_views[name], new_views[name]
        if before.get("definition") != after.get("definition"):
            changes.append(Change("changed", after["kind"], name, "definition changed"))
        changes += _column_changes(name, before, after)
        changes += _compare_named("index", f"{name}.", before.get("indexes", {}), after.get("indexes", {}))

    changes += _compare_named("function", "", _strip(old.get("functions", {})), _strip(new.get("functions", {})))
    # Sections a snapshot of format 1 did not have are compared only when both snapshots hold them.
    if "types" in old and "types" in new:
        for name in sorted(old["types"].keys() | new["types"].keys()):
            before, after = old["types"].get(name), new["types"].get(name)
            kind = (after or before or {}).get("kind", "type")
            kind = "composite type" if kind == "composite" else kind
            if before is None or after is None:
                changes.append(Change("added" if before is None else "removed", kind, name,
                                      (after or before or {}).get("definition", "")))
            elif before != after:
                fields = [k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]
                detail = (f"{before.get('definition')} -> {after.get('definition')}"
                          if before.get("definition") != after.get("definition") else ", ".join(fields) + " changed")
                changes.append(Change("changed", kind, name, detail))
    if "sequences" in old and "sequences" in new:
        changes += _compare_named("sequence", "", old["sequences"], new["sequences"])
    return changes


def _own(members: dict[str, Any]) -> dict[str, Any]:
    """A partition's members of its own (those inherited from its parent change with the parent's)."""
    return {name: m for name, m in members.items() if not m.get("inherited")}


def _strip(functions: dict[str, Any]) -> dict[str, Any]:
    """Functions compared by everything but their comment-free identity (body compared by hash)."""
    skip = ("schema", "name", "arguments")
    return {name: {k: v for k, v in f.items() if k not in skip} for name, f in functions.items()}


def summarize(changes: list[Change]) -> dict[str, int]:
    """Counts per action, for a one-line summary in metadata."""
    counts = {"added": 0, "removed": 0, "changed": 0}
    for change in changes:
        counts[change.action] += 1
    return counts

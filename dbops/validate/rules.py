"""Operator rules from ``sql/expectations/<table>.yml``: what the schema cannot say (value sets, ranges, row counts,
patterns, uniqueness a partitioned table cannot enforce).

A file looks like::

    table: app.orders          # optional, default app.<file name>, else the one table of that name
    time_column: created_at    # optional: validate this table per day on that column
    rules:
      - unique: [tenant_id, id]
      - in_set: {column: status, values: [pending, paid]}
      - between: {column: total, min: 0, max: 100000}
      - regex: {column: currency, pattern: '^[A-Z]{3}$'}
      - not_null: user_id
      - row_count: {min: 1, max: 1000000}

Every mistake is reported with the file and line, because a rule file is edited by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbops.errors import DbopsError

RULE_KINDS = ("unique", "in_set", "between", "regex", "not_null", "row_count")
DEFAULT_SCHEMA = "app"


class RuleFileError(DbopsError):
    """A rule file in sql/expectations is malformed."""


@dataclass(frozen=True)
class Rule:
    kind: str
    file: str
    line: int
    column: str | None = None
    columns: tuple[str, ...] = ()
    values: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    pattern: str | None = None

    @property
    def label(self) -> str:
        target = ",".join(self.columns) or self.column or "rows"
        return f"{self.kind} {target} ({self.file}:{self.line})"


@dataclass
class TableRules:
    table: str
    file: str
    time_column: str | None = None
    time_column_line: int = 0
    rules: list[Rule] = field(default_factory=list)
    schema_given: bool = False  # the file names its table's schema (else app.<name>, or the one table of that name)


def _fail(path: Path, node: yaml.Node | None, problem: str, fix: str) -> RuleFileError:
    line = node.start_mark.line + 1 if node is not None else 1
    return RuleFileError(f"{path}:{line}: {problem}", fix)


def _scalar(path: Path, node: yaml.Node, what: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise _fail(path, node, f"{what} must be a single value", f"write {what} as a plain value")
    return yaml.safe_load(yaml.serialize(node))


def _name(path: Path, node: yaml.Node, what: str) -> str:
    value = _scalar(path, node, what)
    if not isinstance(value, str) or not value:
        raise _fail(path, node, f"{what} must be a column name, got {value!r}", "write the column name as text")
    return value


def _number(path: Path, node: yaml.Node, what: str) -> float:
    value = _scalar(path, node, what)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, node, f"{what} must be a number, got {value!r}", f"write {what}: <number>")
    return value


def _mapping(path: Path, node: yaml.Node, kind: str, allowed: set[str], required: set[str]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise _fail(path, node, f"rule '{kind}' needs a mapping", f"write {kind}: {{{', '.join(sorted(required))}}}")
    out: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = _scalar(path, key_node, "a key")
        if key not in allowed:
            raise _fail(path, key_node, f"rule '{kind}' has no option {key!r}", f"use {', '.join(sorted(allowed))}")
        out[key] = value_node
    missing = required - set(out)
    if missing:
        raise _fail(path, node, f"rule '{kind}' is missing {', '.join(sorted(missing))}", "add it")
    return out


def _rule(path: Path, node: yaml.Node) -> Rule:
    if not isinstance(node, yaml.MappingNode) or len(node.value) != 1:
        raise _fail(path, node, "each rule must be a mapping with exactly one rule name", f"use one of {RULE_KINDS}")
    key_node, body = node.value[0]
    kind = _scalar(path, key_node, "a rule name")
    line = key_node.start_mark.line + 1
    base: dict[str, Any] = {"kind": kind, "file": path.name, "line": line}
    if kind == "unique":
        names = body.value if isinstance(body, yaml.SequenceNode) else [body]
        cols = tuple(_name(path, n, "unique column") for n in names)
        if not cols:
            raise _fail(path, body, "rule 'unique' names no column", "write unique: [col, ...]")
        return Rule(**base, columns=cols)
    if kind == "not_null":
        return Rule(**base, column=_name(path, body, "not_null column"))
    if kind == "in_set":
        m = _mapping(path, body, kind, {"column", "values"}, {"column", "values"})
        if not isinstance(m["values"], yaml.SequenceNode) or not m["values"].value:
            raise _fail(path, m["values"], "in_set values must be a non-empty list", "write values: [a, b]")
        values = tuple(_scalar(path, v, "a value") for v in m["values"].value)
        return Rule(**base, column=_name(path, m["column"], "column"), values=values)
    if kind in ("between", "row_count"):
        keys = {"column", "min", "max"} if kind == "between" else {"min", "max"}
        m = _mapping(path, body, kind, keys, {"column"} if kind == "between" else set())
        lo = _number(path, m["min"], "min") if "min" in m else None
        hi = _number(path, m["max"], "max") if "max" in m else None
        if lo is None and hi is None:
            raise _fail(path, body, f"rule '{kind}' needs min or max", "add min: or max:")
        if lo is not None and hi is not None and lo > hi:
            raise _fail(path, m["min"], f"min {lo} is greater than max {hi}", "swap them")
        column = _name(path, m["column"], "column") if "column" in m else None
        return Rule(**base, column=column, min=lo, max=hi)
    if kind == "regex":
        import re

        m = _mapping(path, body, kind, {"column", "pattern"}, {"column", "pattern"})
        pattern = _scalar(path, m["pattern"], "pattern")
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise _fail(
                path, m["pattern"], f"pattern {pattern!r} is not a regular expression: {exc}", "fix it"
            ) from exc
        return Rule(**base, column=_name(path, m["column"], "column"), pattern=str(pattern))
    raise _fail(path, key_node, f"unknown rule {kind!r}", f"use one of {', '.join(RULE_KINDS)}")


def load_rule_file(path: Path) -> TableRules:
    """Parse one rule file; a syntax or shape error names the file and the line."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleFileError(f"cannot read rule file {path}: {exc.strerror}", "check the path and permissions") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RuleFileError(f"{path}:{line}: invalid YAML: {problem}", "fix the indentation or quoting") from exc
    table = f"{DEFAULT_SCHEMA}.{path.stem}"
    out = TableRules(table=table, file=path.name)
    if root is None:
        return out
    if not isinstance(root, yaml.MappingNode):
        raise _fail(path, root, "a rule file must be a mapping", "start with `rules:`")
    for key_node, value in root.value:
        key = _scalar(path, key_node, "a key")
        if key == "table":
            name = _name(path, value, "table")
            out.table = name if "." in name else f"{DEFAULT_SCHEMA}.{name}"
            out.schema_given = "." in name
        elif key == "time_column":
            out.time_column = _name(path, value, "time_column")
            out.time_column_line = value.start_mark.line + 1
        elif key == "rules":
            if not isinstance(value, yaml.SequenceNode):
                raise _fail(path, value, "rules must be a list", "write each rule as `- kind: ...`")
            out.rules = [_rule(path, n) for n in value.value]
        else:
            raise _fail(path, key_node, f"unknown key {key!r}", "use table, time_column or rules")
    return out


def load_rules(directory: Path) -> dict[str, TableRules]:
    """All rule files of ``directory`` keyed by qualified table name (a missing folder means no rules)."""
    out: dict[str, TableRules] = {}
    if not directory.is_dir():
        return out
    for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
        rules = load_rule_file(path)
        if rules.table in out:
            raise RuleFileError(
                f"{path}: table {rules.table} already has rules in {out[rules.table].file}", "merge the two files"
            )
        out[rules.table] = rules
    return out


def check_columns(rules: TableRules, columns: dict[str, str], directory: Path) -> None:
    """Fail early, with the line, when a rule names a column the table does not have."""
    path = directory / rules.file
    if rules.time_column and rules.time_column not in columns:
        raise RuleFileError(
            f"{path}:{rules.time_column_line}: {rules.table} has no column {rules.time_column!r}",
            f"use one of {', '.join(columns)}",
        )
    for rule in rules.rules:
        for col in (*rule.columns, *([rule.column] if rule.column else [])):
            if col not in columns:
                raise RuleFileError(
                    f"{path}:{rule.line}: {rules.table} has no column {col!r}", f"use one of {', '.join(columns)}"
                )

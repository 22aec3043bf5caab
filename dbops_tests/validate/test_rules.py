"""Rule files: the repository's own load, and every mistake names its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbops.validate.rules import RuleFileError, check_columns, load_rule_file, load_rules
from dbops.validate.sensitive import load_sensitive, mask_row
from dbops_tests.conftest import PROJECT_DIR


def write(tmp_path: Path, text: str, name: str = "orders.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_rule_files_load() -> None:
    rules = load_rules(PROJECT_DIR / "sql" / "expectations")
    assert "app.orders" in rules
    kinds = {r.kind for r in rules["app.orders"].rules}
    assert {"unique", "between", "in_set"} <= kinds


def test_all_rule_kinds_parse(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "table: orders\ntime_column: created_at\nrules:\n"
        "  - unique: [tenant_id, id]\n"
        "  - in_set: {column: status, values: [pending, paid]}\n"
        "  - between: {column: total, min: 0, max: 10}\n"
        "  - regex: {column: currency, pattern: '^[A-Z]{3}$'}\n"
        "  - not_null: user_id\n"
        "  - row_count: {max: 5}\n",
    )
    parsed = load_rule_file(path)
    assert parsed.table == "app.orders" and parsed.time_column == "created_at"
    assert [(r.kind, r.line) for r in parsed.rules] == [
        ("unique", 4), ("in_set", 5), ("between", 6), ("regex", 7), ("not_null", 8), ("row_count", 9)
    ]
    assert parsed.rules[0].columns == ("tenant_id", "id")
    assert parsed.rules[2].min == 0 and parsed.rules[2].max == 10


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("rules:\n  - betwen: {column: total, max: 1}\n", 2, "unknown rule 'betwen'"),
        ("rules:\n  - between: {column: total}\n", 2, "needs min or max"),
        ("rules:\n  - between: {column: total, min: 5, max: 1}\n", 2, "greater than max"),
        ("rules:\n  - between: {column: total, max: lots}\n", 2, "must be a number"),
        ("rules:\n  - unique: [a]\n  - in_set: {column: status, values: []}\n", 3, "non-empty list"),
        ("rules:\n  - in_set: {column: status, vals: [a]}\n", 2, "no option 'vals'"),
        ("rules:\n  - regex: {column: sku, pattern: '(['}\n", 2, "not a regular expression"),
        ("rules:\n  - unique: [a]\n    bad: 1\n", 2, "exactly one rule name"),
        ("rules: {unique: a}\n", 1, "rules must be a list"),
        ("rulez: []\n", 1, "unknown key 'rulez'"),
        ("rules:\n  - unique: [a, b\n", 3, "invalid YAML"),
    ],
)
def test_bad_rule_file_names_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    assert words in message
    assert "\n" not in message


def test_unknown_column_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  - unique: [tenant_id]\n  - between: {column: totl, max: 1}\n")
    rules = load_rule_file(path)
    with pytest.raises(RuleFileError, match=rf"{path}:3: app.orders has no column 'totl'"):
        check_columns(rules, {"tenant_id": "bigint", "total": "numeric"}, tmp_path)


def test_sensitive_columns_are_masked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sensitive:\n  - {table: app.users, columns: [email]}\n  - app.payments.amount\n",
        "access-control.yml",
    )
    sensitive = load_sensitive(path)
    assert sensitive == {"app.users": {"email"}, "app.payments": {"amount"}}
    row = mask_row("app.users", {"id": 1, "email": "a@b.c", "password_hash": "scrypt$x", "n": None}, sensitive)
    assert row == {"id": 1, "email": "***", "password_hash": "***", "n": None}
    # the repository's file declares users.email
    assert "email" in load_sensitive(PROJECT_DIR / "sql" / "access-control.yml").get("app.users", set())

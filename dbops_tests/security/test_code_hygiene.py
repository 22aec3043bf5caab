"""dbops' own code: SQL is never built by string formatting (identifiers go through psycopg.sql)."""

from __future__ import annotations

import ast
from pathlib import Path

from dbops_tests.conftest import PROJECT_DIR

SQL_CALLS = {"execute", "executemany", "SQL", "copy", "stream"}


def formatted_sql_calls(source: str, filename: str) -> list[str]:
    """Calls like conn.execute(f"...") or sql.SQL("..." % x) / .format(...) on a plain string."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in SQL_CALLS:
            continue
        arg = node.args[0]
        formatted = isinstance(arg, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in arg.values)
        formatted |= isinstance(arg, ast.BinOp) and isinstance(arg.op, (ast.Mod, ast.Add)) and isinstance(
            arg.left, (ast.Constant, ast.JoinedStr))
        formatted |= (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format"
                      and isinstance(arg.func.value, ast.Constant))
        if formatted:
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_detector_sees_formatted_sql() -> None:
    bad = 'conn.execute(f"DROP TABLE {name}")\nconn.execute("SELECT %s" % x)\nsql.SQL("A {}".format(x))\n'
    assert len(formatted_sql_calls(bad, "bad.py")) == 3
    good = 'conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))\nconn.execute("SELECT %s", [x])\n'
    assert formatted_sql_calls(good, "good.py") == []


def test_no_sql_built_by_string_formatting_in_dbops() -> None:
    found = []
    for path in sorted((PROJECT_DIR / "dbops").rglob("*.py")):
        found += formatted_sql_calls(path.read_text(), str(Path(path).relative_to(PROJECT_DIR)))
    assert found == []

"""Every `dbops` command explains itself: `dbops <command> --help` exits 0 with a usage line and a description, for
the commands of dbops.cli and every step command (STEP_COMMANDS, whose own parsers answer)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dbops.cli import STEP_COMMANDS, build_parser
from dbops_tests.conftest import PROJECT_DIR


def _top_level() -> list[str]:
    action = next(a for a in build_parser()._actions if a.dest == "command")  # noqa: SLF001 - argparse's own
    return sorted(action.choices)


def _description(help_text: str) -> str:
    """The text between the usage block and the first argument section."""
    blocks = [b.strip() for b in help_text.split("\n\n") if b.strip()]
    return next((b for b in blocks[1:] if not b.startswith(("positional arguments:", "options:", "usage:"))), "")


@pytest.mark.parametrize("command", sorted(set(_top_level()) | set(STEP_COMMANDS)))
def test_every_command_has_a_description(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "dbops.cli", command, "--help"], capture_output=True, text=True,
                            cwd=PROJECT_DIR, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: dbops {command}"), result.stdout[:200]
    description = _description(result.stdout)
    assert len(description.split()) >= 5, f"`dbops {command} --help` has no description:\n{result.stdout}"


def test_the_top_level_help_lists_every_command_with_its_help() -> None:
    result = subprocess.run([sys.executable, "-m", "dbops.cli", "--help"], capture_output=True, text=True,
                            cwd=PROJECT_DIR, timeout=60, check=False)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for command in _top_level():
        at = next((i for i, line in enumerate(lines) if line.split()[:1] == [command]), None)
        assert at is not None, (command, result.stdout)
        said = lines[at].split()[1:] or lines[at + 1].split()  # argparse wraps a long name's help to the next line
        assert len(said) >= 3, (command, result.stdout)


def test_a_usage_mistake_is_one_error_line() -> None:
    for argv in (["run", "--bogus"], ["backup", "nothing"], ["nothing"], ["db"]):
        result = subprocess.run([sys.executable, "-m", "dbops.cli", *argv], capture_output=True, text=True,
                                cwd=PROJECT_DIR, timeout=60, check=False)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), (argv, result.stderr)
        assert "--help`" in result.stderr

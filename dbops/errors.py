"""One error type for everything an operator can fix.

Every failure that reaches a user is a :class:`DbopsError` whose text is a single line naming the problem
and what to do about it. The CLI prints it and exits non-zero; Dagster shows it as the step failure.
"""

from __future__ import annotations


class DbopsError(Exception):
    """A failure with a one-line explanation and a hint for the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        text = problem if not fix else f"{problem} — {fix}"
        super().__init__(" ".join(text.split()))


class ConfigError(DbopsError):
    """Settings are missing or malformed."""


class UnknownTarget(ConfigError):
    """A target name (``--target``, ``default_target``) that the settings do not have: a configuration mistake."""


class ConnectionFailed(DbopsError):
    """A PostgreSQL server could not be reached or refused us."""


class CommandFailed(DbopsError):
    """An external program (pg_ctl, pg_dump, squawk, ...) failed."""

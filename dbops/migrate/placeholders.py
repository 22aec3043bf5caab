"""Flyway's placeholders: ``${name}`` in a migration or callback replaced before it runs.

As in Flyway: on by default (``migrate.placeholder_replacement`` turns it off), names are case-insensitive, user
placeholders come from the target's ``migrate.placeholders`` and the built-in ones are ``${flyway:defaultSchema}``,
``${flyway:user}``, ``${flyway:database}``, ``${flyway:timestamp}`` (when the script is read, ``yyyy-MM-dd HH:mm:ss``),
``${flyway:filename}``, ``${flyway:workingDirectory}`` and ``${flyway:table}``. A placeholder without a value is an
error naming the file and the line; nothing runs.

Checksums follow Flyway's ``SqlMigrationResolver``: a versioned migration's checksum is taken over the file as written
(so changing a placeholder's value never breaks validation), a repeatable one's over the replaced text (so a changed
value re-applies it on the next migrate).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dbops.migrate.files import MigrationError

PLACEHOLDER = re.compile(r"\$\{([^}\r\n]*)\}")
BUILT_IN = ("defaultSchema", "user", "database", "timestamp", "filename", "workingDirectory", "table")
UNDEFINED_FIX = ("give it a value in the target's migrate.placeholders (DBOPS_MIGRATE_PLACEHOLDERS=name=value), or "
                 "turn migrate.placeholder_replacement off to run the text as written")


class UndefinedPlaceholder(MigrationError):
    """``${name}`` in ``script`` at ``line`` has no value."""

    def __init__(self, script: str, line: int, name: str, known: str) -> None:
        self.script, self.line, self.name = script, line, name
        self.detail = f"placeholder ${{{name}}} has no value (user placeholders defined: {known})"
        super().__init__(f"{script} line {line}: {self.detail}", UNDEFINED_FIX)


@dataclass(frozen=True)
class Placeholders:
    """The values of one run: the user's placeholders and the run's built-in ones (all but filename/timestamp, which
    belong to each script)."""

    enabled: bool = True
    user: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, str] = field(default_factory=dict)  # flyway:<name> -> value, for this run

    def values(self, script: str) -> dict[str, str]:
        """Every value ``script`` may use, keyed by the lower-cased name."""
        out = {name.lower(): value for name, value in self.user.items()}
        built_in = {**self.context, "filename": script,
                    "timestamp": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
                    "workingDirectory": self.context.get("workingDirectory", os.getcwd())}
        out.update({f"flyway:{name}".lower(): value for name, value in built_in.items()})
        return out

    def replace(self, script: str, text: str) -> str:
        """``text`` of ``script`` with every placeholder replaced (as written when replacement is off)."""
        if not self.enabled or "${" not in text:
            return text
        values = self.values(script)

        def value(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            found = values.get(name.lower())
            if found is None:
                line = text.count("\n", 0, match.start()) + 1
                known = ", ".join(sorted(n for n in values if not n.startswith("flyway:"))) or "none"
                raise UndefinedPlaceholder(script, line, name, known)
            return found

        return PLACEHOLDER.sub(value, text)

"""Finding migration files the way Flyway does: names, versions, descriptions, checksums, callbacks.

``V<version>__<description>.sql`` is a versioned migration, ``R__<description>.sql`` a repeatable one, and
``beforeMigrate.sql``, ``afterMigrate__x.sql``, ``beforeEachMigrate.sql``... are callbacks that run around migrations
and are never recorded. Versions are compared numerically part by part (1.2 < 1.10, 2 < 10, 1.0 == 1).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from functools import total_ordering
from pathlib import Path

from dbops.errors import DbopsError


class MigrationError(DbopsError):
    """A migration file, the history table or a run is not what it must be."""


# Flyway's SQL callback events. dbops runs the migrate, validate, repair, baseline and info ones; the rest are
# recognised (so a Flyway project resolves unchanged) but never run, like Flyway's own events dbops has no command for.
CALLBACK_EVENTS = (
    "beforeMigrate", "beforeEachMigrate", "beforeEachMigrateStatement", "afterEachMigrateStatement",
    "afterEachMigrateStatementError", "afterEachMigrate", "afterEachMigrateError", "afterMigrate",
    "afterMigrateApplied", "afterVersioned", "afterMigrateError", "beforeRepeatables",
    "beforeValidate", "afterValidate", "afterValidateError", "beforeRepair", "afterRepair", "afterRepairError",
    "beforeBaseline", "afterBaseline", "afterBaselineError", "beforeInfo", "afterInfo", "afterInfoError",
    "beforeClean", "afterClean", "afterCleanError", "beforeUndo", "beforeEachUndo", "afterEachUndo",
    "afterEachUndoError", "afterUndo", "afterUndoError", "createSchema", "beforeConnect", "afterConnect",
)
_VERSIONED = re.compile(r"^V(?P<version>\d+(?:[._]\d+)*)__(?P<desc>.+)\.sql$")
_REPEATABLE = re.compile(r"^R__(?P<desc>.+)\.sql$")
_CALLBACK = re.compile(r"^(?P<event>" + "|".join(sorted(CALLBACK_EVENTS, key=len, reverse=True))
                       + r")(?:__(?P<desc>.+))?\.sql$")
_UNDO = re.compile(r"^U\d+(?:[._]\d+)*__.+\.sql$")  # Flyway Teams' undo files: recognised, never run by dbops
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Header comments understood by dbops (anywhere in the leading comment block of a file).
NO_TRANSACTION = re.compile(r"^\s*--\s*dbops:no-transaction\b", re.M | re.I)
SETTING_HEADER = re.compile(
    r"^\s*--\s*dbops:(?P<name>lock_timeout|statement_timeout)\s*=\s*(?P<value>\S+)", re.M | re.I
)


@total_ordering
@dataclass(frozen=True)
class Version:
    """A Flyway version: dot- or underscore-separated integers, compared numerically, trailing zeros ignored."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Version:
        cleaned = text.strip().replace("_", ".")
        if not re.fullmatch(r"\d+(?:\.\d+)*", cleaned):
            raise MigrationError(f"{text!r} is not a migration version", "use numbers separated by dots, e.g. 1.2")
        return cls(tuple(int(p) for p in cleaned.split(".")))

    @property
    def _key(self) -> tuple[int, ...]:
        parts = list(self.parts)
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)


def flyway_checksum(text: str) -> int:
    """Flyway's checksum: CRC32 over each line's UTF-8 bytes without terminators, BOM dropped, as a signed int32."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # a final line break does not start another line
    crc = 0
    for line in lines:
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= (1 << 31) else crc


def read_sql(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MigrationError(f"cannot read migration {path}: {exc.strerror}", "check the file's permissions") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationError(f"{path.name} is not UTF-8 (byte {exc.start})", "save the file as UTF-8") from exc
    return text[1:] if text.startswith("\ufeff") else text


@dataclass(frozen=True)
class ResolvedMigration:
    """A migration file found on disk."""

    path: Path
    script: str  # the file name, as Flyway records it
    description: str
    version: Version | None  # None for repeatables
    checksum: int
    sql: str = field(repr=False)

    @property
    def repeatable(self) -> bool:
        return self.version is None

    @property
    def type(self) -> str:
        return "SQL"

    @property
    def label(self) -> str:
        return f"V{self.version}" if self.version is not None else f"R {self.description}"

    @property
    def transactional(self) -> bool:
        """False with ``-- dbops:no-transaction`` in the header or Flyway's ``<script>.conf`` saying
        ``executeInTransaction=false``."""
        return runs_in_transaction(self.path, self.sql)

    def settings(self) -> dict[str, str]:
        """Per-file lock_timeout / statement_timeout from ``-- dbops:lock_timeout=30s`` header comments."""
        return {m["name"].lower(): m["value"] for m in SETTING_HEADER.finditer(_header(self.sql))}


@dataclass(frozen=True)
class Callback:
    event: str
    path: Path
    script: str
    sql: str = field(repr=False)


def runs_in_transaction(path: Path, sql: str) -> bool:
    """False for ``-- dbops:no-transaction`` in the header or ``executeInTransaction=false`` in ``<script>.conf``."""
    if NO_TRANSACTION.search(_header(sql)):
        return False
    return script_config(path).get("executeInTransaction", "true").lower() != "false"


def script_config(path: Path) -> dict[str, str]:
    """Flyway's per-script config ``V2__x.sql.conf`` (``key=value`` lines, ``#`` comments); empty when absent."""
    conf = path.with_name(path.name + ".conf")
    if not conf.is_file():
        return {}
    out: dict[str, str] = {}
    for number, raw in enumerate(read_sql(conf).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise MigrationError(f"{conf} line {number}: expected key=value, got {line!r}",
                                 "write e.g. executeInTransaction=false")
        out[key.strip()] = value.strip()
    return out


def _header(sql: str) -> str:
    """The leading block of comments and blank lines, where dbops looks for its header directives."""
    lines = []
    for line in sql.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def _description(raw: str) -> str:
    return raw.replace("_", " ").strip()


@dataclass
class Resolved:
    versioned: list[ResolvedMigration]
    repeatable: list[ResolvedMigration]
    callbacks: list[Callback]

    def by_version(self) -> dict[Version, ResolvedMigration]:
        return {m.version: m for m in self.versioned if m.version is not None}


def resolve(locations: list[Path]) -> Resolved:
    """Every migration and callback under ``locations`` (recursively), sorted; names checked strictly."""
    versioned: list[ResolvedMigration] = []
    repeatable: list[ResolvedMigration] = []
    callbacks: list[Callback] = []
    for location in locations:
        if not location.is_dir():
            raise MigrationError(
                f"migrations folder {location} does not exist",
                "create it or point DBOPS_MIGRATIONS (or --locations) at the folder holding V<n>__<name>.sql files",
            )
        for path in sorted(location.rglob("*.sql")):
            name = path.name
            if m := _VERSIONED.match(name):
                sql = read_sql(path)
                versioned.append(ResolvedMigration(path, name, _description(m["desc"]), Version.parse(m["version"]),
                                                   flyway_checksum(sql), sql))
            elif m := _REPEATABLE.match(name):
                sql = read_sql(path)
                repeatable.append(ResolvedMigration(path, name, _description(m["desc"]), None, flyway_checksum(sql),
                                                    sql))
            elif m := _CALLBACK.match(name):
                callbacks.append(Callback(m["event"], path, name, read_sql(path)))
            elif _UNDO.match(name):
                continue
            else:
                raise MigrationError(
                    f"malformed migration file name {path}",
                    "name it V<version>__<description>.sql (capital V, two underscores, e.g. V2__add_orders.sql), "
                    "R__<description>.sql, or a Flyway callback such as afterMigrate.sql",
                )
    seen: dict[Version, ResolvedMigration] = {}
    for migration in versioned:
        assert migration.version is not None
        if migration.version in seen:
            other = seen[migration.version]
            raise MigrationError(
                f"duplicate migration version {migration.version}: {other.path} and {migration.path}",
                "give one of them the next free version number",
            )
        seen[migration.version] = migration
    seen_desc: dict[str, ResolvedMigration] = {}
    for migration in repeatable:
        if migration.description in seen_desc:
            raise MigrationError(
                f"duplicate repeatable migration {migration.description!r}: {seen_desc[migration.description].path} "
                f"and {migration.path}", "rename one of them",
            )
        seen_desc[migration.description] = migration
    versioned.sort(key=lambda m: m.version)  # type: ignore[arg-type,return-value]
    repeatable.sort(key=lambda m: m.description)
    callbacks.sort(key=lambda c: (c.event, c.script))
    return Resolved(versioned, repeatable, callbacks)

"""Finding migration files the way Flyway does: names, versions, descriptions, checksums, callbacks.

``V<version>__<description>.sql`` is a versioned migration, ``R__<description>.sql`` a repeatable one, and
``beforeMigrate.sql``, ``afterMigrate__x.sql``, ``beforeEachMigrate.sql``... are callbacks that run around migrations
and are never recorded. ``U<version>__<description>.sql`` undoes the versioned migration of the same version (Flyway's
undo migrations, run by ``dbops migrate undo`` and rehearsed up -> undo -> up). Versions are compared numerically part
by part (1.2 < 1.10, 2 < 10, 1.0 == 1).

A ``-- dbops:assert <SQL returning boolean>`` comment line is a data assertion: it runs where it stands in the file
(before its first statement, between two, or after the last), in the file's transaction; one that is not true rolls the
file back, naming the assertion.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass, field
from functools import total_ordering
from pathlib import Path

from pglast import ast as pg_ast
from pglast import enums as pg_enums
from pglast import parser as pg_parser

from dbops.errors import DbopsError


class MigrationError(DbopsError):
    """A migration file, the history table or a run is not what it must be."""


# Flyway's SQL callback events. dbops runs the migrate, undo, validate, repair, baseline and info ones; the rest are
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
_UNDO = re.compile(r"^U(?P<version>\d+(?:[._]\d+)*)__(?P<desc>.+)\.sql$")  # Flyway's undo migrations
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Widths of Flyway's history columns: a file whose version or description does not fit is refused when resolved,
# so a run can never apply a file it then fails to record.
VERSION_WIDTH = 50
DESCRIPTION_WIDTH = 200
SCRIPT_WIDTH = 1000

# Header comments understood by dbops (anywhere in the leading comment block of a file).
NO_TRANSACTION = re.compile(r"^\s*--\s*dbops:no-transaction\b", re.M | re.I)
SETTING_HEADER = re.compile(
    r"^\s*--\s*dbops:(?P<name>lock_timeout|statement_timeout)\s*=\s*(?P<value>\S+)", re.M | re.I
)


@total_ordering
@dataclass(frozen=True)
class Version:
    """A Flyway version: dot- or underscore-separated integers, compared numerically, trailing zeros ignored.

    ``text`` is the version as written (underscores as dots, leading zeros kept: ``020`` for ``V020__x.sql``), which
    is what Flyway records in the history's ``version`` column; it never takes part in comparisons, so ``020`` and a
    ``20`` written by an older dbops are the same version."""

    parts: tuple[int, ...]
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        cleaned = text.strip().replace("_", ".")
        if not re.fullmatch(r"\d+(?:\.\d+)*", cleaned):
            raise MigrationError(f"{text!r} is not a migration version", "use numbers separated by dots, e.g. 1.2")
        return cls(tuple(int(p) for p in cleaned.split(".")), cleaned)

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
        return self.text or ".".join(str(p) for p in self.parts)


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


# ---- statements: what a file holds, checked whole before any of it runs ------------------------------------------

@dataclass(frozen=True)
class Statement:
    """One top-level statement: the 1-based line it starts on, its text, and ``COMMIT``/``BEGIN``/... when it is
    transaction control."""

    line: int
    text: str
    transaction_control: str | None = None


@dataclass(frozen=True)
class SqlProblem:
    """Why dbops will not run a piece of SQL: the line, a lint-style rule name, the problem and its fix."""

    line: int
    rule: str  # unparseable | transaction-control
    problem: str
    fix: str


class SqlRefused(MigrationError):
    """SQL text dbops will not run (the message starts with ``line N:``)."""

    def __init__(self, found: SqlProblem) -> None:
        self.found = found
        super().__init__(f"line {found.line}: {found.problem}", found.fix)


_PG_MAJOR = pg_parser.get_postgresql_version()[0]
_PARSE_FIX = (
    f"fix the SQL: every file is parsed whole with PostgreSQL {_PG_MAJOR}'s grammar (pglast) before anything runs, "
    "so psql meta-commands (\\set, \\i) and ${placeholders} are not accepted; syntax newer than PostgreSQL "
    f"{_PG_MAJOR} needs a newer pglast"
)
_TRIVIA_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})
# First words of PostgreSQL's TransactionStmt (END = COMMIT, ABORT = ROLLBACK); only these statements are parsed
# into a tree, the rest of a file is only split (building Python trees for a data-heavy file costs seconds per MB).
_TRANSACTION_WORDS = frozenset({"ABORT", "BEGIN", "COMMIT", "END", "PREPARE", "RELEASE", "ROLLBACK", "SAVEPOINT",
                                "START"})
_FIRST_WORD = re.compile(r"[A-Za-z_]+")
_KIND = pg_enums.TransactionStmtKind
_CONTROL_LABELS = {
    _KIND.TRANS_STMT_START: "START TRANSACTION", _KIND.TRANS_STMT_RELEASE: "RELEASE SAVEPOINT",
    _KIND.TRANS_STMT_ROLLBACK_TO: "ROLLBACK TO SAVEPOINT", _KIND.TRANS_STMT_PREPARE: "PREPARE TRANSACTION",
    _KIND.TRANS_STMT_COMMIT_PREPARED: "COMMIT PREPARED", _KIND.TRANS_STMT_ROLLBACK_PREPARED: "ROLLBACK PREPARED",
}
NO_TRANSACTION_FIX = (
    "dbops runs a file in one transaction and records it in that same transaction, so a COMMIT or ROLLBACK in it "
    "would keep or drop work behind the history's back: remove the statement, or put `-- dbops:no-transaction` in "
    "the file's leading comments to run it outside a transaction and manage transactions yourself"
)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, max(0, min(offset, len(text)))) + 1


def _short(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def split_statements(text: str) -> list[Statement]:
    """Split SQL into its top-level statements with PostgreSQL's own parser; refuse what it cannot parse.

    The parser either takes the whole text or fails with its message and position, and whatever lies between the
    statements it returns must be whitespace, comments and semicolons: no part of a file is ever silently dropped
    (the scanner-only split used before lost everything after a statement it could not close).
    """
    if (nul := text.find("\x00")) >= 0:
        raise SqlRefused(SqlProblem(_line_of(text, nul), "unparseable", "the text contains a NUL character",
                                    "remove it: PostgreSQL accepts no NUL in SQL text"))
    try:
        slices = pg_parser.split(text, with_parser=True, only_slices=True)
    except pg_parser.ParseError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else len(text.rstrip())
        raise SqlRefused(SqlProblem(_line_of(text, location), "unparseable", _short(message), _PARSE_FIX)) from None
    out: list[Statement] = []
    done = 0
    for piece in slices:
        if piece.start < done:
            raise SqlRefused(SqlProblem(_line_of(text, piece.start), "unparseable",
                                        "the parser returned overlapping statements", _PARSE_FIX))
        _check_between(text, done, piece.start)
        body = text[piece]
        out.append(Statement(_line_of(text, piece.start), body, _transaction_control(body)))
        done = piece.stop
    _check_between(text, done, len(text))
    return out


def _check_between(text: str, start: int, stop: int) -> None:
    """Refuse anything but whitespace, comments and semicolons between two statements (or before/after all)."""
    gap = text[start:stop]
    if not gap.strip():
        return
    rest = list(gap)
    try:
        tokens = pg_parser.scan(gap)
    except pg_parser.ParseError:
        tokens = []
    for token in tokens:
        if token.name in _TRIVIA_TOKENS or gap[token.start:token.end + 1] == ";":
            rest[token.start:token.end + 1] = " " * (token.end + 1 - token.start)
    leftover = "".join(rest)
    if leftover.strip():
        offset = start + len(leftover) - len(leftover.lstrip())
        raise SqlRefused(SqlProblem(
            _line_of(text, offset), "unparseable",
            f"{_short(text[offset:], 60)!r} is outside every statement the parser found", _PARSE_FIX,
        ))


def _transaction_control(body: str) -> str | None:
    """``COMMIT``, ``BEGIN``, ``SAVEPOINT``... when ``body`` is a top-level transaction statement, else None."""
    word = _FIRST_WORD.match(body)
    if not word or word[0].upper() not in _TRANSACTION_WORDS:
        return None
    try:
        parsed = pg_parser.parse_sql(body)
    except pg_parser.ParseError:
        return None  # it parsed as part of the whole file; a fragment failing on its own is not transaction control
    stmt = parsed[0].stmt if len(parsed) == 1 else None
    if not isinstance(stmt, pg_ast.TransactionStmt):
        return None  # e.g. PREPARE name AS ...: a prepared statement
    return _CONTROL_LABELS.get(stmt.kind, word[0].upper())


def _control_problems(found: list[Statement]) -> list[SqlProblem]:
    return [SqlProblem(s.line, "transaction-control", f"{s.transaction_control} inside a transactional migration",
                       NO_TRANSACTION_FIX) for s in found if s.transaction_control]


def sql_problems(text: str, *, in_transaction: bool) -> list[SqlProblem]:
    """Everything dbops refuses in ``text``: a parse failure, or (for SQL run inside dbops's transaction) each
    top-level transaction-control statement. Empty when the text may run."""
    try:
        found = split_statements(text)
    except SqlRefused as exc:
        return [exc.found]
    return _control_problems(found) if in_transaction else []


def checked_statements(script: str, text: str, *, in_transaction: bool) -> list[Statement]:
    """The statements of ``script``, or a :class:`MigrationError` naming the file, the line and the fix."""
    try:
        found = split_statements(text)
    except SqlRefused as exc:
        raise MigrationError(f"{script} line {exc.found.line}: {exc.found.problem}", exc.found.fix) from None
    for problem in _control_problems(found)[:1] if in_transaction else []:
        raise MigrationError(f"{script} line {problem.line}: {problem.problem}", problem.fix)
    return found


_ASSERT = re.compile(r"^--\s*dbops:assert\b(?P<sql>.*)$", re.I | re.S)
_QUERY_WORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})


@dataclass(frozen=True)
class Assertion:
    """A ``-- dbops:assert <SQL>`` line: the 1-based line it is on and its SQL (a boolean expression or a query
    returning one boolean)."""

    line: int
    sql: str

    @property
    def query(self) -> str:
        """The statement that evaluates it: the query as written, or ``SELECT (<expression>)``."""
        word = _FIRST_WORD.match(self.sql)
        if word and word[0].upper() in _QUERY_WORDS:
            return self.sql
        return "SELECT (" + self.sql + ")"


def assertions(script: str, text: str) -> list[Assertion]:
    """The ``-- dbops:assert`` comments of ``text`` (comments only: one inside a string or a function body is
    text), each checked to be one statement PostgreSQL's parser takes; :class:`MigrationError` naming the line."""
    if "dbops:assert" not in text.lower():
        return []
    try:
        tokens = pg_parser.scan(text)
    except pg_parser.ParseError:
        return []  # the file itself is refused with its parse error
    found = []
    for token in tokens:
        if token.name != "SQL_COMMENT":
            continue
        match = _ASSERT.match(text[token.start:token.end + 1].rstrip("\r\n"))
        if match is None:
            continue
        body = match["sql"].strip().rstrip(";").strip()
        line = _line_of(text, token.start)
        if not body:
            raise MigrationError(f"{script} line {line}: `-- dbops:assert` without SQL",
                                 "write `-- dbops:assert <SQL returning boolean>`, e.g. "
                                 "`-- dbops:assert (SELECT count(*) FROM app.users WHERE email IS NULL) = 0`")
        item = Assertion(line, body)
        try:
            parsed = pg_parser.parse_sql(item.query)
        except pg_parser.ParseError as exc:
            raise MigrationError(f"{script} line {line}: the assertion does not parse: {_short(str(exc), 80)}",
                                 "write one SQL expression or query returning a boolean after `-- dbops:assert`"
                                 ) from None
        if len(parsed) != 1 or not isinstance(parsed[0].stmt, pg_ast.SelectStmt):
            raise MigrationError(f"{script} line {line}: the assertion is not one query",
                                 "write one SQL expression or SELECT returning a boolean after `-- dbops:assert`")
        found.append(item)
    return found


def shown_name(path: Path | str) -> str:
    """A path as text that prints anywhere: bytes that are not UTF-8 shown as ``\\xe9``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class ResolvedMigration:
    """A migration file found on disk."""

    path: Path
    script: str  # the file name, as Flyway records it
    description: str
    version: Version | None  # None for repeatables
    checksum: int
    sql: str = field(repr=False)
    undo: bool = False  # a U<version>__ file: it undoes the versioned migration of its version

    @property
    def repeatable(self) -> bool:
        return self.version is None

    @property
    def type(self) -> str:
        """The history row's type, as Flyway writes it."""
        return "UNDO_SQL" if self.undo else "SQL"

    @property
    def label(self) -> str:
        if self.undo:
            return f"U{self.version}"
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


def _check_name(path: Path) -> None:
    """A file name that is not UTF-8 cannot be stored in the history table (nor printed): refuse it by name."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise MigrationError(
            f"migration file name {shown_name(path)} is not UTF-8",
            "rename it with UTF-8 (or plain ASCII) characters: the name is recorded in the history table",
        ) from None


def _fitting(migration: ResolvedMigration) -> ResolvedMigration:
    """Refuse a file whose version, description or name the history table's columns cannot hold."""
    for what, column, value, width in (
        ("version", "version", str(migration.version or ""), VERSION_WIDTH),
        ("description", "description", migration.description, DESCRIPTION_WIDTH),
        ("file name", "script", migration.script, SCRIPT_WIDTH),
    ):
        if len(value) > width:
            raise MigrationError(
                f"the {what} of {shown_name(migration.path)} is {len(value)} characters long; the history table's "
                f"{column} column holds {width}",
                f"rename the file with a shorter {what}",
            )
    return migration


@dataclass
class Resolved:
    versioned: list[ResolvedMigration]
    repeatable: list[ResolvedMigration]
    callbacks: list[Callback]
    undo: dict[Version, ResolvedMigration] = field(default_factory=dict)  # U files by the version they undo

    def by_version(self) -> dict[Version, ResolvedMigration]:
        return {m.version: m for m in self.versioned if m.version is not None}


def resolve(locations: list[Path]) -> Resolved:
    """Every migration and callback under ``locations`` (recursively), sorted; names checked strictly."""
    versioned: list[ResolvedMigration] = []
    repeatable: list[ResolvedMigration] = []
    callbacks: list[Callback] = []
    undo: dict[Version, ResolvedMigration] = {}
    for location in locations:
        if not location.is_dir():
            raise MigrationError(
                f"migrations folder {location} does not exist",
                "create it or point DBOPS_MIGRATIONS (or --locations) at the folder holding V<n>__<name>.sql files",
            )
        for path in sorted(location.rglob("*.sql")):
            name = path.name
            _check_name(path)
            if m := _VERSIONED.match(name):
                sql = read_sql(path)
                versioned.append(_fitting(ResolvedMigration(path, name, _description(m["desc"]),
                                                            Version.parse(m["version"]), flyway_checksum(sql), sql)))
            elif m := _REPEATABLE.match(name):
                sql = read_sql(path)
                repeatable.append(_fitting(ResolvedMigration(path, name, _description(m["desc"]), None,
                                                             flyway_checksum(sql), sql)))
            elif m := _CALLBACK.match(name):
                callbacks.append(Callback(m["event"], path, name, read_sql(path)))
            elif m := _UNDO.match(name):
                sql = read_sql(path)
                found = _fitting(ResolvedMigration(path, name, _description(m["desc"]), Version.parse(m["version"]),
                                                   flyway_checksum(sql), sql, undo=True))
                if found.version in undo:
                    raise MigrationError(
                        f"duplicate undo migration for version {found.version}: {undo[found.version].path} and "
                        f"{path}", "keep one U file per version")
                undo[found.version] = found  # type: ignore[index]
            else:
                raise MigrationError(
                    f"malformed migration file name {path}",
                    "name it V<version>__<description>.sql (capital V, two underscores, e.g. V2__add_orders.sql), "
                    "R__<description>.sql, U<version>__<description>.sql (its undo) or a Flyway callback such as "
                    "afterMigrate.sql",
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
    return Resolved(versioned, repeatable, callbacks, dict(sorted(undo.items())))

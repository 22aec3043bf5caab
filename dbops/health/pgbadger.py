"""pgBadger over a PostgreSQL server's log, incrementally: each run reads only the lines written since the previous
one, adds them to pgBadger's per-day and per-week HTML reports under a reports folder, and returns the headline
figures of those new lines (errors by level, lock waits, deadlocks, temporary files, checkpoints, autovacuum runs,
connections and sessions, the slowest statements with their text redacted).

How it works, with pgBadger's own machinery (``pgbadger --help``):

- ``--incremental --outdir <reports>`` keeps one binary file per day and run (``<reports>/YYYY/MM/DD/*.bin``) and
  rebuilds that day's and week's HTML from them; ``--last-parsed <reports>/LAST_PARSED`` remembers the last line read
  (its time and byte offset), so the next run starts after it.
- The figures are pgBadger's JSON output (``--extension json``) over the binary files this run added: exactly the new
  lines, read back from pgBadger's own counters instead of its HTML.
- The HTML is written with ``--anonymize`` by default: a literal in a statement (a password in ``CREATE ROLE ...
  PASSWORD '...'``, a customer's e-mail) never reaches the report; the statement texts of the figures go through
  :func:`dbops.redact.redact`. The binary files hold the statements as the server log does, in a 0700 folder.

Where the log is and how its lines start come from the server (:func:`server_log_settings`: ``log_destination``,
``logging_collector``, ``pg_current_logfile()``, ``log_line_prefix``), or are given (an external server whose log this
machine reads as a file, the embedded server whose stderr ``pg_ctl -l`` writes). Settings that leave a figure
unlogged (``log_temp_files = -1``...) are named (:func:`missing_log_settings`) and that figure is left out, never a 0.

pgBadger places lines in time to the second: a line written in the same second as the last line of the previous run is
not read again (pgBadger's rule, to avoid counting a line twice).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dbops.errors import CommandFailed, ConfigError, DbopsError
from dbops.private import private_dir
from dbops.programs import last_error_line, run_command
from dbops.redact import redact

PGBADGER = Path("/usr/bin/pgbadger")  # Debian's package
INSTALL_FIX = "install it: `apt-get install pgbadger` (or `make system-deps`)"
LEVELS = ("WARNING", "ERROR", "FATAL", "PANIC")
STATE_FILE = "LAST_PARSED"  # pgBadger's --last-parsed file, in the reports folder
WORK_DIR = ".pgbadger"  # pgBadger's pid file and temporary files, one folder per reports folder
TOP = 10
RETENTION_WEEKS = 8
TIMEOUT_S = 1800.0
STATEMENT_CHARS = 500  # a statement's text in the figures, cut after this many characters
SCAN_BYTES = 1 << 20  # how much of the unread part of the log is looked at to tell "nothing new" from "unreadable"
FORMATS = ("stderr", "csv", "jsonlog", "syslog", "syslog2")
SUGGESTED_PREFIX = "%m [%p] %q%u@%d "

Progress = Callable[[str], None] | None

LOG_SETTINGS = (
    "log_destination", "logging_collector", "log_directory", "log_filename", "log_line_prefix", "data_directory",
    "lc_messages", "log_min_duration_statement", "log_lock_waits", "log_temp_files", "log_checkpoints",
    "log_autovacuum_min_duration", "log_connections", "log_disconnections", "deadlock_timeout",
)
# LOG messages pgBadger files as ERROR to show them among its events (its revert_log_level undoes it in its text and
# HTML reports, not in its JSON): not errors, left out of the counts by level.
_PROMOTED = re.compile(
    r"parameter \"[^\"]+\" changed to|database system was|recovery has paused|sending cancel to blocking autovacuum"
    r"|skipping analyze of|using stale statistics|received replication command:|still waiting for"
    r"|server process.*was terminated by signal|could not (?:receive|send) data (?:from|to) client")
_LEVEL = re.compile(r"^(WARNING|ERROR|FATAL|PANIC):")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
_TIME_ESCAPES = ("%t", "%m", "%n")


def _on(value: str) -> bool:
    return value.strip().lower() in ("on", "true", "yes", "1")


def _not_minus_one(value: str) -> bool:
    return value.strip() != "-1"


def _any_connection(value: str) -> bool:  # PostgreSQL 18 takes a list of aspects (receipt,authentication,...)
    return value.strip().lower() not in ("off", "false", "no", "0", "")


# figure -> (the setting that makes PostgreSQL log it, is it logged with this value, what to set)
NEEDS: dict[str, tuple[str, Callable[[str], bool], str]] = {
    "slowest": ("log_min_duration_statement", _not_minus_one, "log_min_duration_statement = '1s'"),
    "lock_waits": ("log_lock_waits", _on, "log_lock_waits = on"),
    "temp_files": ("log_temp_files", _not_minus_one, "log_temp_files = 0"),
    "checkpoints": ("log_checkpoints", _on, "log_checkpoints = on"),
    "autovacuum_runs": ("log_autovacuum_min_duration", _not_minus_one, "log_autovacuum_min_duration = '1min'"),
    "connections": ("log_connections", _any_connection, "log_connections = on"),
    "sessions": ("log_disconnections", _on, "log_disconnections = on"),
}


def server_log_settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The server's logging settings (those this role may read) and, under ``current_logfile:<format>``, the file
    ``pg_current_logfile()`` names for each destination (superusers and pg_monitor only; none without the collector)."""
    rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [list(LOG_SETTINGS)]).fetchall()
    out = {str(name): str(value) for name, value in rows}
    for destination in ("stderr", "csvlog", "jsonlog"):
        try:
            row = conn.execute("SELECT pg_current_logfile(%s)", [destination]).fetchone()
        except psycopg.Error:  # no right to ask, or no jsonlog before PostgreSQL 15
            if not conn.autocommit:
                conn.rollback()
            continue
        if row and row[0]:
            out[f"current_logfile:{destination}"] = str(row[0])
    return out


def missing_log_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """The figures the server does not log with ``settings``, each with the setting that would log it (a setting this
    role cannot read is not reported). ``lc_messages`` other than English hides every figure: pgBadger reads
    PostgreSQL's English messages."""
    missing = {figure: fix for figure, (name, logged, fix) in NEEDS.items()
               if name in settings and not logged(settings[name])}
    messages = settings.get("lc_messages", "")
    if messages and messages not in ("C", "POSIX") and not messages.lower().startswith("en"):
        missing["messages"] = "lc_messages = 'C'"
    return missing


@dataclass(frozen=True)
class LogSource:
    """The log file to read, in which format (pgBadger's ``--format``), with which line prefix (stderr and syslog),
    and the server's logging settings as read (may be empty when the source was given)."""

    path: Path
    format: str = "stderr"
    prefix: str = SUGGESTED_PREFIX
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> dict[str, str]:
        return missing_log_settings(self.settings)


class NoServerLog(ConfigError):
    """No log file was named and the server cannot say where its log goes: nothing to report on (a WARN in Dagster,
    not a failure of the database)."""


def _format_of(path: Path) -> str:
    return {".csv": "csv", ".json": "jsonlog"}.get(path.suffix.lower(), "stderr")


def _where_from_server(settings: Mapping[str, str]) -> tuple[Path, str]:
    for destination, fmt in (("stderr", "stderr"), ("csvlog", "csv"), ("jsonlog", "jsonlog")):
        current = settings.get(f"current_logfile:{destination}")
        if not current:
            continue
        path = Path(current)
        if not path.is_absolute():
            if not settings.get("data_directory"):
                raise ConfigError(f"the server logs to {current}, relative to a data directory this role cannot read",
                                  "name the log file (logs.path), or connect as a superuser or pg_read_all_settings")
            path = Path(settings["data_directory"]) / path
        return path, fmt
    destinations = settings.get("log_destination", "stderr")
    if settings.get("logging_collector") == "on":
        problem = "pg_current_logfile() names no log file to this role (superusers and pg_monitor may ask)"
    elif "stderr" in destinations.split(","):
        problem = ("the server writes its log to stderr without logging_collector, so it cannot say where the log"
                   " goes")
    else:
        problem = f"the server logs to {destinations}, not to a file pgBadger can read"
    raise NoServerLog(f"no server log to read: {problem}",
                      "name the log file this machine can read (logs.path), or turn logging_collector on")


def log_source(settings: Mapping[str, str], *, log_path: Path | str | None = None, log_line_prefix: str | None = None,
               log_format: str | None = None) -> LogSource:
    """Which log to read and how: ``log_path`` when given (the embedded server's stderr file, an external server's log
    copied or mounted here), else the file the server names (``pg_current_logfile()``, with the collector on);
    ``log_line_prefix`` when given, else the server's. Bad or unknown input: a :class:`ConfigError` naming the fix."""
    if log_path:
        path = Path(log_path)
        fmt = log_format or _format_of(path)
    else:
        path, fmt = _where_from_server(settings)
        fmt = log_format or fmt
    if fmt not in FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    prefix = ""
    if fmt in ("stderr", "syslog", "syslog2"):
        given = log_line_prefix if log_line_prefix is not None else settings.get("log_line_prefix")
        if given is None:
            raise ConfigError(f"the log_line_prefix of {path} is unknown (the server did not say)",
                              "give it (logs.line_prefix), as SHOW log_line_prefix prints it on the server")
        if not any(escape in given for escape in _TIME_ESCAPES):
            raise ConfigError(
                f"log_line_prefix {given!r} has no timestamp (%t, %m or %n): pgBadger cannot place the lines in time",
                f"set log_line_prefix = '{SUGGESTED_PREFIX}' on the server, then SELECT pg_reload_conf()")
        prefix = given
    return LogSource(path=path, format=fmt, prefix=prefix, settings=dict(settings))


def find_pgbadger(program: Path | str | None = None) -> Path:
    """The pgBadger program: ``program``, else ``pgbadger`` on PATH, else Debian's /usr/bin/pgbadger."""
    if program:
        path = Path(program)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise DbopsError(f"pgBadger not found at {path}", INSTALL_FIX)
        return path
    found = shutil.which("pgbadger")
    if found:
        return Path(found)
    if PGBADGER.is_file() and os.access(PGBADGER, os.X_OK):
        return PGBADGER
    raise DbopsError("pgBadger is not installed (no pgbadger program on PATH)", INSTALL_FIX)


def pgbadger_version(program: Path) -> str:
    out = run_command([program, "--version"], timeout=60, what="pgbadger --version").stdout
    match = re.search(r"version\s+(\S+)", out)
    return match.group(1) if match else out.strip()


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DbopsError(f"the server log {path} does not exist",
                         "name the file the server writes (logs.path), or check that the server is running")
    if not path.is_file():
        raise DbopsError(f"the server log {path} is not a file", "name the log file itself (logs.path), not a folder")
    if not os.access(path, os.R_OK):
        raise DbopsError(f"the server log {path} is not readable by this user",
                         "run dbops as a user that may read it (e.g. in the server's group), or name a readable copy")


@dataclass(frozen=True)
class SlowStatement:
    """One of the slowest statements the log recorded (``log_min_duration_statement``), its text redacted."""

    duration_ms: float
    at: str
    database: str | None
    user: str | None
    application: str | None
    statement: str


@dataclass(frozen=True)
class LogReport:
    """One run of pgBadger: where its reports are, which lines it read, and their headline figures (None: the server
    does not log that figure, see ``not_logged``)."""

    log: Path
    reports_dir: Path
    report: Path  # the index of the incremental reports (days, weeks)
    day_reports: tuple[Path, ...]  # the day reports this run added lines to
    since: str | None  # the last line read before this run (None: the first run)
    until: str | None  # the last line read now
    lines: int  # log lines read this run
    errors: dict[str, int]  # lines per level (WARNING, ERROR, FATAL, PANIC)
    lock_waits: int | None = None  # waits logged as acquired after deadlock_timeout
    lock_wait_ms: float | None = None
    deadlocks: int | None = None
    temp_files: int | None = None
    temp_bytes: int | None = None
    checkpoints: int | None = None
    autovacuum_runs: int | None = None
    connections: int | None = None
    sessions: int | None = None
    session_ms: float | None = None
    queries: int | None = None  # statements logged with their duration
    slowest: tuple[SlowStatement, ...] = ()
    not_logged: dict[str, str] = field(default_factory=dict)  # figure -> the setting that would log it
    pgbadger: str = ""  # its version
    seconds: float = 0.0

    @property
    def nothing_reason(self) -> str | None:
        """Why nothing was checked (no new line), else None."""
        if self.lines:
            return None
        since = f"since {self.since}" if self.since else f"in {self.log} (empty)"
        return f"nothing checked: no new log lines {since}"

    @property
    def fatal(self) -> int:
        """FATAL and PANIC lines."""
        return self.errors.get("FATAL", 0) + self.errors.get("PANIC", 0)

    def figures(self) -> dict[str, Any]:
        """The headline figures by name (None left for the caller's metadata to leave out)."""
        return {
            "lines": self.lines,
            **{f"errors_{level.lower()}": self.errors.get(level, 0) for level in LEVELS},
            "lock_waits": self.lock_waits,
            "lock_wait_ms": self.lock_wait_ms,
            "deadlocks": self.deadlocks,
            "temp_files": self.temp_files,
            "temp_bytes": self.temp_bytes,
            "checkpoints": self.checkpoints,
            "autovacuum_runs": self.autovacuum_runs,
            "connections": self.connections,
            "sessions": self.sessions,
            "session_ms": self.session_ms,
            "queries": self.queries,
            "slowest_ms": self.slowest[0].duration_ms if self.slowest else None,
        }


def _last_parsed(state: Path) -> tuple[str | None, int]:
    """(time, byte offset) of the last line pgBadger read, from its --last-parsed file."""
    try:
        first = state.read_text(errors="replace").splitlines()[0]
    except (FileNotFoundError, IndexError):
        return None, 0
    parts = first.split("\t")
    try:
        offset = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        offset = 0
    return (parts[0] or None), offset


def _binaries(out: Path) -> set[Path]:
    return set(out.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*.bin"))


def _check_nothing_new(source: LogSource, since: str | None, offset: int) -> None:
    """pgBadger added nothing: fine when the log has no line after ``since``; an error when it has (its lines do not
    have the format or prefix given, so pgBadger skipped them all)."""
    size = source.path.stat().st_size
    start = offset if offset <= size else 0  # a smaller file: rotated or truncated, read from its start
    with source.path.open("rb") as log:
        log.seek(start)
        unread = log.read(SCAN_BYTES).decode("utf-8", errors="replace")
    stamps = [m.group(0).replace("T", " ") for m in _TIMESTAMP.finditer(unread)]
    later = [s for s in stamps if since is None or s > since]
    if not later and (since is not None or not unread.strip()):
        return
    shape = f"the log_line_prefix {source.prefix!r}" if source.prefix else f"the {source.format} format"
    raise ConfigError(
        f"pgBadger read no line of {source.path}: its lines do not match {shape}",
        "give the prefix the server writes (logs.line_prefix; SHOW log_line_prefix on the server) or the log's format",
    )


def _run(args: list[Any], what: str, timeout: float, out: Path) -> None:
    proc = run_command(args, timeout=timeout, check=False, what=what)
    if proc.returncode == 0:
        return
    text = redact(last_error_line(proc.stderr or proc.stdout))
    if proc.returncode == 3:
        raise CommandFailed(f"{what}: another pgBadger run is writing {out} ({text})",
                            "wait for it to finish, or remove its pid file if none runs")
    if "JSON::XS" in (proc.stderr or ""):
        raise CommandFailed(f"{what}: pgBadger's JSON output needs the Perl module JSON::XS",
                            "install it: `apt-get install libjson-xs-perl`")
    raise CommandFailed(f"{what} failed (exit {proc.returncode}): {text}")


def _buckets(data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    """The per-database parts of one of pgBadger's sections (one, ``postgres``, unless reports are exploded)."""
    section = data.get(name) or {}
    return [v for v in section.values() if isinstance(v, Mapping)] if isinstance(section, Mapping) else []


def _num(raw: Any) -> float:
    try:
        return float(raw or 0)
    except (TypeError, ValueError):
        return 0.0


def _total(parts: Iterable[Mapping[str, Any]], key: str) -> float:
    return sum(_num(p.get(key)) for p in parts)


def _slowest(data: Mapping[str, Any], top: int) -> tuple[SlowStatement, ...]:
    rows: list[SlowStatement] = []
    for part in (data.get("top_slowest") or {}).values():
        for row in part or []:
            if not isinstance(row, list) or len(row) < 3:
                continue
            cells = [*row, *[None] * 7]
            text = redact(" ".join(str(cells[2] or "").split()))
            if len(text) > STATEMENT_CHARS:
                text = text[:STATEMENT_CHARS] + "…"
            rows.append(SlowStatement(duration_ms=round(_num(cells[0]), 3), at=str(cells[1] or ""),
                                      database=cells[3] or None, user=cells[4] or None, application=cells[6] or None,
                                      statement=text))
    rows.sort(key=lambda s: s.duration_ms, reverse=True)
    return tuple(rows[:top])


def figures_from_json(data: Mapping[str, Any], *, top: int = TOP,
                      missing: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The headline figures of pgBadger's JSON output; a figure the server does not log (``missing``) and that is 0
    is None (not measured), never a 0 that reads as "none happened"."""
    missing = missing or {}
    levels: Counter[str] = Counter()  # from the events pgBadger keeps per normalized message ("ERROR:  ...")
    for part in _buckets(data, "error_info"):
        for message, info in part.items():
            level = _LEVEL.match(str(message))
            if level and isinstance(info, Mapping) and not _PROMOTED.search(str(message)):
                levels[level.group(1)] += int(_num(info.get("count")))
    locks = [info for part in _buckets(data, "lock_info") for info in part.values() if isinstance(info, Mapping)]
    deadlocks = sum(int(_num(info.get("count"))) for part in _buckets(data, "error_info")
                    for message, info in part.items() if "deadlock detected" in str(message) and
                    isinstance(info, Mapping))
    temp = _buckets(data, "tempfile_info")
    checkpoint = data.get("checkpoint_info") or {}
    started = checkpoint.get("starting") if isinstance(checkpoint, Mapping) else None
    sessions = _buckets(data, "session_info")

    def unless_unlogged(name: str, value: float, as_int: bool = True) -> Any:
        if not value and name in missing:
            return None
        return int(value) if as_int else round(value, 3)

    return {
        "lines": int(_num(data.get("nlines"))) if not isinstance(data.get("nlines"), Mapping) else 0,
        "errors": {level: levels.get(level, 0) for level in LEVELS},
        "lock_waits": unless_unlogged("lock_waits", _total(locks, "count")),
        "lock_wait_ms": unless_unlogged("lock_waits", _total(locks, "duration"), as_int=False),
        "deadlocks": deadlocks,
        "temp_files": unless_unlogged("temp_files", _total(temp, "count")),
        "temp_bytes": unless_unlogged("temp_files", _total(temp, "size")),
        "checkpoints": unless_unlogged(
            "checkpoints", sum(_num(v) for v in started.values()) if isinstance(started, Mapping) else 0.0),
        "autovacuum_runs": unless_unlogged("autovacuum_runs", _total(_buckets(data, "autovacuum_info"), "count")),
        "connections": unless_unlogged("connections", _total(_buckets(data, "connection_info"), "count")),
        "sessions": unless_unlogged("sessions", _total(sessions, "count")),
        "session_ms": unless_unlogged("sessions", _total(sessions, "duration"), as_int=False),
        "queries": unless_unlogged("slowest", _total(_buckets(data, "overall_stat"), "queries_number")),
        "slowest": _slowest(data, top),
    }


def log_report(source: LogSource, reports_dir: Path, *, top: int = TOP, retention_weeks: int = RETENTION_WEEKS,
               anonymize: bool = True, program: Path | str | None = None, progress: Progress = None,
               timeout: float = TIMEOUT_S) -> LogReport:
    """Run pgBadger incrementally over ``source`` into ``reports_dir`` (0700) and return the figures of the lines it
    read now. No new line: a report with ``lines == 0`` (see :attr:`LogReport.nothing_reason`)."""
    say = progress or (lambda _line: None)
    pgbadger = find_pgbadger(program)
    _check_readable(source.path)
    if top < 1:
        raise ConfigError(f"top must be at least 1 (got {top})", "ask for 1 or more slowest statements")
    out = private_dir(Path(reports_dir).absolute())
    work = private_dir(out / WORK_DIR)
    state = out / STATE_FILE
    since, offset = _last_parsed(state)
    before = _binaries(out)
    version = pgbadger_version(pgbadger)
    common = ["--quiet", "--top", str(top), "--pid-dir", work, "--tempdir", work]
    args: list[Any] = [pgbadger, *common, "--incremental", "--outdir", out, "--last-parsed", state,
                       "--format", source.format]
    if source.prefix:
        args += ["--prefix", source.prefix]
    if anonymize:
        args.append("--anonymize")
    if retention_weeks > 0:
        args += ["--retention", str(retention_weeks)]
    args.append(source.path)
    started = time.monotonic()
    say(f"pgBadger {version}: reading {source.path} ({source.format}) from {since or 'its first line'}")
    _run(args, "pgbadger", timeout, out)
    new = sorted(_binaries(out) - before)
    until, _ = _last_parsed(state)
    days = tuple(sorted({b.parent / "index.html" for b in new if (b.parent / "index.html").exists()}))
    base = {"log": source.path, "reports_dir": out, "report": out / "index.html", "day_reports": days,
            "since": since, "until": until, "not_logged": source.missing, "pgbadger": version}
    if not new:
        _check_nothing_new(source, since, offset)
        say(f"pgBadger: no new line since {since or 'the start of the log'} ({time.monotonic() - started:.1f} s)")
        return LogReport(lines=0, errors={level: 0 for level in LEVELS}, seconds=time.monotonic() - started, **base)
    say(f"pgBadger: {len(new)} new day file(s) in {out}; reading their figures")
    figures_file = work / f"figures-{os.getpid()}.json"
    try:
        _run([pgbadger, *common, "--extension", "json", "--outfile", figures_file, *new], "pgbadger (json)",
             timeout, out)
        data = json.loads(figures_file.read_text(errors="replace"))
    finally:
        figures_file.unlink(missing_ok=True)  # it holds the statements unredacted
    figures = figures_from_json(data, top=top, missing=source.missing)
    report = LogReport(seconds=time.monotonic() - started, **base, **figures)
    say(f"pgBadger: {report.lines} lines up to {until}: " + ", ".join(
        f"{report.errors[level]} {level}" for level in LEVELS) + f" ({report.seconds:.1f} s)")
    return report

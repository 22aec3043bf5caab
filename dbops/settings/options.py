"""Every dbops option in one declarative table: key, scope, type, default, environment variable, description.

The loader (:mod:`dbops.settings.load`), ``dbops config check|show`` and the generated documentation
(``docs/configuration.md``, the README's option tables) all read this table; nothing else defines an option.

``scope`` is ``global`` (one value for the whole installation: the state directory, the embedded server, Dagster's
storage) or ``target`` (one value per managed database). A ``secret`` option's value is the *name* of an environment
variable that holds the secret (``url_env: SHOP_DATABASE_URL``); the secret itself is read when it is used, never
stored in the file or printed. Its ``env`` is today's variable holding the secret: when that variable is set, the
reference points at it (``DBOPS_DATABASE_URL`` set means ``url_env: DBOPS_DATABASE_URL``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from dbops.redact import redact

Scope = Literal["global", "target"]

TARGET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
QUALIFIED = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_TRUE = ("on", "true", "yes", "1")
_FALSE = ("off", "false", "no", "0")


class Invalid(ValueError):
    """A value an option does not accept: the problem and how to fix it (no part of a secret in either)."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def shown(raw: object) -> str:
    """A value quoted in a message: redacted and cut short, so a pasted secret never comes back whole."""
    text = redact(raw if isinstance(raw, str) else repr(raw))
    return repr(text if len(text) <= 60 else text[:57] + "...")


class Kind:
    """How an option's value is spelled in the file and in the environment, and how it is checked."""

    name = "text"
    empty: Any = None  # the value of "key: ~" where the option accepts none

    def parse(self, raw: object, example: str) -> Any:
        raise NotImplementedError

    def text(self, value: Any) -> str:
        """The value as ``dbops config show`` and the docs print it."""
        if value is None:
            return "none"
        return str(value)


class Text(Kind):
    def __init__(self, pattern: re.Pattern[str] | None = None, what: str = "", empty: str | None = None) -> None:
        self.pattern, self.what, self.empty = pattern, what, empty
        self.name = what or "text"

    def parse(self, raw: object, example: str) -> str:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise Invalid(f"must be {self.what or 'a string'}, got {shown(raw)}", f"set it to e.g. {example}")
        value = str(raw).strip()
        if not value and self.empty is not None:
            return self.empty
        if not value:
            raise Invalid("is empty", f"set it to e.g. {example} or leave it out")
        if self.pattern is not None and not self.pattern.match(value):
            raise Invalid(f"must be {self.what}, got {shown(raw)}", f"set it to e.g. {example}")
        return value


class Integer(Kind):
    def __init__(self, low: int, high: int | None = None, what: str = "") -> None:
        self.low, self.high = low, high
        self.name = what or ("positive integer" if low == 1 and high is None else f"integer {low}-{high}")

    def parse(self, raw: object, example: str) -> int:
        text = raw.strip() if isinstance(raw, str) else raw
        try:
            if isinstance(text, bool) or isinstance(text, float) and not text.is_integer():
                raise ValueError
            value = int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = None
        if value is None or value < self.low or (self.high is not None and value > self.high):
            raise Invalid(f"must be a {self.name}, got {shown(raw)}", f"set it to e.g. {example}")
        return value


class Number(Kind):
    name = "positive number"

    def parse(self, raw: object, example: str) -> float:
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = None
        if value is None or not value > 0 or value == float("inf"):
            raise Invalid(f"must be a positive number, got {shown(raw)}", f"set it to e.g. {example}")
        return value

    def text(self, value: Any) -> str:
        return "none" if value is None else f"{value:g}"


class Flag(Kind):
    name = "on/off"

    def parse(self, raw: object, example: str) -> bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise Invalid(f"must be on or off, got {shown(raw)}", f"set it to {example}")

    def text(self, value: Any) -> str:
        return "on" if value else "off"


class Choice(Kind):
    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.name = " | ".join(choices)

    def parse(self, raw: object, example: str) -> str:
        """The canonical spelling of a case-insensitive match."""
        text = str(raw).strip().lower()
        for choice in self.choices:
            if choice.lower() == text:
                return choice
        raise Invalid(f"must be one of {', '.join(self.choices)}, got {shown(raw)}", f"set it to e.g. {example}")


class PathKind(Kind):
    """A path; relative paths are resolved against the file's folder (file) or the working directory (env).

    ``must`` says what has to be there for ``dbops config check``: a ``dir``, a ``file``, a program (``exe``), or
    nothing (an output location dbops creates)."""

    def __init__(self, must: Literal["dir", "file", "exe"] | None = None) -> None:
        self.must = must
        self.name = {"dir": "folder", "file": "file", "exe": "program", None: "path"}[must]

    def parse(self, raw: object, example: str) -> Path:
        if not isinstance(raw, str) or not raw.strip():
            raise Invalid(f"must be a {self.name} path, got {shown(raw)}", f"set it to e.g. {example}")
        return Path(raw.strip()).expanduser()


class TextList(Kind):
    name = "list"
    empty = ()

    def __init__(self, item: Kind | None = None) -> None:
        self.item = item or Text()

    def parse(self, raw: object, example: str) -> tuple[str, ...]:
        """A YAML list, or a comma-separated string (the environment's spelling)."""
        if isinstance(raw, str):
            items: Sequence[object] = [part for part in raw.split(",") if part.strip()]
        elif isinstance(raw, list):
            items = raw
        else:
            raise Invalid(f"must be a list, got {shown(raw)}", f"set it to e.g. [{example}]")
        return tuple(self.item.parse(item, example) for item in items)

    def text(self, value: Any) -> str:
        return ", ".join(value) if value else "none"


class KeyValues(Kind):
    """A mapping of names to text values (``{reminder_channel: email}`` in the file, ``a=1,b=2`` in the environment),
    kept as sorted (name, value) pairs so settings stay hashable."""

    name = "mapping"
    empty = ()

    def __init__(self, key: Text | None = None, value: Kind | None = None) -> None:
        self.key, self.value = key or Text(), value or Text(empty="")

    def parse(self, raw: object, example: str) -> tuple[tuple[str, str], ...]:
        if isinstance(raw, str):
            pairs: list[tuple[object, object]] = []
            for part in (p for p in raw.split(",") if p.strip()):
                name, sep, value = part.partition("=")
                if not sep:
                    raise Invalid(f"{shown(part)} is not name=value", f"write e.g. {example}")
                pairs.append((name, value))
        elif isinstance(raw, dict):
            pairs = list(raw.items())
        else:
            raise Invalid(f"must be a mapping, got {shown(raw)}", f"set it to e.g. {{{example.replace('=', ': ')}}}")
        out = {}
        for name, value in pairs:
            out[self.key.parse(name, example)] = self.value.parse("" if value is None else value, example)
        return tuple(sorted(out.items()))

    def text(self, value: Any) -> str:
        return ", ".join(f"{k}={v}" for k, v in value) if value else "none"


class IsoDate(Kind):
    name = "date"

    def parse(self, raw: object, example: str) -> date:
        if isinstance(raw, date):
            return raw
        try:
            return date.fromisoformat(str(raw).strip())
        except ValueError:
            raise Invalid(f"must be a date YYYY-MM-DD, got {shown(raw)}", f"set it to e.g. {example}") from None


_CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
                ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
                ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))


def _cron_value(text: str, low: int, names: tuple[str, ...]) -> int:
    if text.lower() in names:
        return names.index(text.lower()) + low
    return int(text)


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a five-field cron expression (None when it is one)."""
    fields = expression.split()
    if len(fields) != 5:
        return f"has {len(fields)} fields, a cron expression has 5 (minute hour day-of-month month day-of-week)"
    for text, (what, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            body, _, step = item.partition("/")
            try:
                if step and int(step) < 1:
                    return f"{what}: step {step!r} must be 1 or more"
                if body != "*":
                    first, _, last = body.partition("-")
                    values = [_cron_value(first, low, names)] + ([_cron_value(last, low, names)] if last else [])
                    if any(not low <= v <= high for v in values) or (last and values[0] > values[1]):
                        return f"{what}: {item!r} is outside {low}-{high}"
            except ValueError:
                return f"{what}: {item!r} is not a number, range or step"
    return None


class Cron(Kind):
    name = "cron (UTC)"

    def parse(self, raw: object, example: str) -> str:
        text = str(raw).strip() if isinstance(raw, str) else ""
        problem = cron_problem(text) if text else "is empty"
        if problem:
            raise Invalid(f"{problem}, got {shown(raw)}", f'write five fields in quotes, e.g. "{example}"')
        return " ".join(text.split())


class EnvRef(Kind):
    """The name of an environment variable that holds a secret (the secret itself is never in the file)."""

    name = "variable name (secret)"

    def parse(self, raw: object, example: str) -> str:
        text = raw.strip() if isinstance(raw, str) else ""
        if not ENV_NAME.match(text):
            # No value is echoed: somebody may have pasted the secret instead of the variable's name.
            raise Invalid("must be the NAME of an environment variable (the secret stays in the environment)",
                          f"set it to e.g. {example} and export {example}=... where dbops runs")
        return text


@dataclass(frozen=True)
class Derived:
    """A default computed from other values (``doc`` is how the docs spell it)."""

    doc: str
    compute: Callable[[DeriveContext], Any]


@dataclass(frozen=True)
class DeriveContext:
    """What a derived default may look at: the values resolved so far (globals first, then the target's in table
    order), the target's name, and whether the file names its targets (``targets:``) or there is one implicit."""

    values: dict[str, Any]
    target: str | None
    named_targets: bool
    cwd: Path
    target_names: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


@dataclass(frozen=True)
class Option:
    key: str  # dotted path in its scope: "home", "backup.s3.bucket"
    scope: Scope
    kind: Kind
    default: Any
    description: str
    env: str | None = None
    example: str = ""
    in_file: bool = True  # False: environment only (the path of the file itself)
    readme: str | None = None  # the README table that lists it, if any
    exclusive: str | None = None  # options of one group are alternatives: the highest layer that sets one wins
    nullable: bool = False  # "key: ~" means none although the default is something

    @property
    def accepts_none(self) -> bool:
        return self.nullable or self.default is None or self.default == ()

    @property
    def secret(self) -> bool:
        return isinstance(self.kind, EnvRef)

    @property
    def attr(self) -> str:
        """The typed field: the last key segment, without ``_env`` for a secret (``url_env`` -> ``url``)."""
        last = self.key.rsplit(".", 1)[-1]
        return last.removesuffix("_env") if self.secret else last

    @property
    def section(self) -> str:
        return self.key.rsplit(".", 1)[0] if "." in self.key else ""

    @property
    def default_doc(self) -> str:
        if isinstance(self.default, Derived):
            return self.default.doc
        if self.default is None or self.default == ():
            return "none"
        return self.kind.text(self.default)


PORT = Integer(1, 65535, what="TCP port from 1 to 65535")


CONFIG_NAME = "dbops.yaml"
DEFAULT_TARGET = "dbops"


def _config_file(ctx: DeriveContext) -> Path | None:
    path = ctx.cwd / CONFIG_NAME
    return path if path.is_file() else None


def checkout_dir() -> Path:
    """The checkout this package runs from (no environment): the last-resort default of a domain function called
    without its folder; the settings' ``project_dir`` (``DBOPS_PROJECT_DIR``) is what callers pass."""
    return Path(__file__).resolve().parent.parent.parent


def _project_dir(ctx: DeriveContext) -> Path:
    here = checkout_dir()
    return here if (here / "sql").is_dir() else ctx.cwd


def _default_target(ctx: DeriveContext) -> str:
    names = ctx.target_names
    return DEFAULT_TARGET if DEFAULT_TARGET in names or not names else names[0]


def _project(ctx: DeriveContext, *parts: str) -> Path:
    return ctx["project_dir"].joinpath(*parts)


def _backup_dir(ctx: DeriveContext) -> Path:
    root: Path = ctx["home"] / "backups"
    return root / ctx.target if ctx.named_targets and ctx.target else root


def _spool(ctx: DeriveContext) -> Path | None:
    # The embedded server's WAL is the whole cluster's: it is archived once, into the default target's store (whose
    # base backups are the server's); another database on that server has logical backups of its own.
    owner = ctx.target is None or ctx.target == ctx["default_target"]
    return ctx["home"] / "wal-spool" if ctx["embedded"] and ctx["wal_archive"] and owner else None


def runs_reference_schema(migrations: Path, project_dir: Path) -> bool:
    """A target whose migrations are the checkout's `sql/migrations` runs dbops' own reference schema: only then do
    the reference's matrix, rule files and seed apply by default; a team's own database has its own, or none."""
    return Path(migrations).resolve() == (Path(project_dir) / "sql" / "migrations").resolve()


def _reference(ctx: DeriveContext) -> bool:
    return runs_reference_schema(ctx["migrations"], ctx["project_dir"])


def _key_file(ctx: DeriveContext) -> Path | None:
    if ctx["embedded"] and ctx["backup.key_env"] is None:
        return ctx["home"] / "secrets" / "backup.key"
    return None


EMBEDDED_TOOL_ROLES = ("postgres", "dbops_owner", "dbops_migrator")


def _global(key: str, kind: Kind, default: Any, description: str, env: str | None = None, example: str = "",
            **extra: Any) -> Option:
    return Option(key, "global", kind, default, description, env, example, **extra)


def _target(key: str, kind: Kind, default: Any, description: str, env: str | None = None, example: str = "",
            **extra: Any) -> Option:
    return Option(key, "target", kind, default, description, env, example, **extra)


# (schedule, cron, on by default, what it runs): every schedule of the code location. The coordinator's wiring makes
# dbops/components read these; until then dbops_tests/settings checks they equal the code location's.
SCHEDULES: tuple[tuple[str, str, bool, str], ...] = (
    ("migrate_hourly", "0 * * * *", False, "applies merged migrations (schema_migrations)"),
    ("catalog_daily", "0 2 * * *", True, "catalog snapshot and drift check (schema_catalog)"),
    ("query_profile_hourly", "15 * * * *", True, "pg_stat_statements snapshot diff (query_profile)"),
    ("index_advice_weekly", "0 4 * * 1", False, "index advice verified on a copy (index_advice)"),
    ("weekly_load_test", "0 3 * * 0", False, "the full users ramp (load_test)"),
    ("logical_backup_daily", "0 0 * * *", True, "logical dump (logical_backup)"),
    ("base_backup_nightly_full", "0 1 * * *", True, "full physical base backup (base_backup)"),
    ("base_backup_hourly_incremental", "30 2-23 * * *", True, "incremental base backup (base_backup)"),
    ("wal_archive_every_15_min", "*/15 * * * *", True, "WAL spool into the store, archive lag (wal_archive)"),
    ("backup_retention_daily", "30 5 * * *", True, "prunes expired backups (backup_retention)"),
    ("restore_drill_weekly", "0 6 * * 6", True, "restore drill and RTO (restore_drill)"),
    ("integrity_daily", "30 1 * * *", True, "yesterday's partition of the fact tables (integrity_validation)"),
    ("dimension_integrity_daily", "45 1 * * *", True, "the dimension tables (dimension_integrity)"),
    ("index_integrity_weekly", "0 3 * * 6", True, "amcheck over every B-tree index (index_integrity)"),
    ("security_audit_daily", "15 5 * * *", False, "roles, grants, settings and pg_hba (security_audit)"),
    ("partition_maintenance_daily", "10 0 * * *", True, "partitions kept ahead, DEFAULT partitions watched, "
     "retention (partition_maintenance)"),
    ("materialized_views_hourly", "5 * * * *", True, "refreshes the materialized views (materialized_views)"),
    ("log_report_hourly", "20 * * * *", True, "pgBadger over the server log's new lines (log_report)"),
)


def _schedule_options() -> list[Option]:
    out = []
    for name, cron, on, what in SCHEDULES:
        out.append(_target(f"schedules.{name}.enabled", Flag(), on, f"run `{name}`: {what}",
                           example="off" if on else "on"))
        out.append(_target(f"schedules.{name}.cron", Cron(), cron, f"when `{name}` runs (UTC)", example=cron))
    return out


OPTIONS: tuple[Option, ...] = (
    # --- global: one per installation -----------------------------------------------------------------------------
    _global("config_file", PathKind("file"), Derived("`./dbops.yaml` when present, else none", _config_file),
            "the configuration file; when set it must exist", "DBOPS_CONFIG", "/etc/dbops/dbops.yaml",
            in_file=False, readme="database"),
    _global("project_dir", PathKind("dir"), Derived("the checkout holding `sql/` (the package's parent), else the "
                                                    "working directory", _project_dir),
            "the checkout holding `sql/` and `monitoring/`; the default folders below are in it",
            "DBOPS_PROJECT_DIR", "/srv/dbops"),
    _global("home", PathKind(), Derived("`./.dbops`", lambda c: c.cwd / ".dbops"),
            "state directory: the embedded cluster and its password file, Dagster home, catalog snapshots, local "
            "backups, staging", "DBOPS_HOME", "/var/lib/dbops", readme="database"),
    _global("default_target", Text(TARGET_NAME, "a target name"),
            Derived("`dbops` when there is such a target, else the file's first target", _default_target),
            "the target a command acts on when none is named", "DBOPS_TARGET", "shop", readme="database"),
    _global("log_level", Choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "WARNING",
            "level of the Dagster step events `dbops run` prints", "DBOPS_LOG_LEVEL", "INFO"),
    _global("pg_port", PORT, 55432, "loopback TCP port of the embedded server", "DBOPS_PG_PORT", "55432",
            readme="database"),
    _global("pg_bin", PathKind("dir"), None,
            "a PostgreSQL bin directory to use instead of the embedded build (e.g. `/usr/lib/postgresql/15/bin`)",
            "DBOPS_PG_BIN", "/usr/lib/postgresql/15/bin", readme="database"),
    _global("wal_archive", Flag(), True, "the embedded server archives WAL into `$DBOPS_HOME/wal-spool`",
            "DBOPS_WAL_ARCHIVE", "off", readme="database"),
    _global("pgbouncer", PathKind("exe"), None, "the pgbouncer program of load tests through a pooler (none: "
            "`pgbouncer` on PATH, else `/usr/sbin/pgbouncer`)", "DBOPS_PGBOUNCER", "/usr/sbin/pgbouncer"),
    _global("dagster.url_env", EnvRef(), Derived("database `dagster` on the default target's server", lambda c: None),
            "variable holding the URL of Dagster's instance storage (runs, events, schedules)",
            "DBOPS_DAGSTER_DATABASE_URL", "DAGSTER_DATABASE_URL", readme="database", nullable=True),
    _global("dagster.home", PathKind(), Derived("`$DBOPS_HOME/dagster`", lambda c: c["home"] / "dagster"),
            "Dagster's home (`dagster.yaml` is copied there)", "DAGSTER_HOME", "/var/lib/dbops/dagster"),
    # --- target: one per managed database -------------------------------------------------------------------------
    _target("url_env", EnvRef(), Derived("none: a database on the embedded server", lambda c: None),
            "variable holding the URL of an external database (`postgresql://user:password@host:port/db`); dbops "
            "never starts a server for it", "DBOPS_DATABASE_URL", "SHOP_DATABASE_URL", readme="database",
            exclusive="connection", nullable=True),
    _target("embedded", Flag(), Derived("on when `url_env` is not set", lambda c: c["url_env"] is None),
            "the database lives on dbops' embedded server (`$DBOPS_HOME/pgdata`)", example="on", readme="database",
            exclusive="connection"),
    _target("db_name", Text(IDENTIFIER, "a database name"),
            Derived("the target's name (`dbops` with no file)", lambda c: c.target),
            "name of the database on the embedded server", "DBOPS_DB_NAME", "shop", readme="database"),
    _target("production", Flag(), False, "a production database: load tests and scratch copies on its server are "
            "refused unless explicitly allowed", "DBOPS_PRODUCTION", "on"),
    _target("owners", TextList(Text(re.compile(r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+)$"),
                                     "an email address or team:<name>")), (),
            "who answers for the target: Dagster's owners of each of its assets (none: no owner shown)",
            "DBOPS_OWNERS", "team:dba"),
    _target("schemas", TextList(Text(IDENTIFIER, "a schema name")), (),
            "the target's schemas: what the catalog documents, integrity validates and the audit covers (none: every "
            "non-system schema)", example="public"),
    _target("migrations", PathKind("dir"), Derived("`sql/migrations`", lambda c: _project(c, "sql", "migrations")),
            "folder of versioned SQL migrations (Flyway layout)", "DBOPS_MIGRATIONS", "sql/migrations",
            readme="database"),
    _target("migrate.default_schema", Text(IDENTIFIER, "a schema name"),
            Derived("the first of `schemas`, else `public`", lambda c: c["schemas"][0] if c["schemas"] else "public"),
            "Flyway's defaultSchema: where the history table lives and what `${flyway:defaultSchema}` means",
            "DBOPS_MIGRATE_DEFAULT_SCHEMA", "lending"),
    _target("migrate.table", Text(IDENTIFIER, "a table name"), "flyway_schema_history",
            "the migration history table (Flyway's `table`)", "DBOPS_MIGRATE_TABLE", "flyway_schema_history"),
    _target("migrate.baseline_on_migrate", Flag(), False, "a non-empty schema without a history table is baselined "
            "at `baseline_version` on the first migrate (off: refused with \"baseline first\", as Flyway does)",
            "DBOPS_MIGRATE_BASELINE_ON_MIGRATE", "on"),
    _target("migrate.baseline_version", Text(re.compile(r"^[0-9]+([._][0-9]+)*$"), "a version such as 1 or 020"),
            "1", "the version a baseline stands for (Flyway's baselineVersion)", "DBOPS_MIGRATE_BASELINE_VERSION",
            "020"),
    _target("migrate.placeholder_replacement", Flag(), True, "replace `${...}` placeholders in migrations and "
            "callbacks, as Flyway does (off: the text runs as written)", "DBOPS_MIGRATE_PLACEHOLDER_REPLACEMENT",
            "off"),
    _target("migrate.placeholders", KeyValues(Text(re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$"), "a placeholder name")),
            (), "user placeholders: `${name}` in a migration is replaced by its value", "DBOPS_MIGRATE_PLACEHOLDERS",
            "reminder_channel=email"),
    _target("access_control", PathKind("file"),
            Derived("`sql/access-control.yml` for a target of the reference schema (its migrations are "
                    "`sql/migrations`), else none: the first audit records the grants as the baseline",
                    lambda c: _project(c, "sql", "access-control.yml") if _reference(c) else None),
            "access-control matrix: roles, grants and the sensitive columns masked in sample rows",
            "DBOPS_ACCESS_CONTROL", "sql/access-control.yml", nullable=True),
    _target("targets_file", PathKind("file"),
            Derived("`monitoring/targets.yml`", lambda c: _project(c, "monitoring", "targets.yml")),
            "metric targets file: the thresholds that say what healthy means", "DBOPS_TARGETS",
            "monitoring/targets.yml"),
    _target("wal_spool", PathKind(), Derived("`$DBOPS_HOME/wal-spool` for the default target on the embedded "
                                             "server when `wal_archive` is on (the server's WAL is archived once), "
                                             "else none", _spool),
            "spool the server's `archive_command` copies WAL into, moved into the store by `dbops wal push`",
            "DBOPS_WAL_SPOOL", "/var/spool/dbops-wal", readme="database", nullable=True),
    _target("seed.scale", Number(), 1.0, "size of the reference data set `dbops seed` and the demo load "
            "(1 is about 100,000 orders)", example="0.1"),
    _target("loadtest.workloads", PathKind("dir"),
            Derived("`sql/workloads`", lambda c: _project(c, "sql", "workloads")),
            "folder of the pgbench workload scripts", example="sql/workloads"),
    _target("loadtest.replay_statements", Integer(1), 20, "the `replay` profile: how many of the target's top read "
            "statements (pg_stat_statements) it replays", example="50"),
    _target("profile.exclude_roles", TextList(Text(IDENTIFIER, "a role name")),
            Derived("on the embedded server `" + ",".join(EMBEDDED_TOOL_ROLES) + "` (dbops' own tooling), else none",
                    lambda c: EMBEDDED_TOOL_ROLES if c["embedded"] else ()),
            "roles whose statements the query profile leaves out as maintenance (comma-separated in the "
            "environment)", "DBOPS_PROFILE_EXCLUDE_ROLES", "postgres,backup_agent", nullable=True),
    _target("profile.review_dir", PathKind(), Derived("`review/migrations`", lambda c: _project(c, "review",
                                                                                                 "migrations")),
            "where `dbops advise` writes the migrations of verified index advice, for review", "DBOPS_REVIEW_DIR",
            "review/migrations"),
    _target("profile.scratch_url_env", EnvRef(), None, "variable holding the URL of a restored copy that index advice "
            "is verified on (none: a clone of the target)", "DBOPS_SCRATCH_URL", "SHOP_SCRATCH_URL"),
    _target("partitions.tables", TextList(Text(QUALIFIED, "a table name (schema.table)")), (),
            "range-partitioned tables kept ahead (none: every range-partitioned table of the target's schemas whose "
            "key is a date or timestamp)", "DBOPS_PARTITIONS_TABLES", "app.orders"),
    _target("partitions.ahead_daily", Integer(1), 14, "daily partitions kept ahead of today",
            "DBOPS_PARTITIONS_AHEAD_DAILY", "14"),
    _target("partitions.ahead_monthly", Integer(1), 3, "monthly partitions kept ahead of this month",
            "DBOPS_PARTITIONS_AHEAD_MONTHLY", "3"),
    _target("partitions.lock_timeout_s", Number(), 2.0, "lock timeout of each partition DDL statement (a busy table "
            "is retried on the next run, never waited on)", "DBOPS_PARTITIONS_LOCK_TIMEOUT_S", "2"),
    _target("partitions.retention_days", Integer(1), None, "retention: partitions wholly older than this many days "
            "are detached, only when a verified backup newer than them exists (none: kept)",
            "DBOPS_PARTITIONS_RETENTION_DAYS", "400"),
    _target("partitions.drop_detached", Flag(), False, "retention drops the partitions it detached (off: detached "
            "tables are kept for the operator)", "DBOPS_PARTITIONS_DROP_DETACHED", "on"),
    _target("matviews.views", TextList(Text(QUALIFIED, "a materialized view (schema.view)")), (),
            "materialized views refreshed (none: every materialized view of the target's schemas)",
            "DBOPS_MATVIEWS", "app.daily_sales"),
    _target("matviews.max_age_hours", Number(), 2.0, "a materialized view refreshed longer ago than this is stale",
            "DBOPS_MATVIEWS_MAX_AGE_HOURS", "2"),
    _target("logs.path", PathKind("file"), None, "the server log pgBadger reads (none: the embedded server's log, else "
            "the file the server names when its logging_collector is on)", "DBOPS_LOGS_PATH",
            "/var/log/postgresql/postgresql-16-main.log"),
    _target("logs.line_prefix", Text(), None, "the server's `log_line_prefix` (none: read from the server)",
            "DBOPS_LOGS_LINE_PREFIX", "%m [%p] %q%u@%d "),
    _target("logs.format", Choice("stderr", "csv", "jsonlog", "syslog", "syslog2"), None, "the log's format (none: "
            "from the file's suffix or the server's log_destination)", "DBOPS_LOGS_FORMAT", "stderr"),
    _target("logs.top", Integer(1), 10, "slowest statements kept from each log report", "DBOPS_LOGS_TOP", "10"),
    _target("logs.max_errors", Integer(0, what="integer >= 0"), None, "ERROR lines in one report's new lines before "
            "`log_errors_under_target` fails (none: not limited)", "DBOPS_LOGS_MAX_ERRORS", "100"),
    _target("logs.max_fatal", Integer(0, what="integer >= 0"), 0, "FATAL and PANIC lines in one report's new lines "
            "before the check fails",
            "DBOPS_LOGS_MAX_FATAL", "0"),
    _target("logs.retention_weeks", Integer(0, what="integer >= 0"), 8, "weeks of pgBadger reports kept (0: all)",
            "DBOPS_LOGS_RETENTION_WEEKS", "8"),
    _target("logs.anonymize", Flag(), True, "literals masked in the HTML report", "DBOPS_LOGS_ANONYMIZE", "off"),
    _target("validation.expectations", PathKind("dir"),
            Derived("`sql/expectations` for a target of the reference schema, else none (the rules come from the "
                    "database's own constraints)",
                    lambda c: _project(c, "sql", "expectations") if _reference(c) else None),
            "folder of extra integrity rule files (`<table>.yml`), checked beside the rules derived from the "
            "database's constraints", "DBOPS_EXPECTATIONS", "sql/expectations", nullable=True),
    _target("validation.time_columns", KeyValues(Text(QUALIFIED, "a table name (schema.table)"),
                                                 Text(IDENTIFIER, "a column name")),
            (), "tables validated in daily slices by a time column (`schema.table: column`); a range-partitioned "
            "table uses its partition key unless listed", "DBOPS_VALIDATION_TIME_COLUMNS", "app.orders=created_at"),
    _target("validation.start_date", IsoDate(), None, "first daily partition of `integrity_validation` (none: the "
            "day of the oldest row of the time-partitioned tables, else `backfill_days` before today)",
            "DBOPS_VALIDATION_START_DATE", "2025-01-01"),
    _target("validation.backfill_days", Integer(1), 30, "days re-validated after a migration applies something",
            "DBOPS_VALIDATION_BACKFILL_DAYS", "30"),
    _target("rehearsal.enabled", Flag(), True, "production `schema_migrations` waits for the migration rehearsal on "
            "a restored copy", "DBOPS_REHEARSAL", "off"),
    _target("rehearsal.large_table_mb", Number(), 10.0, "a table is large from this size (heap, indexes, TOAST)",
            "DBOPS_REHEARSAL_LARGE_TABLE_MB", "10"),
    _target("rehearsal.max_lock_seconds", Number(), 1.0, "longest ACCESS EXCLUSIVE lock a migration may hold on a "
            "large table", "DBOPS_REHEARSAL_MAX_LOCK_SECONDS", "1"),
    _target("rehearsal.sample_ms", Number(), 10.0, "how often the rehearsal samples the locks it waits on",
            "DBOPS_REHEARSAL_SAMPLE_MS", "10"),
    _target("rehearsal.replay_statements", Integer(0, 10000, "integer 0-10000"), 200, "production's top statements "
            "(pg_stat_statements, by calls and by total time) planned on the copy before and after the migration "
            "(0: no query replay)", "DBOPS_REHEARSAL_REPLAY_STATEMENTS", "200"),
    _target("rehearsal.plan_regression_factor", Number(), 2.0, "a replayed statement whose estimated cost grows more "
            "than this many times is a plan regression (a warning)", "DBOPS_REHEARSAL_PLAN_REGRESSION_FACTOR", "2"),
    _target("rehearsal.server_url_env", EnvRef(), None, "variable holding the URL of the server scratch copies are "
            "restored on (none: the target's own server)", "DBOPS_REHEARSAL_SERVER_URL", "SHOP_REHEARSAL_URL"),
    _target("backup.store", Choice("local", "s3"), "local", "where backups are stored", "DBOPS_BACKUP_STORE", "s3",
            readme="backup"),
    _target("backup.directory", PathKind(),
            Derived("`$DBOPS_HOME/backups`; with `targets:` in the file `$DBOPS_HOME/backups/<target>`",
                    _backup_dir),
            "folder of the local store", "DBOPS_BACKUP_DIR", "/var/backups/dbops", readme="backup"),
    _target("backup.s3.bucket", Text(), None, "S3 bucket (needed with `store: s3`)", "DBOPS_BACKUP_BUCKET",
            "dbops-backups", readme="backup"),
    _target("backup.s3.prefix", Text(empty=""),
            Derived("none; with `targets:` in the file the target's name",
                    lambda c: c.target if c.named_targets else ""),
            "key prefix in the bucket; a manifest verifies only under the prefix it was written to",
            "DBOPS_BACKUP_PREFIX", "shop", readme="backup", nullable=True),
    _target("backup.s3.endpoint", Text(re.compile(r"^https?://[^\s/@]+(/\S*)?$"), "an http(s) URL without user"),
            None, "S3 endpoint URL (none: AWS)", "DBOPS_BACKUP_S3_ENDPOINT", "http://127.0.0.1:8333",
            readme="backup"),
    _target("backup.s3.region", Text(), None, "S3 region (none: us-east-1)", "DBOPS_BACKUP_S3_REGION", "eu-west-1",
            readme="backup"),
    _target("backup.s3.sse", Choice("AES256", "aws:kms", "aws:kms:dsse"), None,
            "S3 server-side encryption, on top of dbops' own", "DBOPS_BACKUP_S3_SSE", "AES256", readme="backup"),
    _target("backup.s3.access_key_id_env", EnvRef(), None,
            "variable holding the S3 access key id (none: `AWS_ACCESS_KEY_ID` and the usual AWS chain)",
            example="SHOP_S3_ACCESS_KEY_ID", readme="backup"),
    _target("backup.s3.secret_access_key_env", EnvRef(), None,
            "variable holding the S3 secret access key (none: `AWS_SECRET_ACCESS_KEY` and the usual AWS chain)",
            example="SHOP_S3_SECRET_ACCESS_KEY", readme="backup"),
    _target("backup.key_env", EnvRef(), None, "variable holding the master key (32 bytes, base64; `dbops backup "
            "keygen` makes one)", "DBOPS_BACKUP_KEY", "SHOP_BACKUP_KEY", readme="backup", exclusive="key"),
    _target("backup.key_file", PathKind("file"),
            Derived("on the embedded server `$DBOPS_HOME/secrets/backup.key`, generated on first use; else none",
                    _key_file),
            "file holding the master key (mode 0600)", "DBOPS_BACKUP_KEY_FILE", "/etc/dbops/backup.key",
            readme="backup", exclusive="key", nullable=True),
    _target("backup.keep_last", Integer(1), 7, "retention: the newest N logical backups and full chains are kept",
            "DBOPS_BACKUP_KEEP_LAST", "7", readme="backup"),
    _target("backup.keep_days", Number(), None, "retention: everything younger than this many days is kept",
            "DBOPS_BACKUP_KEEP_DAYS", "14", readme="backup"),
    _target("health.pooler_url_env", EnvRef(), None, "variable holding the URL of the admin console of the target's "
            "PgBouncer (`postgresql://user@host:6432/pgbouncer`): its clients waiting and longest wait are health "
            "figures (none: no pooler figures)", "DBOPS_HEALTH_POOLER_URL", "SHOP_PGBOUNCER_ADMIN_URL"),
    _target("health.long_query_seconds", Number(), 60.0, "a statement running longer than this counts in the "
            "`long_running_queries` health figure", "DBOPS_HEALTH_LONG_QUERY_SECONDS", "60"),
    _target("alerts.slack_webhook_env", EnvRef(), None, "variable holding a Slack (or Mattermost, Rocket.Chat) "
            "incoming webhook URL", "DBOPS_ALERT_SLACK_WEBHOOK", "SHOP_SLACK_WEBHOOK"),
    _target("alerts.webhook_url_env", EnvRef(), None, "variable holding an HTTP endpoint the alert is POSTed to as "
            "JSON", "DBOPS_ALERT_WEBHOOK_URL", "SHOP_ALERT_WEBHOOK"),
    _target("alerts.log_file", PathKind(), Derived("`$DBOPS_HOME/alerts.log`", lambda c: c["home"] / "alerts.log"),
            "JSON-lines file every alert is appended to", "DBOPS_ALERT_LOG_FILE", "/var/log/dbops/alerts.log"),
    _target("alerts.smtp.host", Text(), None, "SMTP server of email alerts (none: no email)", "DBOPS_ALERT_SMTP_HOST",
            "smtp.example.com"),
    _target("alerts.smtp.port", PORT, 25, "SMTP port", "DBOPS_ALERT_SMTP_PORT", "587"),
    _target("alerts.smtp.sender", Text(re.compile(r"^[^@\s]+@[^@\s]+$"), "an email address"), None,
            "From address (needed with `smtp.host`)", "DBOPS_ALERT_SMTP_FROM", "dbops@example.com"),
    _target("alerts.smtp.recipients", TextList(Text(re.compile(r"^[^@\s]+@[^@\s]+$"), "an email address")), (),
            "To addresses (comma-separated in the environment; needed with `smtp.host`)", "DBOPS_ALERT_SMTP_TO",
            "oncall@example.com"),
    _target("alerts.smtp.user", Text(), None, "SMTP login user (none: no login)", "DBOPS_ALERT_SMTP_USER", "dbops"),
    _target("alerts.smtp.password_env", EnvRef(), None, "variable holding the SMTP password",
            "DBOPS_ALERT_SMTP_PASSWORD", "SHOP_SMTP_PASSWORD"),
    _target("alerts.smtp.starttls", Flag(), True, "STARTTLS before the login", "DBOPS_ALERT_SMTP_STARTTLS", "off"),
    _target("alerts.runbook_base", Text(), Derived("the checkout's `docs/runbooks` folder",
                                                   lambda c: str(_project(c, "docs", "runbooks"))),
            "where each alert's runbook `<Alert>.md` is: a folder or a URL (every alert links its runbook)",
            "DBOPS_ALERT_RUNBOOK_BASE", "https://git.example.com/dba/dbops/-/blob/main/docs/runbooks"),
    _target("alerts.failures", Flag(), True, "failed runs, failed materializations and failed asset checks of the "
            "target notify the sinks too (deduplicated, resolved by the next success)", "DBOPS_ALERT_FAILURES", "off"),
    *_schedule_options(),
)

BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}
BY_ENV: dict[str, Option] = {o.env: o for o in OPTIONS if o.env}


def options(scope: Scope) -> list[Option]:
    return [o for o in OPTIONS if o.scope == scope]

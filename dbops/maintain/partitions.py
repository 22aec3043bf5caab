"""Range partitions kept ahead, rows in DEFAULT partitions found and moved, old partitions retired behind a backup.

Plain Python, no Dagster (the asset is dbops/components/maintain/partitions.py). See docs/partitions.md.

A table is maintained when it is RANGE partitioned on one column of type date, timestamp or timestamptz (found in the
target's schemas, or listed in ``partitions.tables``) and its newest partitions say its period: each one day
(daily) or one calendar month starting on the 1st (monthly), at midnight in the database's TimeZone (else UTC).
Anything else is reported as not maintained, with the reason.

Every statement runs under ``lock_timeout`` (``partitions.lock_timeout_s``): a busy table is skipped with the reason
and retried on the next run, never waited on. New partitions are created as the parent's owner (``SET LOCAL ROLE``;
a connection that may not act as the owner is told so) and get the grants of the newest existing partition.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from dbops.backup.keys import BackupIntegrityError
from dbops.backup.manifest import KeySource, read_store, verify_objects
from dbops.backup.store import Store, StoreError
from dbops.errors import ConfigError, DbopsError
from dbops.settings.model import PartitionSettings
from dbops.validate.catalog import resolve_schemas

KEY_TYPES = {"date": "date", "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz"}
# Backups whose data restores this database's partitions: a logical dump of it, or a physical full base backup.
COVERING_KINDS = ("logical", "full")

TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, pg_get_userbyid(c.relowner), pt.partstrat, pt.partnatts,
       a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_partitioned_table pt
JOIN pg_class c ON c.oid = pt.partrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
WHERE NOT c.relispartition AND (n.nspname = ANY(%s) OR format('%%s.%%s', n.nspname, c.relname) = ANY(%s))
ORDER BY 2, 3
"""

PARTITIONS_SQL = """
SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = %s
"""

_BOUND = re.compile(r"^FOR VALUES FROM \((.+)\) TO \((.+)\)$")
_DATE_FORMATS = {"daily": ("%Y%m%d", "%Y_%m_%d", "%Y-%m-%d"),
                 "monthly": ("%Y_%m", "%Y%m", "%Y-%m", "%Y_%m_%d", "%Y%m%d")}
RECENT = 3  # the newest partitions that decide a table's period and naming style


class PartitionError(DbopsError):
    """A partition operation that could not be done (nothing was changed)."""


# ---- what a table looks like ---------------------------------------------------------------------------------------

@dataclass
class Partition:
    schema: str
    name: str
    lower: date | None  # None: MINVALUE (or a DEFAULT partition)
    upper: date | None  # None: MAXVALUE
    default: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class TableState:
    """One range-partitioned table: what it is, and what a run did to it."""

    schema: str
    name: str
    oid: int = 0
    owner: str = ""
    key: str = ""
    key_type: str = ""  # date | timestamp | timestamptz
    period: str | None = None  # daily | monthly; None: not maintained (see reason)
    reason: str | None = None  # why the table is not maintained
    timezone: str = "UTC"  # the zone its bounds are midnights of
    style: str = ""  # name template, "{}" standing for the date
    date_format: str = "%Y%m%d"
    partitions: list[Partition] = field(default_factory=list)
    default_rows: int | None = None  # None: no DEFAULT partition (or it could not be read: see skipped)
    default_range: str = ""  # min .. max of the key in the DEFAULT partition
    ahead: int = 0  # periods after the current one covered without a gap
    wanted: int = 0
    created: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # a lock timeout, a period the DEFAULT holds rows of...

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def maintained(self) -> bool:
        return self.period is not None

    @property
    def default(self) -> Partition | None:
        return next((p for p in self.partitions if p.default), None)

    @property
    def regular(self) -> list[Partition]:
        return sorted((p for p in self.partitions if not p.default),
                      key=lambda p: (p.lower is not None, p.lower or date.min))

    def today(self) -> date:
        return datetime.now(ZoneInfo(self.timezone)).date()

    def current(self) -> date:
        return current_period(self.period or "daily", self.today())

    def last_bound(self) -> date | None:
        """The upper bound of the partitions covering the current period and the ones after it without a gap."""
        start, last = self.current(), None
        while covered(self, start, step(self.period or "daily", start)):
            last = start = step(self.period or "daily", start)
        return last

    def summary(self) -> dict[str, Any]:
        return {"table": self.qualified, "period": self.period, "reason": self.reason, "ahead": self.ahead,
                "wanted": self.wanted, "last_bound": str(self.last_bound() or "") if self.period else "",
                "default_rows": self.default_rows, "default_range": self.default_range, "created": self.created,
                "detached": self.detached, "dropped": self.dropped, "skipped": self.skipped}


@dataclass
class Report:
    tables: list[TableState]
    retention: str = ""  # what retention did or why it did nothing
    retention_refused: bool = False  # partitions were due but no verified backup covers them
    backup_id: str | None = None  # the backup that covered the detached partitions
    seconds: float = 0.0

    @property
    def maintained(self) -> list[TableState]:
        return [t for t in self.tables if t.maintained]

    @property
    def created(self) -> list[str]:
        return [p for t in self.tables for p in t.created]

    @property
    def detached(self) -> list[str]:
        return [p for t in self.tables for p in t.detached]

    def behind(self) -> list[TableState]:
        return [t for t in self.maintained if t.ahead < t.wanted]

    def defaults_with_rows(self) -> list[TableState]:
        return [t for t in self.tables if t.default_rows]

    def with_default(self) -> list[TableState]:
        return [t for t in self.tables if t.default is not None]

    def render(self) -> str:
        if not self.tables:
            return "nothing checked: no range-partitioned table"
        lines = []
        for t in self.tables:
            if not t.maintained:
                lines.append(f"{t.qualified}: not maintained: {t.reason}")
                continue
            default = "no DEFAULT partition" if t.default is None else (
                f"DEFAULT {t.default.qualified}: {t.default_rows if t.default_rows is not None else '?'} rows"
                + (f" ({t.default_range})" if t.default_rows else ""))
            lines.append(f"{t.qualified}: {t.period}, {t.ahead}/{t.wanted} ahead (up to {t.last_bound()}), "
                         f"{len(t.regular)} partitions, {default}")
            lines += [f"  created {p}" for p in t.created]
            lines += [f"  detached {p}" for p in t.detached]
            lines += [f"  dropped {p}" for p in t.dropped]
            lines += [f"  skipped: {s}" for s in t.skipped]
        if self.retention:
            lines.append(f"retention: {self.retention}")
        return "\n".join(lines)


# ---- periods -------------------------------------------------------------------------------------------------------

def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def step(period: str, start: date, count: int = 1) -> date:
    return add_months(start, count) if period == "monthly" else start + timedelta(days=count)


def current_period(period: str, today: date) -> date:
    return today.replace(day=1) if period == "monthly" else today


def covered(table: TableState, start: date, end: date) -> bool:
    return any((p.lower is None or p.lower <= start) and (p.upper is None or p.upper >= end) for p in table.regular)


def _span(p: Partition) -> str | None:
    if p.lower is None or p.upper is None:
        return None
    if p.upper == p.lower + timedelta(days=1):
        return "daily"
    if p.lower.day == 1 and p.upper == add_months(p.lower, 1):
        return "monthly"
    return None


# ---- reading the catalog -------------------------------------------------------------------------------------------

def _parse_bound(text: str, key_type: str, zone: ZoneInfo) -> date | None | bool:
    """A bound as a calendar day in ``zone``; None for MINVALUE/MAXVALUE; False when it is not a midnight."""
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    if not (text.startswith("'") and text.endswith("'")):
        return False
    value = text[1:-1]
    try:
        if key_type == "date":
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        return False
    if key_type == "timestamptz":
        moment = moment.astimezone(zone)
    if (moment.hour, moment.minute, moment.second, moment.microsecond) != (0, 0, 0, 0):
        return False
    return moment.date()


def _read_partitions(conn: psycopg.Connection[Any], table: TableState, zones: list[str]) -> None:
    rows = conn.execute(PARTITIONS_SQL, (table.oid,)).fetchall()
    reason = "no partition"
    for zone_name in zones:
        zone = ZoneInfo(zone_name)
        parts, bad = [], None
        for schema, name, bound in rows:
            if bound == "DEFAULT":
                parts.append(Partition(schema, name, None, None, default=True))
                continue
            match = _BOUND.match(bound or "")
            lower = _parse_bound(match.group(1), table.key_type, zone) if match else False
            upper = _parse_bound(match.group(2), table.key_type, zone) if match else False
            if lower is False or upper is False:
                bad = f"{schema}.{name} ({bound}) is not bounded by midnights in {zone_name}"
                continue
            parts.append(Partition(schema, name, lower, upper))  # type: ignore[arg-type]
        if bad is None:
            table.partitions, table.timezone = parts, zone_name
            _learn_period(table)
            return
        reason = bad
    table.partitions, table.reason = [], reason


def _learn_period(table: TableState) -> None:
    recent = [p for p in table.regular if p.lower is not None and p.upper is not None][-RECENT:]
    if not recent:
        table.reason = "no partition with bounds to learn its period from"
        return
    spans = {_span(p) for p in recent}
    if len(spans) != 1 or None in spans:
        shown = ", ".join(f"{p.name} [{p.lower}, {p.upper})" for p in recent)
        table.reason = f"its newest partitions are neither all daily nor all monthly ({shown})"
        return
    table.period = spans.pop()
    for fmt in _DATE_FORMATS[table.period]:  # type: ignore[index]
        styles = set()
        for p in recent:
            text = p.lower.strftime(fmt)  # type: ignore[union-attr]
            styles.add(p.name.replace(text, "{}") if p.name.count(text) == 1 else None)
        if len(styles) == 1 and None not in styles:
            table.style, table.date_format = styles.pop(), fmt
            return
    table.style, table.date_format = table.name + "_p{}", "%Y%m%d"


def read_tables(conn: psycopg.Connection[Any], schemas: tuple[str, ...] | list[str],
                settings: PartitionSettings) -> list[TableState]:
    """Every range-partitioned table with a date/timestamp key of ``schemas`` (none: every user schema) and every
    table listed in ``settings.tables``, with its partitions, period and naming style."""
    listed = list(settings.tables)
    found = conn.execute(TABLES_SQL, (resolve_schemas(conn, schemas) if not listed else [], listed)).fetchall()
    session_zone = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]  # type: ignore[index]
    zones = [session_zone] + (["UTC"] if session_zone not in ("UTC", "Etc/UTC") else [])
    try:
        ZoneInfo(session_zone)
    except (KeyError, ValueError):
        zones = ["UTC"]
    tables: list[TableState] = []
    for oid, schema, name, owner, strategy, nkeys, key, key_type in found:
        table = TableState(schema, name, oid, owner, key or "", KEY_TYPES.get(key_type or "", ""))
        explicit = table.qualified in listed
        if strategy != "r" or nkeys != 1 or not key:
            if explicit:
                table.reason = "not partitioned by RANGE on one column"
                tables.append(table)
            continue
        if not table.key_type:
            if explicit:
                table.reason = f"its partition key {key} is {key_type}, not a date or timestamp"
                tables.append(table)
            continue
        _read_partitions(conn, table, zones)
        tables.append(table)
    known = {t.qualified for t in tables}
    tables += [TableState(*q.split(".", 1), reason="no such partitioned table") for q in listed if q not in known]
    for table in tables:
        table.wanted = (settings.ahead_monthly if table.period == "monthly" else settings.ahead_daily)
        table.ahead = _ahead(table) if table.maintained else 0
    return tables


def _ahead(table: TableState) -> int:
    start, count = table.current(), 0
    if not covered(table, start, step(table.period, start)):  # type: ignore[arg-type]
        return 0
    while count < 100_000:
        start = step(table.period, start)  # type: ignore[arg-type]
        if not covered(table, start, step(table.period, start)):  # type: ignore[arg-type]
            break
        count += 1
    return count


def _literal(table: TableState, day: date) -> sql.Composable:
    return sql.Literal(day.isoformat() if table.key_type == "date" else f"{day.isoformat()} 00:00:00")


def _ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def _read_default(conn: psycopg.Connection[Any], table: TableState) -> None:
    default = table.default
    if default is None:
        table.default_rows = None
        return
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL TimeZone = {}").format(sql.Literal(table.timezone)))
        count, low, high = conn.execute(sql.SQL("SELECT count(*), min({k})::text, max({k})::text FROM {t}").format(
            k=sql.Identifier(table.key), t=_ident(default.schema, default.name))).fetchone()  # type: ignore[misc]
    table.default_rows = count
    table.default_range = f"{table.key} from {low} to {high}" if count else ""


# ---- creating partitions -------------------------------------------------------------------------------------------

def _grants(conn: psycopg.Connection[Any], oid_of: sql.Composable) -> set[tuple[str, str]]:
    rows = conn.execute(sql.SQL(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type "
        "FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a "
        "WHERE c.oid = {}::regclass AND a.grantee <> c.relowner").format(oid_of)).fetchall()
    return {(r[0], r[1]) for r in rows}


def _copy_grants(conn: psycopg.Connection[Any], template: Partition, new: sql.Identifier, new_name: str) -> None:
    """Make the new partition's grants those of ``template`` (what default privileges gave it aside)."""
    want = _grants(conn, sql.Literal(template.qualified))
    have = _grants(conn, sql.Literal(new_name))
    for grantee, privilege in sorted(want - have):
        who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
        conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privilege), new, who))
    for grantee, privilege in sorted(have - want):
        who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
        conn.execute(sql.SQL("REVOKE {} ON {} FROM {}").format(sql.SQL(privilege), new, who))


def _as_owner(conn: psycopg.Connection[Any], table: TableState) -> None:
    """``SET LOCAL ROLE`` the table's owner (nothing when the connection is the owner already)."""
    if conn.execute("SELECT current_user").fetchone()[0] == table.owner:  # type: ignore[index]
        return
    try:
        with conn.transaction():  # a savepoint: a refused SET ROLE leaves the transaction usable
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(table.owner)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PartitionError(f"{table.qualified} belongs to {table.owner} and this connection may not act as it",
                             f"GRANT {table.owner} TO the role dbops connects as, so new partitions belong to the "
                             "parent's owner") from exc


def partition_name(table: TableState, start: date) -> str:
    name = table.style.replace("{}", start.strftime(table.date_format))
    if len(name.encode()) > 63:
        raise PartitionError(f"the partition name {name} is longer than 63 bytes",
                             f"rename {table.qualified}'s partitions in a shorter style")
    return name


def create_partition(conn: psycopg.Connection[Any], table: TableState, start: date) -> str:
    """Create the partition of the period starting ``start``, as the owner, with the newest partition's grants;
    inside the caller's transaction. Returns its qualified name."""
    end = step(table.period, start)  # type: ignore[arg-type]
    name = partition_name(table, start)
    template = table.regular[-1] if table.regular else None
    _as_owner(conn, table)
    conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
        _ident(table.schema, name), _ident(table.schema, table.name), _literal(table, start), _literal(table, end)))
    if template is not None:
        _copy_grants(conn, template, _ident(table.schema, name), f"{table.schema}.{name}")
    conn.execute("SET LOCAL ROLE NONE")
    table.partitions.append(Partition(table.schema, name, start, end))
    return f"{table.schema}.{name}"


def _begin(conn: psycopg.Connection[Any], table: TableState, lock_timeout_s: float) -> None:
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{max(1, int(lock_timeout_s * 1000))}ms")))
    conn.execute(sql.SQL("SET LOCAL TimeZone = {}").format(sql.Literal(table.timezone)))


def _default_rows_in(conn: psycopg.Connection[Any], table: TableState, start: date, end: date) -> int:
    default = table.default
    if default is None:
        return 0
    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {k} >= {} AND {k} < {}").format(
        _ident(default.schema, default.name), _literal(table, start), _literal(table, end),
        k=sql.Identifier(table.key))).fetchone()[0]  # type: ignore[index]


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _busy(table: TableState, lock_timeout_s: float, what: str) -> str:
    return (f"lock timeout ({lock_timeout_s:g} s) {what}: {table.qualified} is busy; "
            "retried on the next run")


def keep_ahead(conn: psycopg.Connection[Any], table: TableState, lock_timeout_s: float) -> None:
    """Create the missing partitions of the current period and the ``wanted`` ones after it, one transaction each."""
    start = table.current()
    for _ in range(table.wanted + 1):
        end = step(table.period, start)  # type: ignore[arg-type]
        if not covered(table, start, end):
            try:
                with conn.transaction():
                    _begin(conn, table, lock_timeout_s)
                    rows = _default_rows_in(conn, table, start, end)
                    if rows:
                        table.skipped.append(
                            f"[{start}, {end}): the DEFAULT partition {table.default.qualified} holds {rows} rows "  # type: ignore[union-attr]
                            f"of it — run `dbops partitions move-default --table {table.qualified}`")
                    else:
                        table.created.append(create_partition(conn, table, start))
            except psycopg.errors.LockNotAvailable:
                table.skipped.append(_busy(table, lock_timeout_s, f"creating the partition for {start}"))
                return
            except PartitionError as exc:
                table.skipped.append(str(exc))
                return
            except psycopg.Error as exc:
                table.skipped.append(f"creating the partition for [{start}, {end}) failed: {_first_line(exc)}")
                return
        start = end


# ---- retention -----------------------------------------------------------------------------------------------------

def covering_backup(store: Store, key: KeySource, newer_than: datetime, database: str,
                    drilled: Collection[str] | None = None) -> tuple[dict[str, Any] | None, str]:
    """The newest backup that proves the data up to ``newer_than`` can be brought back, or None and why.

    It counts when its manifest verifies (signature, key, folder: :func:`read_store`), it is a logical backup of
    ``database`` or a physical full base backup, it started after ``newer_than``, every one of its objects is re-read
    and matches its size and sha256 (:func:`verify_objects`, as ``dbops backup verify`` does), and, when ``drilled``
    is given (the ids of the backups a restore drill passed on: dbops records drills in the Dagster instance, see
    dbops.components.maintain.partitions.drilled_backups), it is one of them; a drilled physical chain's tip (an
    incremental) counts too."""
    try:
        listing = read_store(store, key)
    except (StoreError, ConfigError, BackupIntegrityError) as exc:
        return None, f"the backup store {store.describe()} cannot be read: {exc}"
    kinds = COVERING_KINDS + (("incremental",) if drilled is not None else ())
    candidates = [m for m in listing.backups if m.get("kind") in kinds
                  and (m.get("kind") != "logical" or m.get("database") == database)
                  and datetime.fromisoformat(str(m.get("started_at") or m.get("finished_at"))) >= newer_than]
    if not candidates:
        ignored = f" ({len(listing.ignored)} ignored: {listing.ignored[0]})" if listing.ignored else ""
        return None, (f"no verified backup in {store.describe()} started after {newer_than.isoformat()}{ignored}: "
                      "take one (dbops backup run) first")
    if drilled is not None:
        undrilled = [m["id"] for m in candidates]
        candidates = [m for m in candidates if m["id"] in drilled]
        if not candidates:
            return None, (f"no restore drill passed on a backup newer than {newer_than.isoformat()} "
                          f"({', '.join(undrilled[-3:])} not drilled): materialize restore_drill (dbops drill)")
    problems = []
    for manifest in reversed(candidates):
        try:
            verify_objects(store, manifest)
        except (BackupIntegrityError, StoreError) as exc:
            problems.append(f"{manifest['id']}: {exc}")
            continue
        drill = ", restore drill passed" if drilled is not None else ""
        return manifest, f"covered by backup {manifest['id']} (objects re-verified{drill})"
    return None, "no backup newer than the partitions verifies: " + "; ".join(problems[:3])


def retire(conn: psycopg.Connection[Any], tables: list[TableState], settings: PartitionSettings,
           backups: Callable[[datetime], tuple[dict[str, Any] | None, str]] | None) -> tuple[str, bool, str | None]:
    """Detach (and drop, with ``drop_detached``) the partitions wholly older than ``retention_days``, only when
    ``backups(newest upper bound)`` names a verified backup newer than all of them. Returns (what happened, whether
    retention was refused, the covering backup's id)."""
    if settings.retention_days is None:
        return "off (partitions.retention_days unset): partitions are kept", False, None
    due: list[tuple[TableState, Partition, datetime]] = []
    for table in tables:
        if not table.maintained:
            continue
        cutoff = table.today() - timedelta(days=settings.retention_days)
        for p in table.regular:
            if p.upper is not None and p.upper <= cutoff:
                upper = datetime.combine(p.upper, datetime.min.time(), ZoneInfo(table.timezone)).astimezone(UTC)
                due.append((table, p, upper))
    if not due:
        return f"no partition is wholly older than {settings.retention_days} days", False, None
    newest = max(u for _, _, u in due)
    manifest, why = backups(newest) if backups is not None else (None, "no backup store to check")
    if manifest is None:
        return f"{len(due)} partition(s) older than {settings.retention_days} days kept: {why}", True, None
    for table, p, _ in due:
        try:
            with conn.transaction():
                _begin(conn, table, settings.lock_timeout_s)
                _as_owner(conn, table)
                conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                    _ident(table.schema, table.name), _ident(p.schema, p.name)))
                if settings.drop_detached:
                    conn.execute(sql.SQL("DROP TABLE {}").format(_ident(p.schema, p.name)))
        except psycopg.errors.LockNotAvailable:
            table.skipped.append(_busy(table, settings.lock_timeout_s, f"detaching {p.qualified}"))
            continue
        except PartitionError as exc:
            table.skipped.append(str(exc))
            continue
        except psycopg.Error as exc:
            table.skipped.append(f"detaching {p.qualified} failed: {_first_line(exc)}")
            continue
        table.partitions.remove(p)
        table.detached.append(p.qualified)
        if settings.drop_detached:
            table.dropped.append(p.qualified)
    done = sum(len(t.detached) for t in tables)
    return (f"{done} of {len(due)} partition(s) older than {settings.retention_days} days "
            f"{'detached and dropped' if settings.drop_detached else 'detached'}; {why}"), False, manifest["id"]


# ---- the run -------------------------------------------------------------------------------------------------------

def status(conn: psycopg.Connection[Any], schemas: tuple[str, ...] | list[str], settings: PartitionSettings,
           ) -> Report:
    """The tables, their coverage and their DEFAULT partitions' rows; changes nothing."""
    started = time.monotonic()
    tables = read_tables(conn, schemas, settings)
    for table in tables:
        if table.maintained:
            _read_default_safely(conn, table, settings.lock_timeout_s)
    return Report(tables, seconds=round(time.monotonic() - started, 3))


def _read_default_safely(conn: psycopg.Connection[Any], table: TableState, lock_timeout_s: float) -> None:
    try:
        with conn.transaction():
            _begin(conn, table, lock_timeout_s)
            _read_default(conn, table)
    except psycopg.errors.LockNotAvailable:
        table.default_rows = None
        table.skipped.append(_busy(table, lock_timeout_s, "reading the DEFAULT partition"))


def maintain(conn: psycopg.Connection[Any], schemas: tuple[str, ...] | list[str], settings: PartitionSettings,
             backups: Callable[[datetime], tuple[dict[str, Any] | None, str]] | None = None) -> Report:
    """Keep every table's partitions ahead, then retention (when configured), then read the DEFAULT partitions.
    ``backups`` answers "which verified backup is newer than this moment" (see :func:`covering_backup`)."""
    started = time.monotonic()
    tables = read_tables(conn, schemas, settings)
    for table in tables:
        if not table.maintained:
            continue
        _read_default_safely(conn, table, settings.lock_timeout_s)
        if table.skipped:
            continue
        keep_ahead(conn, table, settings.lock_timeout_s)
        table.ahead = _ahead(table)
    retention, refused, backup_id = retire(conn, tables, settings, backups)
    return Report(tables, retention, refused, backup_id, round(time.monotonic() - started, 3))


# ---- moving rows out of a DEFAULT partition ------------------------------------------------------------------------

@dataclass
class Moved:
    table: str
    default: str
    rows: int
    partitions: list[str]
    left: int  # rows with a NULL key: they belong to no range and stay in the DEFAULT partition
    seconds: float


def _columns(conn: psycopg.Connection[Any], oid: int) -> tuple[list[str], list[str]]:
    """(every column, the columns that are not generated) of the table, in order."""
    rows = conn.execute("SELECT attname, attgenerated FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                        "AND NOT attisdropped ORDER BY attnum", (oid,)).fetchall()
    return [r[0] for r in rows], [r[0] for r in rows if not r[1]]


def move_default(conn: psycopg.Connection[Any], table: TableState, lock_timeout_s: float) -> Moved:
    """Move the rows of ``table``'s DEFAULT partition into partitions of their own, in ONE transaction.

    With ``session_replication_role = replica`` (the moved rows are neither new nor deleted: no user trigger fires,
    no foreign key acts, e.g. ON DELETE CASCADE from referencing tables): the rows are deleted from the DEFAULT into a
    temporary table, the partitions covering them are created (as the owner, with the grants of the newest
    partition), the rows are inserted into the parent (which routes them), and counts and a content hash are compared
    before and after. Any error, or any difference, rolls everything back. The DEFAULT partition is not detached:
    PostgreSQL refuses to detach a partition that rows of another table reference, which is the rule rather than the
    exception for these tables (see docs/partitions.md)."""
    started = time.monotonic()
    default = table.default
    if not table.maintained or default is None:
        raise PartitionError(f"{table.qualified} has no DEFAULT partition to empty" if table.maintained else
                             f"{table.qualified} is not maintained: {table.reason}")
    columns, insertable = _columns(conn, table.oid)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    ins = sql.SQL(", ").join(map(sql.Identifier, insertable))
    key = sql.Identifier(table.key)
    src = _ident(default.schema, default.name)
    row_hash = sql.SQL("coalesce(sum(hashtextextended(row({})::text, 0)), 0)").format(cols)
    truncate = sql.SQL("date_trunc('month', {})::date" if table.period == "monthly" else "date_trunc('day', {})::date"
                       ).format(key)
    try:
        with conn.transaction():
            _begin(conn, table, lock_timeout_s)
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL session_replication_role = replica")
            except psycopg.errors.InsufficientPrivilege as exc:
                raise PartitionError(
                    "moving rows needs session_replication_role (so no trigger or foreign key action fires)",
                    "run it as a superuser, or GRANT SET ON PARAMETER session_replication_role TO the role dbops "
                    "connects as") from exc
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(_ident(table.schema, table.name)))
            before, before_hash = conn.execute(sql.SQL("SELECT count(*), {} FROM {} WHERE {} IS NOT NULL").format(
                row_hash, src, key)).fetchone()  # type: ignore[misc]
            left = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(src, key)).fetchone()[0]  # type: ignore[index]
            starts = [r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT {} FROM {} WHERE {} IS NOT NULL ORDER BY 1"
                                                         ).format(truncate, src, key)).fetchall()]
            conn.execute(sql.SQL("CREATE TEMPORARY TABLE dbops_moving (LIKE {}) ON COMMIT DROP").format(
                _ident(table.schema, table.name)))
            conn.execute(sql.SQL("WITH moved AS (DELETE FROM {} WHERE {} IS NOT NULL RETURNING {}) "
                                 "INSERT INTO dbops_moving ({}) SELECT {} FROM moved").format(
                src, key, cols, cols, cols))
            created = [create_partition(conn, table, start) for start in starts]
            conn.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM dbops_moving").format(
                _ident(table.schema, table.name), ins, ins))
            after = after_hash = 0
            for name in created:
                schema, part = name.split(".", 1)
                n, h = conn.execute(sql.SQL("SELECT count(*), {} FROM {}").format(
                    row_hash, _ident(schema, part))).fetchone()  # type: ignore[misc]
                after, after_hash = after + n, after_hash + h
            still = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL").format(src, key)).fetchone()[0]  # type: ignore[index]
            if (after, after_hash, still) != (before, before_hash, 0):
                raise PartitionError(
                    f"moving {table.qualified}'s DEFAULT rows did not add up: {before} rows before, {after} in the new "
                    f"partitions (content {'equal' if after_hash == before_hash else 'different'}), {still} left",
                    "nothing was changed; report this")
            conn.execute("DROP TABLE dbops_moving")
    except psycopg.errors.LockNotAvailable as exc:
        raise PartitionError(_busy(table, lock_timeout_s, "moving the DEFAULT partition's rows"),
                             "nothing was changed; run it again when the table is quieter") from exc
    except psycopg.Error as exc:
        raise PartitionError(f"moving {table.qualified}'s DEFAULT rows failed: {_first_line(exc)}",
                             "nothing was changed (rolled back)") from exc
    table.default_rows = left
    table.ahead = _ahead(table)
    return Moved(table.qualified, default.qualified, before, created, left, round(time.monotonic() - started, 3))


def move_defaults(conn: psycopg.Connection[Any], schemas: tuple[str, ...] | list[str], settings: PartitionSettings,
                  only: str | None = None) -> tuple[list[TableState], list[Moved]]:
    """:func:`move_default` for every table whose DEFAULT partition holds rows (or ``only`` that table)."""
    tables = read_tables(conn, schemas, settings)
    if only is not None:
        chosen = [t for t in tables if t.qualified == only or t.name == only]
        if not chosen:
            known = ", ".join(t.qualified for t in tables) or "none"
            raise ConfigError(f"--table {only}: no range-partitioned table of that name",
                              f"use one of: {known}")
        tables = chosen
    moved = []
    for table in tables:
        if not table.maintained or table.default is None:
            continue
        _read_default_safely(conn, table, settings.lock_timeout_s)
        if table.skipped:
            raise PartitionError(table.skipped[0], "nothing was changed")
        if table.default_rows:
            moved.append(move_default(conn, table, settings.lock_timeout_s))
    return tables, moved

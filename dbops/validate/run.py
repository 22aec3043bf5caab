"""Validate a database: tables with a time column one day at a time, the others as a whole, a report per batch.

What is validated comes from the target (:class:`dbops.settings.TargetSettings`, see
:meth:`IntegrityValidator.for_target`): ``schemas`` (none: every user schema), ``validation.time_columns``,
``validation.expectations`` (rule files; none for a team's database: only the rules its constraints state) and
``access_control`` (``sensitive:`` columns, masked in sample rows). A batch that evaluated nothing (no rules, no rows)
says why: it is never a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from dbops.pg.connect import connection
from dbops.settings import TargetSettings, checkout_dir
from dbops.validate.catalog import read_tables, resolve_schemas
from dbops.validate.rules import load_rules
from dbops.validate.sensitive import load_sensitive, mask_row
from dbops.validate.suite import Check, TablePlan, batch_query, plan_tables, slice_bounds

SAMPLE_ROWS = 3

Progress = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


def expectations_dir() -> Path:
    """The checkout's rules; callers pass the target's ``validation.expectations`` (``DBOPS_EXPECTATIONS``)."""
    return checkout_dir() / "sql" / "expectations"


def access_control_file() -> Path:
    """The checkout's matrix; callers pass the target's ``access_control`` (``DBOPS_ACCESS_CONTROL``)."""
    return checkout_dir() / "sql" / "access-control.yml"


@dataclass
class Failure:
    table: str
    rule: str
    unexpected: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class ValidationReport:
    """The outcome of one batch: one day of the fact tables, or the dimension tables."""

    scope: str
    evaluated: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    rows: int = 0  # a day's rows in its tables; for the dimensions, how many tables had rows
    reason: str | None = None  # why nothing was evaluated: no tables, no rules, no rows

    @property
    def nothing_checked(self) -> bool:
        """Nothing was evaluated (and nothing failed): a warning with :attr:`reason`, never a pass."""
        return not self.failures and self.reason is not None

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def unexpected(self) -> int:
        return sum(f.unexpected for f in self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self) -> str:
        if self.nothing_checked:
            return f"{self.scope}: nothing checked: {self.reason}"
        head = f"{self.scope}: {self.evaluated} expectations, {self.failed} failed, {self.unexpected} unexpected rows"
        lines = [head]
        for f in self.failures:
            extra = f" ({f.error})" if f.error else ""
            lines.append(f"  FAIL {f.table} {f.rule}: {f.unexpected} unexpected{extra}")
            for row in f.samples:
                lines.append(f"       {row}")
        return "\n".join(lines)


def day_bounds(day: date) -> tuple[str, str]:
    """[day, day + 1) in UTC, as literals PostgreSQL casts to timestamptz."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# The default rule files and matrix: the checkout's (the reference schema's), as before targets had settings.
CHECKOUT: Any = object()


def _day_of(plan: TablePlan) -> sql.Composable:
    """The UTC day of a row on its time column."""
    col = sql.Identifier(plan.time_column or "")
    kind = plan.table.time_types.get(plan.time_column or "")
    if kind == "timestamptz":
        return sql.SQL("({} AT TIME ZONE 'UTC')::date").format(col)
    return sql.SQL("{}::date").format(col)


class IntegrityValidator:
    """Plans checks from the live catalog and the rule files once, then validates any number of batches."""

    def __init__(
        self,
        url: str,
        rules_dir: Path | None = CHECKOUT,
        access_control: Path | None = CHECKOUT,
        schemas: tuple[str, ...] = (),
        time_columns: tuple[tuple[str, str], ...] | dict[str, str] = (),
        exclude: tuple[str, ...] = (),
    ) -> None:
        """``rules_dir`` None: only the rules the constraints state; ``schemas`` empty: every user schema;
        ``exclude``: tables (``schema.table``) left out, such as the migration history."""
        self.url = url
        self.rules_dir = expectations_dir() if rules_dir is CHECKOUT else rules_dir
        rules = load_rules(self.rules_dir) if self.rules_dir is not None else {}
        matrix = access_control_file() if access_control is CHECKOUT else access_control
        self.sensitive = load_sensitive(matrix) if matrix is not None else {}
        with connection(url) as conn:
            self.schemas = tuple(resolve_schemas(conn, schemas))
            tables = read_tables(conn, self.schemas, exclude)
        self.plans = plan_tables(tables, rules, self.rules_dir, dict(time_columns))
        self._gx: Any = None

    @classmethod
    def for_target(cls, url: str, target: TargetSettings) -> IntegrityValidator:
        """Validate ``target``'s database as its settings say (its migration history table left out)."""
        return cls(
            url,
            rules_dir=target.validation.expectations,
            access_control=target.access_control,
            schemas=target.schemas,
            time_columns=target.validation.time_columns,
            exclude=(f"{target.migrate.default_schema}.{target.migrate.table}",),
        )

    @property
    def fact_plans(self) -> list[TablePlan]:
        return [p for p in self.plans if p.time_column]

    @property
    def dimension_plans(self) -> list[TablePlan]:
        return [p for p in self.plans if not p.time_column]

    def _validator(self) -> Any:
        if self._gx is None:
            # great_expectations takes about 9 s to import: only a validation that runs a rule pays for it, not the
            # code location that defines the assets, nor `dbops validate --help`.
            from dbops.validate.gxrun import GxValidator

            self._gx = GxValidator(self.url, sorted({p.table.schema for p in self.plans}))
        return self._gx

    def close(self) -> None:
        if self._gx is not None:
            self._gx.close()
            self._gx = None

    def __enter__(self) -> IntegrityValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def validate_day(self, day: date, progress: Progress | None = None) -> ValidationReport:
        return self.validate_range(day, day, progress)[0]

    def validate_days(self, days: Iterable[date], progress: Progress | None = None) -> list[ValidationReport]:
        """One report per day, in order; consecutive days are validated as one range."""
        ordered = sorted(set(days))
        reports: list[ValidationReport] = []
        while ordered:
            run = 1
            while run < len(ordered) and ordered[run] == ordered[0] + timedelta(days=run):
                run += 1
            reports += self.validate_range(ordered[0], ordered[run - 1], progress)
            ordered = ordered[run:]
        return reports

    def _where(self) -> str:
        return ", ".join(self.schemas) or "no schema"

    def rows_by_day(self, plan: TablePlan, first: date, last: date) -> dict[date, int]:
        """How many rows each day of ``first..last`` holds in ``plan``'s table (one aggregate over the range)."""
        start, end = slice_bounds(plan, day_bounds(first)[0], day_bounds(last)[1])
        stmt = sql.SQL("SELECT {day}, count(*) FROM {table} WHERE {col} >= {lo} AND {col} < {hi} GROUP BY 1").format(
            day=_day_of(plan), table=sql.Identifier(plan.table.schema, plan.table.name),
            col=sql.Identifier(plan.time_column or ""), lo=sql.Literal(start), hi=sql.Literal(end),
        )
        with connection(self.url) as conn:
            return {d: int(n) for d, n in conn.execute(stmt).fetchall()}

    def validate_range(self, first: date, last: date, progress: Progress | None = None) -> list[ValidationReport]:
        """Validate the tables with a time column from ``first`` to ``last`` (inclusive), one report per day.

        The verdict is one batch per table over the whole range (``>= first AND < last + 1``): a 30-day backfill
        reads each table once, not 30 times. Only the rules that failed are re-run day by day, to put each violation
        in its partition. Row-count rules are about one day, so they always run per day. A day no table has a row
        of is reported as "nothing checked: no rows", not as a pass. A day's ``seconds`` is its share of each
        table's range batch plus its own re-runs. ``progress`` hears one line per table as it is done.
        """
        say = progress or _quiet
        days = days_between(first, last)
        reports = {d: ValidationReport(d.isoformat()) for d in days}
        plans = [p for p in self.fact_plans if p.checks]
        if not self.fact_plans:
            for report in reports.values():
                report.reason = (f"no table of {self._where()} has a time column (validation.time_columns, or a range "
                                 "partition key that is a date or timestamp)")
            return [reports[d] for d in days]
        if not plans:
            for report in reports.values():
                report.reason = "no rules: the tables with a time column declare no constraint and have no rule file"
            return [reports[d] for d in days]
        for plan in plans:
            started = time.monotonic()
            rows = self.rows_by_day(plan, first, last)
            for day in days:
                reports[day].rows += rows.get(day, 0)
            own: dict[date, float] = {}
            failed_before = sum(len(r.failures) for r in reports.values())
            if rows:
                own = self._validate_plan_range(plan, days, reports)
            took = time.monotonic() - started
            share = (took - sum(own.values())) / len(days)
            for day in days:
                if rows.get(day):
                    reports[day].evaluated += len(plan.checks)
                reports[day].seconds += share + own.get(day, 0.0)
            failed = sum(len(r.failures) for r in reports.values()) - failed_before
            span = f"{first}" if first == last else f"{first}..{last}"
            say(f"{plan.name} {span}: {sum(rows.values()):,} rows on {len(rows)} of {len(days)} days, "
                f"{len(plan.checks)} rules, {failed} violation(s), {took:.1f} s")
        names = ", ".join(p.name for p in plans)
        for report in reports.values():
            if report.rows == 0 and not report.failures:
                report.reason = f"no rows on {report.scope} in {names}"
        return [reports[d] for d in days]

    def _validate_plan_range(self, plan: TablePlan, days: list[date],
                             reports: dict[date, ValidationReport]) -> dict[date, float]:
        """Validate ``plan`` over ``days`` into ``reports``; the seconds each day's own re-runs took."""
        own: dict[date, float] = {}
        first, last = days[0], days[-1]
        per_day = [c for c in plan.checks if c.kind == "row_count"]
        ranged = [c for c in plan.checks if c.kind != "row_count"]
        failed: list[Check] = []
        range_counts: dict[str, int] = {}
        if ranged:
            start, _ = day_bounds(first)
            _, end = day_bounds(last)
            outcome = self._validator().validate(plan, ranged, start, end)
            failed = [o.check for o in outcome.failed]
            range_counts = {o.check.rule: o.unexpected for o in outcome.failed}
            errors = [o for o in outcome.failed if o.error]
            for o in errors:  # a rule GX could not evaluate fails every day of the range
                for day in days:
                    reports[day].failures.append(Failure(plan.name, o.check.rule, 0, [], o.error))
            failed = [c for c in failed if not any(o.check is c for o in errors)]
        recheck = failed + per_day
        attributed: set[str] = set()
        if recheck:
            for day in days:
                began = time.monotonic()
                bounds = day_bounds(day)
                outcome = self._validator().validate(plan, recheck, *bounds)
                for o in outcome.failed:
                    attributed.add(o.check.rule)
                    samples = [] if o.error else self.sample(plan, o.check, batch_query(plan, *bounds))
                    reports[day].failures.append(Failure(plan.name, o.check.rule, o.unexpected, samples, o.error))
                own[day] = time.monotonic() - began
        # A violation no single day shows (a duplicate key spread over two days) is reported on the last day.
        query = batch_query(plan, day_bounds(first)[0], day_bounds(last)[1])
        for check in failed:
            if check.rule not in attributed:
                samples = self.sample(plan, check, query)
                reports[last].failures.append(
                    Failure(plan.name, f"{check.rule} across {first}..{last}", range_counts[check.rule], samples)
                )
        return own

    def has_rows(self, plan: TablePlan) -> bool:
        stmt = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(plan.table.schema, plan.table.name))
        with connection(self.url) as conn:
            return bool(conn.execute(stmt).fetchone()[0])  # type: ignore[index]

    def validate_dimensions(self, progress: Progress | None = None) -> ValidationReport:
        """The tables without a time column, each as a whole; "nothing checked" when there is none, none has a rule,
        or all are empty. ``progress`` hears one line per table as it is done."""
        say = progress or _quiet
        started = time.monotonic()
        report = ValidationReport("dimensions")
        plans = [p for p in self.dimension_plans if p.checks]
        for plan in plans:
            began = time.monotonic()
            if not self.has_rows(plan):
                say(f"{plan.name}: no rows, {len(plan.checks)} rules not evaluated")
                continue
            report.rows += 1
            outcome = self._validator().validate(plan, plan.checks)
            report.evaluated += len(outcome.outcomes)
            query = batch_query(plan)
            for o in outcome.failed:
                samples = [] if o.error else self.sample(plan, o.check, query)
                report.failures.append(Failure(plan.name, o.check.rule, o.unexpected, samples, o.error))
            say(f"{plan.name}: {len(outcome.outcomes)} rules, {len(outcome.failed)} violation(s), "
                f"{time.monotonic() - began:.1f} s")
        if not self.dimension_plans:
            report.reason = f"no table of {self._where()} without a time column"
        elif not plans:
            report.reason = "no rules: the tables without a time column declare no constraint and have no rule file"
        elif not report.evaluated and not report.failures:
            report.reason = "no rows in " + ", ".join(p.name for p in plans)
        report.seconds = time.monotonic() - started
        return report

    def sample(self, plan: TablePlan, check: Check, query: str, limit: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
        """A few offending rows for the report, sensitive columns masked."""
        batch = sql.SQL("({}) AS batch").format(sql.SQL(query))  # type: ignore[arg-type]
        if check.rows_query:
            inner = sql.SQL(check.rows_query.format(batch=batch.as_string(None)))  # type: ignore[arg-type]
        elif check.predicate:
            inner = sql.SQL("SELECT * FROM {} WHERE {}").format(batch, sql.SQL(check.predicate))  # type: ignore[arg-type]
        else:
            return []
        stmt = sql.SQL("SELECT * FROM ({}) AS unexpected LIMIT {}").format(inner, sql.Literal(int(limit)))
        with connection(self.url) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(stmt).fetchall()
        return [mask_row(plan.name, row, self.sensitive) for row in rows]

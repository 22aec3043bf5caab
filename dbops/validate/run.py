"""Validate a database: fact tables one day at a time, dimension tables as a whole, with a report per batch.

| variable | meaning | default |
|---|---|---|
| ``DBOPS_EXPECTATIONS`` | folder of operator rule files (``<table>.yml``) | ``sql/expectations`` |
| ``DBOPS_ACCESS_CONTROL`` | file declaring ``sensitive:`` columns, masked in sample rows | ``sql/access-control.yml`` |
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from dbops.pg.connect import connection
from dbops.settings import checkout_dir
from dbops.validate.catalog import read_tables
from dbops.validate.rules import load_rules
from dbops.validate.sensitive import load_sensitive, mask_row
from dbops.validate.suite import Check, TablePlan, batch_query, plan_tables

SAMPLE_ROWS = 3


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


class IntegrityValidator:
    """Plans checks from the live catalog and the rule files once, then validates any number of batches."""

    def __init__(
        self,
        url: str,
        rules_dir: Path | None = None,
        access_control: Path | None = None,
        schemas: tuple[str, ...] = ("app",),
    ) -> None:
        self.url = url
        self.rules_dir = rules_dir or expectations_dir()
        rules = load_rules(self.rules_dir)
        self.sensitive = load_sensitive(access_control or access_control_file())
        with connection(url) as conn:
            tables = read_tables(conn, schemas)
        self.plans = plan_tables(tables, rules, self.rules_dir)
        self._gx: Any = None

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

            self._gx = GxValidator(self.url)
        return self._gx

    def close(self) -> None:
        if self._gx is not None:
            self._gx.close()
            self._gx = None

    def __enter__(self) -> IntegrityValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def validate_day(self, day: date) -> ValidationReport:
        return self.validate_range(day, day)[0]

    def validate_days(self, days: Iterable[date]) -> list[ValidationReport]:
        """One report per day; consecutive days are validated as one range."""
        ordered = sorted(set(days))
        reports: list[ValidationReport] = []
        while ordered:
            run = 1
            while run < len(ordered) and ordered[run] == ordered[0] + timedelta(days=run):
                run += 1
            reports += self.validate_range(ordered[0], ordered[run - 1])
            ordered = ordered[run:]
        return reports

    def validate_range(self, first: date, last: date) -> list[ValidationReport]:
        """Validate the fact tables from ``first`` to ``last`` (inclusive), one report per day.

        The verdict is one batch per table over the whole range (``>= first AND < last + 1``): a 30-day backfill
        reads each table once, not 30 times. Only the rules that failed are re-run day by day, to put each violation
        in its partition. Row-count rules are about one day, so they always run per day.
        """
        days = days_between(first, last)
        reports = {d: ValidationReport(d.isoformat()) for d in days}
        for plan in self.fact_plans:
            started = time.monotonic()
            per_day = [c for c in plan.checks if c.kind == "row_count"]
            ranged = [c for c in plan.checks if c.kind != "row_count"]
            failed: list[Check] = []
            range_counts: dict[str, int] = {}
            if ranged:
                start, _ = day_bounds(first)
                _, end = day_bounds(last)
                outcome = self._validator().validate(batch_query(plan, start, end), ranged, key=plan.name)
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
                    query = batch_query(plan, *day_bounds(day))
                    outcome = self._validator().validate(query, recheck, key=plan.name)
                    for o in outcome.failed:
                        attributed.add(o.check.rule)
                        samples = [] if o.error else self.sample(plan, o.check, query)
                        reports[day].failures.append(Failure(plan.name, o.check.rule, o.unexpected, samples, o.error))
            # A violation no single day shows (a duplicate key spread over two days) is reported on the last day.
            query = batch_query(plan, day_bounds(first)[0], day_bounds(last)[1])
            for check in failed:
                if check.rule not in attributed:
                    samples = self.sample(plan, check, query)
                    reports[last].failures.append(
                        Failure(plan.name, f"{check.rule} across {first}..{last}", range_counts[check.rule], samples)
                    )
            share = (time.monotonic() - started) / len(days)
            for day in days:
                reports[day].evaluated += len(plan.checks)
                reports[day].seconds += share
        return [reports[d] for d in days]

    def validate_dimensions(self) -> ValidationReport:
        started = time.monotonic()
        report = ValidationReport("dimensions")
        for plan in self.dimension_plans:
            if not plan.checks:
                continue
            query = batch_query(plan)
            outcome = self._validator().validate(query, plan.checks, key=plan.name)
            report.evaluated += len(outcome.outcomes)
            for o in outcome.failed:
                samples = [] if o.error else self.sample(plan, o.check, query)
                report.failures.append(Failure(plan.name, o.check.rule, o.unexpected, samples, o.error))
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

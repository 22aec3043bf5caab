"""Group ``health``: ``<target>/log_report``, pgBadger over the target's server log (incremental: each run reads the
lines written since the previous one), with the check ``log_errors_under_target``.

The reports live in ``$DBOPS_HOME/logs/<target>/`` (pgBadger's per-day and per-week HTML, its binary day files and its
LAST_PARSED state, see :mod:`dbops.health.pgbadger`). The log is the embedded server's (``pg_ctl -l``) for an embedded
target, else ``log_path`` when given, else the file the server names (``pg_current_logfile()``, logging_collector on).
"""


from pathlib import Path
from typing import Any

import dagster as dg

from dbops.components import metadata as md
from dbops.components.checks import nothing_checked
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, launch_settings, launch_target
from dbops.health import pgbadger as badger

ASSET = "log_report"
CHECK = "log_errors_under_target"
MAX_FATAL = 0  # FATAL and PANIC lines a run may read and still pass
APPLICATION = "dbops log_report"  # the application_name of the session that reads the server's log settings
SLOWEST_COLUMNS = ("duration_ms", "at", "database", "user", "statement")


def reports_dir(target: str) -> Path:
    """Where the target's pgBadger reports live: ``$DBOPS_HOME/logs/<target>``."""
    return launch_settings().home / "logs" / launch_target(target).name


def server_log_path(target: str, given: Path | str | None) -> Path | None:
    """``given``, else the embedded server's log for an embedded target, else None (the server names its file)."""
    if given:
        return Path(given)
    if launch_target(target).embedded:
        return launch_settings().server().log_file
    return None


def errors_check(report: badger.LogReport, *, max_errors: int | None, max_fatal: int) -> dg.AssetCheckResult:
    """WARN when nothing was read; ERROR when the run read more FATAL/PANIC lines than ``max_fatal`` or more ERROR
    lines than ``max_errors`` (None: ERROR lines are reported, not limited)."""
    if report.nothing_reason:
        return nothing_checked(report.nothing_reason)
    errors = report.errors.get("ERROR", 0)
    problems = []
    if report.fatal > max_fatal:
        problems.append(f"{report.fatal} FATAL/PANIC lines, more than {max_fatal}")
    if max_errors is not None and errors > max_errors:
        problems.append(f"{errors} ERROR lines, more than {max_errors}")
    values: dict[str, Any] = {
        "lines": report.lines,
        "errors": errors,
        "fatal_or_panic": report.fatal,
        "max_fatal": max_fatal,
        "max_errors": max_errors,
        "since": report.since,
        "problems": "; ".join(problems) or "none",
    }
    return dg.AssetCheckResult(passed=not problems, severity=dg.AssetCheckSeverity.ERROR, metadata=md.figures(values),
                               description="; ".join(problems) or None)


def report_metadata(report: badger.LogReport) -> dict[str, dg.MetadataValue]:
    rows = [{"duration_ms": s.duration_ms, "at": s.at, "database": s.database, "user": s.user,
             "statement": s.statement} for s in report.slowest]
    values: dict[str, Any] = {
        "report": md.path(report.report),
        "day_report": md.path(report.day_reports[-1]) if report.day_reports else None,
        "log": md.path(report.log),
        "since": report.since,
        "until": report.until,
        **report.figures(),
        "errors_by_level": dict(report.errors),
        "slowest": md.table(rows, SLOWEST_COLUMNS, {"duration_ms": "as the log recorded it",
                                                    "statement": "redacted"}) if rows else None,
        "not_logged": dict(report.not_logged) or None,
        "pgbadger": report.pgbadger,
        "seconds": report.seconds,
    }
    if report.nothing_reason:
        values["reason"] = report.nothing_reason
    return md.figures(values)


def build_log_report(target: str, *, log_path: Path | str | None = None, log_line_prefix: str | None = None,
                     log_format: str | None = None, top: int = badger.TOP, max_errors: int | None = None,
                     max_fatal: int = MAX_FATAL, retention_weeks: int = badger.RETENTION_WEEKS,
                     anonymize: bool = True) -> dg.AssetsDefinition:
    key = asset_key(target, ASSET)

    @dg.asset(
        key=key,
        group_name="health",
        pool=pool(target),
        kinds={"postgres", "pgbadger"},
        description="pgBadger over the server log of the target, incrementally (--incremental, --last-parsed: each run "
        "reads only the lines written since the previous one): the HTML report (per day and week, literals "
        "anonymized) under $DBOPS_HOME/logs/<target>, and the new lines' figures: errors by level, lock waits, "
        "deadlocks, temporary files and bytes, checkpoints, autovacuum runs, connections and sessions, the slowest "
        "statements (text redacted). A figure the server does not log is left out and named in not_logged.",
        check_specs=[dg.AssetCheckSpec(
            CHECK, asset=key,
            description=f"The log lines read by this run hold no more FATAL/PANIC lines than {max_fatal}"
            + (f" and no more ERROR lines than {max_errors}" if max_errors is not None else "")
            + " (ERROR otherwise). No new line since the previous run: WARN, nothing checked.",
        )],
    )
    def log_report(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
        database = database.for_target(target)
        with database.connect(application_name=APPLICATION) as conn:  # its lines are in the next run's report
            settings = badger.server_log_settings(conn)
        try:
            source = badger.log_source(settings, log_path=server_log_path(target, log_path),
                                       log_line_prefix=log_line_prefix, log_format=log_format)
        except badger.NoServerLog as exc:  # nothing to read: WARN naming the fix, never a pass nor a failed run
            reason = f"nothing checked: {exc}"
            context.log.warning(reason)
            return dg.MaterializeResult(metadata={"reason": dg.MetadataValue.text(reason)},
                                        check_results=[nothing_checked(reason)])
        for figure, fix in source.missing.items():
            context.log.warning(f"{figure}: not in the server log of {database.display_url}; set {fix}")
        report = badger.log_report(source, reports_dir(target), top=top, retention_weeks=retention_weeks,
                                   anonymize=anonymize, progress=context.log.info)
        if report.nothing_reason:
            context.log.warning(report.nothing_reason)
        return dg.MaterializeResult(metadata=report_metadata(report), check_results=[
            errors_check(report, max_errors=max_errors, max_fatal=max_fatal)])

    return log_report


def build(target: str, **options: Any) -> dg.Definitions:
    """The target's ``log_report`` asset; ``options`` are :func:`build_log_report`'s (log_path, log_line_prefix,
    log_format, top, max_errors, max_fatal, retention_weeks, anonymize)."""
    return dg.Definitions(assets=[build_log_report(target, **options)])

"""The declarative targets file (``monitoring/targets.yml``): validated at load time so a typo fails loudly, once."""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from dbops.errors import ConfigError
from dbops.settings import checkout_dir

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
SEVERITIES = ("critical", "warning")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class TargetsError(ConfigError):
    """The targets file is missing or malformed."""


def default_targets_path() -> Path:
    """The reference file, ``monitoring/targets.yml`` of the checkout; callers pass the target's ``targets_file``
    (``DBOPS_TARGETS``)."""
    return checkout_dir() / "monitoring" / "targets.yml"


def parse_duration(value: object, where: str) -> float:
    """Seconds from ``90``, ``30s``, ``2m``, ``1h``: the same spelling as Prometheus' ``for:``."""
    if isinstance(value, bool):
        raise TargetsError(f"{where}: {value!r} is not a duration", "write e.g. 30s, 2m or 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise TargetsError(f"{where}: {value!r} is not a duration", "write e.g. 30s, 2m or 1h")
        seconds = float(match[1]) * _UNIT_S[match[2]]
    if seconds < 0:
        raise TargetsError(f"{where}: negative duration {value!r}", "use 0s or more")
    return seconds


@dataclass(frozen=True)
class MetricTarget:
    """A health figure that must stay on the right side of a threshold."""

    metric: str
    op: str
    threshold: float
    for_seconds: float
    severity: str
    cooldown_seconds: float
    summary: str = ""

    @property
    def key(self) -> str:
        return f"metric:{self.metric}{self.op}{self.threshold:g}"

    def missed(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)

    def describe(self, value: float | None) -> str:
        shown = "n/a" if value is None else f"{value:.4g}"
        return f"{self.metric} = {shown} (target: not {self.op} {self.threshold:g})"


@dataclass(frozen=True)
class CheckTarget:
    """An asset check that must pass: its latest evaluation failing is a missed target."""

    asset: str
    check: str
    severity: str
    for_seconds: float
    cooldown_seconds: float
    summary: str = ""

    @property
    def key(self) -> str:
        return f"check:{self.asset}/{self.check}"


@dataclass(frozen=True)
class Limits:
    """The thresholds the asset checks and the scorecard compare against (the targets file's ``limits:``).

    A key the file leaves out keeps its default, today's value, so a file without the section works as before.
    """

    rto_seconds: float = 1800.0  # drill_rto_under_target: a drill restores within this many seconds
    backup_max_age_hours: float = 26.0  # backup_fresh: the newest backup is at most this old
    wal_max_segments_behind: int = 2  # wal_archive_current: archived WAL at most this many segments behind
    slow_query_mean_ms: float = 50.0  # slow_queries_under_target: mean of the slowest 10 % of statements
    read_avg_ms: float = 50.0  # read_latency_avg_under_target: average read latency under load
    read_p99_aim_ms: float = 20.0  # scorecard: read p99 at max users (an aim, no check)
    write_tps: float = 1000.0  # write_throughput_over_target: write transactions per second
    concurrent_users: int = 10000  # scorecard: users through the pooler the load test reaches
    degradation_ratio: float = 1.5  # degradation_within_bound: p95 at max users / p95 at the first step
    integrity_violations: int = 0  # scorecard (no_integrity_violations): violations allowed
    critical_findings: int = 0  # scorecard (no_critical_findings): critical security findings allowed


def default_limits() -> Limits:
    """The limits of a targets file without a ``limits:`` section."""
    return Limits()


# The smallest sensible value of each limit (0 unless a smaller one means nothing): a ratio of 1.0 is no degradation.
_LIMIT_MINIMUM: dict[str, float] = {"degradation_ratio": 1.0, "concurrent_users": 1}
_LIMIT_EXAMPLE: dict[str, str] = {"rto_seconds": "1800 (30 min)", "backup_max_age_hours": "26",
                                  "degradation_ratio": "1.5"}


@dataclass(frozen=True)
class Targets:
    metrics: tuple[MetricTarget, ...]
    checks: tuple[CheckTarget, ...]
    source: str = "<memory>"
    limits: Limits = field(default_factory=Limits)
    # failed runs, materializations and checks (alerts.failures): the file's defaults.cooldown (15m by default)
    failure_cooldown_seconds: float = 900.0

    def metric_names(self) -> set[str]:
        return {t.metric for t in self.metrics}

    def by_key(self) -> dict[str, MetricTarget | CheckTarget]:
        return {t.key: t for t in (*self.metrics, *self.checks)}


def _require_mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TargetsError(f"{where} must be a mapping, got {type(value).__name__}", "see monitoring/targets.yml")
    return value


def _severity(raw: dict[str, Any], default: str, where: str) -> str:
    severity = str(raw.get("severity", default))
    if severity not in SEVERITIES:
        raise TargetsError(f"{where}: severity {severity!r} is unknown", f"use one of {', '.join(SEVERITIES)}")
    return severity


def _unknown_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(raw) - allowed, key=str)
    if extra:
        close = difflib.get_close_matches(str(extra[0]), sorted(allowed), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise TargetsError(f"{where}: unknown key(s) {', '.join(map(str, extra))}",
                           f"{hint}allowed: {', '.join(sorted(allowed))}")


def parse_limits(raw: object, source: str = "<memory>") -> Limits:
    """The ``limits:`` mapping: numbers, none negative, whole numbers for counts; absent keys keep their default."""
    where = f"{source}: limits"
    values = _require_mapping({} if raw is None else raw, where)
    kinds = {f.name: f.type for f in fields(Limits)}
    _unknown_keys(values, set(kinds), where)
    defaults = default_limits()
    out: dict[str, float | int] = {}
    for name, value in values.items():
        whole = kinds[name] in (int, "int")
        example = _LIMIT_EXAMPLE.get(name, f"{getattr(defaults, name):g}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            kind = "a whole number" if whole else "a number"
            raise TargetsError(f"{where}.{name}: {value!r} is not {kind}", f"write e.g. {name}: {example}")
        if not math.isfinite(value):
            raise TargetsError(f"{where}.{name}: {value!r} is not a finite number", f"write e.g. {name}: {example}")
        minimum = _LIMIT_MINIMUM.get(name, 0)
        if value < minimum:
            problem = "is negative" if value < 0 else f"is below {minimum:g}"
            raise TargetsError(f"{where}.{name}: {value!r} {problem}", f"use {minimum:g} or more, e.g. {example}")
        out[name] = int(value) if whole else float(value)
    return Limits(**out)  # type: ignore[arg-type]


def parse_targets(data: object, source: str = "<memory>") -> Targets:
    """Validate the parsed YAML; every error names the file, the entry and the fix."""
    doc = _require_mapping(data, source)
    _unknown_keys(doc, {"defaults", "metrics", "checks", "limits"}, source)
    defaults = _require_mapping(doc.get("defaults") or {}, f"{source}: defaults")
    _unknown_keys(defaults, {"cooldown", "severity", "for"}, f"{source}: defaults")
    default_cooldown = parse_duration(defaults.get("cooldown", "15m"), f"{source}: defaults.cooldown")
    default_for = parse_duration(defaults.get("for", 0), f"{source}: defaults.for")
    default_severity = _severity(defaults, "warning", f"{source}: defaults")

    metrics: list[MetricTarget] = []
    raw_metrics = doc.get("metrics") or []
    if not isinstance(raw_metrics, list):
        raise TargetsError(f"{source}: metrics must be a list", "write '- metric: name' entries")
    for i, item in enumerate(raw_metrics, 1):
        where = f"{source}: metrics[{i}]"
        raw = _require_mapping(item, where)
        _unknown_keys(raw, {"metric", "op", "threshold", "for", "severity", "cooldown", "summary"}, where)
        name = raw.get("metric")
        if not isinstance(name, str) or not name:
            raise TargetsError(f"{where}: 'metric' is missing", "name a database_health figure")
        op = str(raw.get("op", ">"))
        if op not in OPS:
            raise TargetsError(f"{where} ({name}): operator {op!r} is unknown", f"use one of {' '.join(OPS)}")
        threshold = raw.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TargetsError(f"{where} ({name}): threshold {threshold!r} is not a number", "write e.g. 0.8")
        metrics.append(MetricTarget(
            metric=name, op=op, threshold=float(threshold),
            for_seconds=parse_duration(raw.get("for", default_for), f"{where} ({name}).for"),
            severity=_severity(raw, default_severity, f"{where} ({name})"),
            cooldown_seconds=parse_duration(raw.get("cooldown", default_cooldown), f"{where} ({name}).cooldown"),
            summary=str(raw.get("summary", "")),
        ))

    checks: list[CheckTarget] = []
    raw_checks = doc.get("checks") or []
    if not isinstance(raw_checks, list):
        raise TargetsError(f"{source}: checks must be a list", "write '- {asset: a, check: c}' entries")
    for i, item in enumerate(raw_checks, 1):
        where = f"{source}: checks[{i}]"
        raw = _require_mapping(item, where)
        _unknown_keys(raw, {"asset", "check", "severity", "for", "cooldown", "summary"}, where)
        asset, name = raw.get("asset"), raw.get("check")
        if not isinstance(asset, str) or not asset or not isinstance(name, str) or not name:
            raise TargetsError(f"{where}: needs both 'asset' and 'check'", "e.g. {asset: load_test, check: ...}")
        checks.append(CheckTarget(
            asset=asset, check=name,
            severity=_severity(raw, default_severity, f"{where} ({asset}/{name})"),
            for_seconds=parse_duration(raw.get("for", 0), f"{where}.for"),
            cooldown_seconds=parse_duration(raw.get("cooldown", default_cooldown), f"{where}.cooldown"),
            summary=str(raw.get("summary", "")),
        ))
    targets = Targets(tuple(metrics), tuple(checks), source, parse_limits(doc.get("limits"), source),
                      failure_cooldown_seconds=default_cooldown)
    seen: set[str] = set()
    for key in [t.key for t in (*targets.metrics, *targets.checks)]:
        if key in seen:
            raise TargetsError(f"{source}: target {key} is listed twice", "keep one entry")
        seen.add(key)
    return targets


# (path, mtime, size) -> the file's targets: many targets share one file, and each reads it when its definitions are
# built and at every alert tick; a changed file (new mtime or size) is read again.
_parsed: dict[tuple[str, int, int], Targets] = {}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it: ~10x faster


def load_targets(path: Path | str | None = None) -> Targets:
    """Read and validate a targets file."""
    file = Path(path) if path else default_targets_path()
    try:
        stat = file.stat()
        key = (str(file.absolute()), stat.st_mtime_ns, stat.st_size)
        if key in _parsed:
            return _parsed[key]
        text = file.read_text()
    except OSError as exc:
        raise TargetsError(f"cannot read targets file {file}: {exc.strerror}", "set DBOPS_TARGETS to a file") from exc
    targets = _parse_file(file, text)
    _parsed[key] = targets
    return targets


def _parse_file(file: Path, text: str) -> Targets:
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise TargetsError(f"targets file {file}{line}: {problem}", "fix the YAML syntax") from exc
    return parse_targets(data, str(file))

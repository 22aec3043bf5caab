"""The Prometheus alert rules and their promtool unit tests, generated from the targets file.

One rule per metric target (``dbops_<metric> <op> <threshold>``, its ``for``, severity and ``dbops_target`` = the
target's key), one per check target (``dbops_asset_check_passed{asset,check} == 0``) and ``DbopsExporterDown``; each
links its runbook (:mod:`dbops.health.runbooks`). The unit tests plant, for every metric rule, a series just past
its threshold (fires once it has lasted longer than ``for``, with its labels and annotations), one exactly at or just
inside it (never fires) and a one-sample spike (never fires when ``for`` is set); for every check rule a failed
evaluation (fires), the same check of the other listed assets passing and of an unlisted asset failing (neither
fires). The expected alerts are computed by a small model of Prometheus' ``for`` (:func:`firing`), so a test is
right for any targets file.

``python -m dbops.health.rules`` writes ``monitoring/prometheus-rules.yml`` and
``monitoring/prometheus-rules.test.yml``; ``--check`` exits 1 with one line when either is stale.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from dbops.health.runbooks import (
    DEFAULT_RUNBOOK_BASE,
    EXPORTER_DOWN,
    alert_name_for_check,
    alert_name_for_metric,
    runbook_url,
)
from dbops.health.targets import CheckTarget, MetricTarget, Targets, default_targets_path, load_targets
from dbops.settings import checkout_dir

RULES_FILE = "prometheus-rules.yml"
TESTS_FILE = "prometheus-rules.test.yml"
GROUP = "dbops"
JOB = "dbops"  # the scrape job of `dbops metrics serve`
STEP = 60  # seconds: the unit tests' evaluation interval and series interval
UNLISTED_ASSET = "not_listed"  # a check of this asset has no rule: dbops alerts on it itself (DbopsAssetCheckFailed)

_HEADER = """\
# GENERATED from monitoring/targets.yml by `python -m dbops.health.rules`: do not edit, edit the targets file.
# Regenerate: .venv/bin/python -m dbops.health.rules [--runbook-base URL]  (`--check` exits 1 when this is stale).
# Scrape `dbops metrics serve` (default 127.0.0.1:9188) as job "{job}". dbops_tests/health/test_prometheus.py runs
# `promtool check rules` on it and `promtool test rules monitoring/{tests}`.
# Every rule's runbook_url is docs/runbooks/<alert>.md (see docs/runbooks/README.md for how the names are formed).
"""
_TESTS_HEADER = """\
# GENERATED with monitoring/{rules} by `python -m dbops.health.rules`: do not edit.
# Run: promtool test rules monitoring/{tests}
# Each metric rule: a series just past the threshold fires after `for`, with its labels and annotations; one at (or
# just inside) the threshold never fires; a one-sample spike never fires. Each check rule: a failed evaluation fires.
"""
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def number(value: float) -> str:
    """A threshold as PromQL reads it, exact: ``0.8``, ``1e+07``, ``1073741824`` (``:g`` alone would round)."""
    value = float(value)
    short = f"{value:g}"
    if float(short) == value:
        return short
    return str(int(value)) if value.is_integer() else repr(value)


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: ``90`` -> ``1m30s``, ``604800`` -> ``7d``."""
    millis = round(seconds * 1000)
    if millis <= 0:
        return "0s"
    out, rest = "", millis // 1000
    for unit, size in _UNITS:
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    if millis % 1000:
        out += f"{millis % 1000}ms"
    return out


def go_value(value: float) -> str:
    """``{{ $value }}`` as Prometheus renders it (Go's ``%v`` of a float64: the shortest digits, in exponent form from
    1e+06 up and below 1e-04): ``0.9``, ``94000``, ``9.999999e+06``."""
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(text) + int(exponent)  # digits before the decimal point
    exp = point - 1
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{text}"
    if point >= len(text):
        return f"{minus}{text}{'0' * (point - len(text))}"
    return f"{minus}{text[:point]}.{text[point:]}"


def _description(target: MetricTarget, value: str) -> str:
    return f"{target.metric} is {value} (target: not {target.op} {number(target.threshold)})"


def metric_rule(target: MetricTarget, runbook_base: str = DEFAULT_RUNBOOK_BASE) -> dict[str, Any]:
    name = alert_name_for_metric(target.metric, target.op)
    rule: dict[str, Any] = {"alert": name,
                            "expr": f"dbops_{target.metric} {target.op} {number(target.threshold)}"}
    if target.for_seconds:
        rule["for"] = duration(target.for_seconds)
    rule["labels"] = {"severity": target.severity, "dbops_target": target.key}
    rule["annotations"] = {
        "summary": target.summary or f"{target.metric} {target.op} {number(target.threshold)}",
        "description": _description(target, "{{ $value }}"),
        "runbook_url": runbook_url(name, runbook_base),
    }
    return rule


def _check_selector(asset: str, check: str) -> str:
    return f'dbops_asset_check_passed{{asset="{asset}",check="{check}"}}'


def check_rule(target: CheckTarget, runbook_base: str = DEFAULT_RUNBOOK_BASE) -> dict[str, Any]:
    name = alert_name_for_check(target.check)
    rule: dict[str, Any] = {"alert": name, "expr": f"{_check_selector(target.asset, target.check)} == 0"}
    if target.for_seconds:
        rule["for"] = duration(target.for_seconds)
    rule["labels"] = {"severity": target.severity, "dbops_target": target.key}
    rule["annotations"] = {
        "summary": target.summary or f"asset check {target.asset}/{target.check} failed",
        "description": f"the latest evaluation of {target.asset}/{target.check} failed",
        "runbook_url": runbook_url(name, runbook_base),
    }
    return rule


def exporter_rule(runbook_base: str = DEFAULT_RUNBOOK_BASE) -> dict[str, Any]:
    return {
        "alert": EXPORTER_DOWN,
        "expr": f'up{{job="{JOB}"}} == 0',
        "for": "1m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "Prometheus cannot scrape `dbops metrics serve`",
            "description": "the dbops exporter at {{ $labels.instance }} has not answered for 1 minute",
            "runbook_url": runbook_url(EXPORTER_DOWN, runbook_base),
        },
    }


def prometheus_rules(targets: Targets, runbook_base: str = DEFAULT_RUNBOOK_BASE) -> dict[str, Any]:
    """The whole rules document of the targets file."""
    rules = [metric_rule(t, runbook_base) for t in targets.metrics]
    rules += [check_rule(t, runbook_base) for t in targets.checks]
    rules.append(exporter_rule(runbook_base))
    return {"groups": [{"name": GROUP, "rules": rules}]}


# --- the unit tests ---------------------------------------------------------------------------------------------


def _steps(seconds: float) -> int:
    """Evaluations (of STEP) a breach must last before the rule fires."""
    return math.ceil(seconds / STEP)


def firing(target: MetricTarget | CheckTarget, values: Sequence[float], step: int) -> bool:
    """Whether the rule of ``target`` fires at evaluation ``step`` over a series sampled every STEP (Prometheus'
    ``for``: the breach is active since the first of its consecutive breaching evaluations, and fires once it has
    been active for ``for``)."""
    breached = (lambda v: v == 0) if isinstance(target, CheckTarget) else target.missed
    start = step
    while start >= 0 and breached(values[start]):
        start -= 1
    start += 1
    return start <= step and (step - start) * STEP >= target.for_seconds


def _nudge(threshold: float, up: bool) -> float:
    """The next value past ``threshold`` a reader would pick: 1 for a whole number, else a hundredth of its order of
    magnitude (0.8 -> 0.801, 0.02 -> 0.0201)."""
    step = Decimal(1) if float(threshold).is_integer() else Decimal(10) ** (math.floor(math.log10(abs(threshold))) - 2)
    value = Decimal(repr(threshold)) + (step if up else -step)
    return float(value)


def _series_values(values: Sequence[float]) -> str:
    """promtool's expanding notation: runs of one value as ``vxN``."""
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        shown = go_value(values[i])
        parts.append(shown if j == i else f"{shown}x{j - i}")
        i = j + 1
    return " ".join(parts)


def _selector(metric: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def _expected(rules: list[tuple[MetricTarget | CheckTarget, dict[str, Any]]],
              series: list[tuple[dict[str, str], list[float]]], step: int) -> list[dict[str, Any]]:
    """The alerts of the rules (all of one alert name) firing at ``step`` over the planted series."""
    alerts = []
    for target, rule in rules:
        for labels, values in series:
            if isinstance(target, CheckTarget):
                if (labels.get("asset"), labels.get("check")) != (target.asset, target.check):
                    continue
                annotations = dict(rule["annotations"])
            else:
                annotations = {**rule["annotations"], "description": _description(target, go_value(values[step]))}
            if firing(target, values, step):
                alerts.append({"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations})
    return alerts


def _metric_test(target: MetricTarget, group: list[tuple[MetricTarget | CheckTarget, dict[str, Any]]],
                 ) -> dict[str, Any]:
    name = alert_name_for_metric(target.metric, target.op)
    up = target.op.startswith(">")
    strict = target.op in (">", "<")
    # the boundary itself is on one side: `> t` does not fire at t, `>= t` does
    past = _nudge(target.threshold, up) if strict else target.threshold
    inside = target.threshold if strict else _nudge(target.threshold, not up)
    fire_step = _steps(target.for_seconds) + 1
    samples = fire_step + 1
    series = [({"job": JOB, "case": "past"}, [past] * samples),
              ({"job": JOB, "case": "inside"}, [inside] * samples)]
    if target.for_seconds:
        series.append(({"job": JOB, "case": "spike"}, [past] + [inside] * (samples - 1)))
    checks_at = ([_steps(target.for_seconds) - 1] if target.for_seconds else []) + [fire_step]
    when = f" for {duration(target.for_seconds)}" if target.for_seconds else " at once"
    return {
        "name": f"{name}: {target.metric} {target.op} {number(target.threshold)} fires{when}",
        "interval": duration(STEP),
        "input_series": [{"series": _selector(f"dbops_{target.metric}", labels), "values": _series_values(values)}
                         for labels, values in series],
        "alert_rule_test": [{"eval_time": duration(step * STEP), "alertname": name,
                             "exp_alerts": _expected(group, series, step)} for step in checks_at],
    }


def _check_test(target: CheckTarget, group: list[tuple[MetricTarget | CheckTarget, dict[str, Any]]],
                ) -> dict[str, Any]:
    name = alert_name_for_check(target.check)
    fire_step = _steps(target.for_seconds) + 1
    samples = fire_step + 1
    series = [({"job": JOB, "asset": target.asset, "check": target.check}, [1.0] + [0.0] * (samples - 1))]
    series += [({"job": JOB, "asset": other.asset, "check": other.check}, [1.0] * samples)
               for other, _rule in group if other is not target]
    series.append(({"job": JOB, "asset": UNLISTED_ASSET, "check": target.check}, [0.0] * samples))
    checks_at = [0, fire_step]
    return {
        "name": f"{name}: a failed evaluation of {target.asset}/{target.check} fires",
        "interval": duration(STEP),
        "input_series": [{"series": _selector("dbops_asset_check_passed", labels), "values": _series_values(values)}
                         for labels, values in series],
        "alert_rule_test": [{"eval_time": duration(step * STEP), "alertname": name,
                             "exp_alerts": _expected(group, series, step)} for step in checks_at],
    }


def _exporter_test(runbook_base: str) -> dict[str, Any]:
    rule = exporter_rule(runbook_base)
    down, other = "127.0.0.1:9188", "127.0.0.1:9189"
    annotations = {**rule["annotations"],
                   "description": f"the dbops exporter at {down} has not answered for 1 minute"}
    return {
        "name": f"{EXPORTER_DOWN}: a scrape target of job {JOB} down for 1m fires, another job's does not",
        "interval": duration(STEP),
        "input_series": [
            {"series": _selector("up", {"job": JOB, "instance": down}), "values": "1 0x3"},
            {"series": _selector("up", {"job": JOB, "instance": other}), "values": "1x4"},
            {"series": _selector("up", {"job": "other", "instance": "127.0.0.1:9100"}), "values": "0x4"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": EXPORTER_DOWN, "exp_alerts": []},
            {"eval_time": "2m", "alertname": EXPORTER_DOWN, "exp_alerts": [
                {"exp_labels": {"job": JOB, "instance": down, **rule["labels"]}, "exp_annotations": annotations}]},
        ],
    }


def prometheus_rule_tests(targets: Targets, runbook_base: str = DEFAULT_RUNBOOK_BASE,
                          rules_file: str = RULES_FILE) -> dict[str, Any]:
    """promtool unit tests of every rule of :func:`prometheus_rules`."""
    by_name: dict[str, list[tuple[MetricTarget | CheckTarget, dict[str, Any]]]] = {}
    for metric in targets.metrics:
        rule = metric_rule(metric, runbook_base)
        by_name.setdefault(rule["alert"], []).append((metric, rule))
    for check in targets.checks:
        rule = check_rule(check, runbook_base)
        by_name.setdefault(rule["alert"], []).append((check, rule))
    tests = [_metric_test(t, by_name[alert_name_for_metric(t.metric, t.op)]) for t in targets.metrics]
    tests += [_check_test(t, by_name[alert_name_for_check(t.check)]) for t in targets.checks]
    tests.append(_exporter_test(runbook_base))
    return {"rule_files": [rules_file], "evaluation_interval": duration(STEP), "tests": tests}


# --- files ------------------------------------------------------------------------------------------------------


def _dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100_000)


def render_rules(targets: Targets, runbook_base: str = DEFAULT_RUNBOOK_BASE) -> str:
    return _HEADER.format(job=JOB, tests=TESTS_FILE) + _dump(prometheus_rules(targets, runbook_base))


def render_rule_tests(targets: Targets, runbook_base: str = DEFAULT_RUNBOOK_BASE) -> str:
    return _TESTS_HEADER.format(rules=RULES_FILE, tests=TESTS_FILE) + _dump(
        prometheus_rule_tests(targets, runbook_base))


def rendered(targets: Targets, runbook_base: str = DEFAULT_RUNBOOK_BASE) -> dict[str, str]:
    """File name -> text, for both files."""
    return {RULES_FILE: render_rules(targets, runbook_base), TESTS_FILE: render_rule_tests(targets, runbook_base)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbops.health.rules",
                                     description="Write the Prometheus rules and their promtool unit tests from the "
                                                 "targets file.")
    parser.add_argument("--targets", type=Path, default=None,
                        help="targets file (default: monitoring/targets.yml of the checkout)")
    parser.add_argument("--output-dir", type=Path, default=checkout_dir() / "monitoring",
                        help=f"folder of {RULES_FILE} and {TESTS_FILE} (default: monitoring/ of the checkout)")
    parser.add_argument("--runbook-base", default=DEFAULT_RUNBOOK_BASE,
                        help=f"folder or URL the runbook_url annotations point into (default: {DEFAULT_RUNBOOK_BASE})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    targets = load_targets(args.targets or default_targets_path())
    files = rendered(targets, args.runbook_base)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.output_dir / name).is_file() or (args.output_dir / name).read_text() != text]
        if stale:
            print(f"stale: {', '.join(str(args.output_dir / n) for n in stale)} differ from {targets.source}; "
                  "run python -m dbops.health.rules", file=sys.stderr)
            return 1
        print(f"up to date with {targets.source}: {', '.join(files)}")
        return 0
    for name, text in files.items():
        (args.output_dir / name).write_text(text)
        print(f"wrote {args.output_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

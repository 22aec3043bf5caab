"""The alert name and runbook of every alert dbops can raise, from the alert key dbops gives it.

Names (the Prometheus rules, the notifications and ``docs/runbooks/<Name>.md`` share them):

- a metric target: ``Dbops`` + CamelCase(metric) + ``High`` (op ``>``, ``>=``) or ``Low`` (``<``, ``<=``); the
  metric ``up`` is ``DbopsDatabaseDown``;
- a check target of the targets file: ``DbopsCheck`` + CamelCase(check), one name per check whatever the asset;
- dbops' own failure alerts: ``run:<job>`` is ``DbopsRunFailed``, ``asset:<name>`` ``DbopsMaterializationFailed``,
  ``check:<asset>/<check>`` of a check the targets file does not list ``DbopsAssetCheckFailed``;
- the Prometheus rule on the exporter itself: ``DbopsExporterDown``.
"""

from __future__ import annotations

import re
from pathlib import Path

from dbops.health.targets import OPS, Targets, load_targets
from dbops.redact import redact
from dbops.settings import checkout_dir

RUNBOOKS_DIR = checkout_dir() / "docs" / "runbooks"
DEFAULT_RUNBOOK_BASE = "docs/runbooks"  # repository-relative: what the committed rules file links

DATABASE_DOWN = "DbopsDatabaseDown"
RUN_FAILED = "DbopsRunFailed"
MATERIALIZATION_FAILED = "DbopsMaterializationFailed"
ASSET_CHECK_FAILED = "DbopsAssetCheckFailed"
EXPORTER_DOWN = "DbopsExporterDown"
FAILURE_ALERTS = (RUN_FAILED, MATERIALIZATION_FAILED, ASSET_CHECK_FAILED)

_METRIC_KEY = re.compile(r"^metric:(?P<metric>[A-Za-z_][A-Za-z0-9_]*)(?P<op>>=|<=|>|<)(?P<threshold>.+)$")


def camel_case(name: str) -> str:
    """``connections_used_ratio`` -> ``ConnectionsUsedRatio``."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def alert_name_for_metric(metric: str, op: str) -> str:
    """The alert of a metric target: ``DbopsCacheHitRatioLow`` for ``cache_hit_ratio <``."""
    if op not in OPS:
        raise ValueError(f"operator {op!r} is unknown: use one of {' '.join(OPS)}")
    if metric == "up":
        return DATABASE_DOWN
    return "Dbops" + camel_case(metric) + ("High" if op.startswith(">") else "Low")


def alert_name_for_check(check: str) -> str:
    """The alert of a check target: ``DbopsCheckBackupFresh`` for ``backup_fresh`` on any asset."""
    return "DbopsCheck" + camel_case(check)


def alert_name(key: str, targets: Targets | None = None) -> str:
    """The alert name of an alert key as dbops keys them: ``metric:up<1``, ``check:logical_backup/backup_fresh``,
    ``run:<job>``, ``asset:<name>``. ``targets`` tells a listed check from one that is not (default: the reference
    targets file of the checkout)."""
    if key.startswith("metric:"):
        match = _METRIC_KEY.match(key)
        if not match:
            raise ValueError(f"alert key {key!r} is not metric:<figure><op><threshold>")
        return alert_name_for_metric(match["metric"], match["op"])
    if key.startswith("check:"):
        asset, sep, check = key.removeprefix("check:").rpartition("/")
        if not sep or not asset or not check:
            raise ValueError(f"alert key {key!r} is not check:<asset>/<check>")
        listed = {t.key for t in (targets if targets is not None else load_targets()).checks}
        return alert_name_for_check(check) if key in listed else ASSET_CHECK_FAILED
    if key.startswith("run:"):
        return RUN_FAILED
    if key.startswith("asset:"):
        return MATERIALIZATION_FAILED
    raise ValueError(f"alert key {key!r} is unknown: keys start with metric:, check:, run: or asset:")


def alert_names(targets: Targets) -> list[str]:
    """Every alert the targets file can send (metric and check targets, failures, the exporter), each once."""
    names = [alert_name_for_metric(t.metric, t.op) for t in targets.metrics]
    names += [alert_name_for_check(t.check) for t in targets.checks]
    names += [*FAILURE_ALERTS, EXPORTER_DOWN]
    return list(dict.fromkeys(names))


def runbook_path(name: str) -> Path:
    """The runbook of an alert in this checkout."""
    return RUNBOOKS_DIR / f"{name}.md"


def runbook_url(name: str, base: str = DEFAULT_RUNBOOK_BASE) -> str:
    """Where the runbook of an alert is: ``base`` is a folder or a URL (``alerts.runbook_base``)."""
    return redact(base.rstrip("/") + "/" + name + ".md")

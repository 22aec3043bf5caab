"""Prometheus exposition of the health figures and the latest lifecycle figures, sampled at scrape time.

Names: what postgres_exporter measures too under its own names, labels and types (``pg_up``, ``pg_stat_database_*``,
``pg_stat_activity_count``, ``pg_locks_count``, ``pg_replication_slots_*``, ``pg_database_size_bytes``,
``pg_settings_*``...: :mod:`dbops.health.pgexporter`, one connection per scrape), so dashboards and rules written for
postgres_exporter work unchanged; ``dbops_<figure>`` for every database_health figure (see
``dbops.health.metrics.METRICS``), and for the lifecycle ``dbops_backup_age_seconds``,
``dbops_asset_last_materialization_timestamp_seconds{asset}``, ``dbops_asset_metadata{asset,key}`` (every numeric
metadata value of the asset's latest materialization: drill RTO, load-test latency and throughput, audit findings,
integrity violations...) and ``dbops_asset_check_passed{asset,check}``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dbops.health.lifecycle import LifecycleFigures
from dbops.health.metrics import METRICS, HealthSample, collect_health
from dbops.health.pgexporter import scrape

_NAME = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(figure: str) -> str:
    return "dbops_" + _NAME.sub("_", figure)


class DbopsCollector(Collector):
    """Reads the postgres_exporter families and samples the health figures on every scrape (rates from the previous
    scrape), and adds the lifecycle figures."""

    def __init__(self, url: str, lifecycle: Callable[[], LifecycleFigures] | None = None) -> None:
        self.url = url
        self.lifecycle = lifecycle
        self._previous: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.failed_collectors: dict[str, str] = {}  # postgres_exporter collector -> why the last scrape left it out

    def sample(self) -> HealthSample:
        with self._lock:
            sample = collect_health(self.url, self._previous)
            if sample.metrics.get("up"):
                self._previous = sample.state()
            return sample

    def collect(self) -> Iterator[Metric]:
        exported = scrape(self.url)
        self.failed_collectors = exported.failed
        yield from exported.metrics()  # pg_up, and the postgres_exporter families when the database answered
        sample = self.sample()
        for figure, value in sorted(sample.metrics.items()):
            yield GaugeMetricFamily(prometheus_name(figure), METRICS.get(figure, figure), value=value)
        if self.lifecycle is None:
            return
        try:
            figures = self.lifecycle()
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - a broken instance must not hide the health figures
            self.last_error = f"{type(exc).__name__}: {exc}"
            yield GaugeMetricFamily("dbops_lifecycle_up", "1 when the Dagster instance was readable", value=0)
            return
        yield GaugeMetricFamily("dbops_lifecycle_up", "1 when the Dagster instance was readable", value=1)
        if figures.backup_age_seconds is not None:
            yield GaugeMetricFamily("dbops_backup_age_seconds", "seconds since the newest logical or base backup",
                                    value=figures.backup_age_seconds)
        when = GaugeMetricFamily("dbops_asset_last_materialization_timestamp_seconds",
                                 "Unix time of the asset's latest materialization", labels=["asset"])
        for asset, ts in sorted(figures.materialized_at.items()):
            when.add_metric([asset], ts)
        yield when
        numbers = GaugeMetricFamily("dbops_asset_metadata", "numeric metadata of the asset's latest materialization",
                                    labels=["asset", "key"])
        for asset, values in sorted(figures.numbers.items()):
            for key, value in sorted(values.items()):
                numbers.add_metric([asset, key], value)
        yield numbers
        checks = GaugeMetricFamily("dbops_asset_check_passed", "1 when the check's latest evaluation passed",
                                   labels=["asset", "check"])
        for (asset, check), (passed, _when) in sorted(figures.checks.items()):
            checks.add_metric([asset, check], 1.0 if passed else 0.0)
        yield checks


def build_registry(url: str, lifecycle: Callable[[], LifecycleFigures] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DbopsCollector(url, lifecycle))
    return registry

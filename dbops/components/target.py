"""The dbops Components: ``DbopsTarget`` is one managed database (every lifecycle step's assets, checks, schedules
and sensors, keyed ``<target>/<asset>`` and named ``<target>_<name>``); ``DbopsFleet`` is one ``DbopsTarget`` per
target of the settings (``targets:`` in dbops.yaml; no file: the embedded target ``dbops``), with the resources they
share. ``dbops/defs/fleet/defs.yaml`` declares the fleet, so adding a database is one YAML block in dbops.yaml and a
reload.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

from dbops.components import (
    backup,
    catalog,
    health,
    loadtest,
    maintain,
    migrate,
    profile,
    restore,
    security,
    validate,
)
from dbops.components.catalog.resources import CatalogResource
from dbops.components.health import logs
from dbops.components.jobs import build_jobs
from dbops.components.naming import asset_key
from dbops.components.resources import BackupResource, DatabaseResource, MigrationsResource, launch_settings
from dbops.components.schedules import automation_conditions, build_automation_sensors, build_schedules
from dbops.components.security.resources import SecurityResource
from dbops.health.targets import load_targets
from dbops.settings import Settings, TargetSettings

# One object per resource key, shared by every target (each asset binds it to its own with ``for_target``): the same
# objects in every target's Definitions, so merging them does not clash.
SHARED_RESOURCES: dict[str, dg.ConfigurableResource] = {
    "database": DatabaseResource(),
    "migrations": MigrationsResource(),
    "catalog": CatalogResource(),
    "security": SecurityResource(),
    "backups": BackupResource(),
}


def shared_resources() -> dict[str, dg.ConfigurableResource]:
    return dict(SHARED_RESOURCES)


# The lifecycle the asset graph tells, migrate → catalog → profile/advice → load test → backup → drill → integrity →
# audit → alerts: each asset's upstream lifecycle assets (``<target>/alerts`` depends on every step; health declares
# it). Most steps declare these deps themselves (their decorator's ``deps``); :func:`lifecycle_specs` adds the ones a
# step does not, so the graph always shows the whole table. A dep added to a finished asset shows in the graph and
# drives automation conditions and staleness, but in Dagster 1.13 it does not order two steps of one run (the added
# op input is not mapped to its asset): the step's own ``deps`` does (dbops_tests/test_dagster_idioms.py lists the
# deps still only added here). Deps never change what a schedule runs: a schedule selects its assets by key.
LIFECYCLE_DEPS: dict[str, tuple[str, ...]] = {
    "schema_migrations": (),  # migration_rehearsal gates it when the rehearsal is on (migrate's own dep)
    "schema_catalog": ("schema_migrations",),
    "query_profile": ("schema_catalog",),
    "index_advice": ("query_profile",),
    "load_test": ("schema_migrations", "index_advice"),
    "logical_backup": ("schema_migrations",),
    "base_backup": ("schema_migrations",),
    "wal_archive": ("base_backup",),
    "backup_retention": ("logical_backup", "base_backup"),
    "restore_drill": ("logical_backup", "base_backup"),
    "integrity_validation": ("schema_migrations",),
    "dimension_integrity": ("schema_migrations",),
    "index_integrity": ("schema_migrations",),
    "security_audit": ("schema_migrations",),
    "partition_maintenance": ("schema_migrations",),
    "materialized_views": ("schema_migrations",),
}

# Edges drawn in the graph but left out of the step's own decorator: a decorator dep also skips the step when its
# upstream fails in the same run, and a failed index advice (a scratch copy that could not be made) must not cancel
# the load test of a full lifecycle run. Every other edge of LIFECYCLE_DEPS orders the steps of one run.
GRAPH_ONLY_DEPS: frozenset[tuple[str, str]] = frozenset({("load_test", "index_advice")})

STEP_TAG = "dbops/step"
TARGET_TAG = "dbops/target"
DAILY_GRACE = timedelta(hours=2)  # a daily step's freshness window: a day and the time its run may take
# Daily steps with a freshness policy while their schedule is on with a daily cron (``M H * * *``).
DAILY_FRESHNESS = {"schema_catalog": "catalog_daily", "integrity_validation": "integrity_daily"}
# Backups: fresh within the targets file's limits.backup_max_age_hours while one of their schedules is on.
BACKUP_FRESHNESS = {"logical_backup": ("logical_backup_daily",),
                    "base_backup": ("base_backup_nightly_full", "base_backup_hourly_incremental")}
_DAILY_CRON = re.compile(r"^\d{1,2} \d{1,2} \* \* \*$")


def freshness_policies(target: TargetSettings) -> dict[str, dg.FreshnessPolicy]:
    """Asset name -> Dagster's freshness policy, for the steps ``target`` keeps fresh by a schedule that is on (a
    policy on an asset nothing refreshes would only ever fail)."""
    policies: dict[str, dg.FreshnessPolicy] = {}
    max_age = timedelta(hours=load_targets(target.targets_file).limits.backup_max_age_hours)
    for name, schedules in BACKUP_FRESHNESS.items():
        if any(target.schedules[s].enabled for s in schedules):
            policies[name] = dg.FreshnessPolicy.time_window(fail_window=max_age)
    for name, schedule in DAILY_FRESHNESS.items():
        state = target.schedules[schedule]
        if state.enabled and _DAILY_CRON.match(state.cron.strip()):
            policies[name] = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=1) + DAILY_GRACE)
    return policies


def lifecycle_specs(target: TargetSettings, assets: Sequence[dg.AssetsDefinition | dg.AssetSpec]
                    ) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """``assets`` with the lifecycle deps of :data:`LIFECYCLE_DEPS` (only to assets that exist), the tags
    ``dbops/step`` (the group) and ``dbops/target``, freshness policies, automation conditions, and code references
    (the file and line of each step's function)."""
    name = target.name
    present = {k for a in assets for k in (a.keys if isinstance(a, dg.AssetsDefinition) else [a.key])}
    policies = freshness_policies(target)
    conditions = automation_conditions(target)

    def spec(s: dg.AssetSpec) -> dg.AssetSpec:
        if s.key.path[0] != name:
            return s
        asset = s.key.path[-1]
        wanted = [asset_key(name, d) for d in LIFECYCLE_DEPS.get(asset, ())]
        have = {d.asset_key for d in s.deps}
        deps = [*s.deps, *(k for k in wanted if k in present and k not in have)]
        updates: dict = {"deps": deps, "tags": {**s.tags, STEP_TAG: s.group_name or "default", TARGET_TAG: name}}
        if target.owners and not s.owners:
            updates["owners"] = list(target.owners)
        if asset in policies and s.freshness_policy is None:
            updates["freshness_policy"] = policies[asset]
        if asset in conditions and s.automation_condition is None:
            updates["automation_condition"] = conditions[asset]
        return s.replace_attributes(**updates)

    mapped = list(dg.map_asset_specs(spec, assets))
    with warnings.catch_warnings():
        # Dagster 1.13 marks code references beta; they are metadata only (the UI's "open source" link), and no git
        # remote is needed: link_code_references_to_git is left out, a checkout has no URL to link to.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.with_source_code_references(mapped))  # type: ignore[arg-type]


def target_defs(target: TargetSettings) -> dg.Definitions:
    """Every step's definitions for ``target``, on the lifecycle graph (:func:`lifecycle_specs`), its schedules (a
    schedule for a missing step is skipped) and its automation sensors."""
    name = target.name
    steps = dg.Definitions.merge(
        migrate.build(name, rehearsal=target.rehearsal.enabled), catalog.build(name), profile.build(name),
        loadtest.build(name), backup.build(name), restore.build(name), validate.build(name), security.build(name),
        maintain.build(name, matview_max_age_hours=target.matviews.max_age_hours), health.build(name),
        logs.build(name, log_path=target.logs.path, log_line_prefix=target.logs.line_prefix,
                   log_format=target.logs.format, top=target.logs.top, max_errors=target.logs.max_errors,
                   max_fatal=target.logs.max_fatal, retention_weeks=target.logs.retention_weeks,
                   anonymize=target.logs.anonymize),
    )
    assets = lifecycle_specs(target, list(steps.assets or []))  # type: ignore[arg-type]
    keys = {k for a in assets for k in (a.keys if isinstance(a, dg.AssetsDefinition) else [a.key])}
    steps = dg.Definitions(assets=assets, asset_checks=steps.asset_checks, sensors=steps.sensors,
                           schedules=steps.schedules, jobs=steps.jobs, resources=steps.resources)
    return dg.Definitions.merge(steps, dg.Definitions(schedules=build_schedules(target, keys),
                                                      sensors=build_automation_sensors(target, keys),
                                                      jobs=build_jobs(name, keys)))


def fleet_defs(settings: Settings, exclude: Sequence[str] = ()) -> dg.Definitions:
    """Every target of ``settings`` but ``exclude``, with the shared resources (merged once)."""
    return dg.Definitions.merge(*(target_defs(t) for t in settings.targets.values() if t.name not in exclude),
                                dg.Definitions(resources=shared_resources()))


class DbopsTarget(dg.Component, dg.Model, dg.Resolvable):
    """One database dbops manages: ``target`` names it in the settings (dbops.yaml ``targets:``)."""

    target: str

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions.merge(target_defs(launch_settings().target(self.target)),
                                    dg.Definitions(resources=shared_resources()))


class DbopsFleet(dg.Component, dg.Model, dg.Resolvable):
    """Every target of the settings, each built as a :class:`DbopsTarget` builds it; ``exclude`` leaves some out (to
    declare them as a ``DbopsTarget`` of their own elsewhere in the defs folder)."""

    exclude: list[str] = []

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        settings = launch_settings()
        for name in self.exclude:
            settings.target(name)  # a typo names the closest target
        return fleet_defs(settings, self.exclude)

"""The dbops Components: ``DbopsTarget`` is one managed database (every lifecycle step's assets, checks, schedules
and sensors, keyed ``<target>/<asset>`` and named ``<target>_<name>``); ``DbopsFleet`` is one ``DbopsTarget`` per
target of the settings (``targets:`` in dbops.yaml; no file: the embedded target ``dbops``), with the resources they
share. ``dbops/defs/fleet/defs.yaml`` declares the fleet, so adding a database is one YAML block in dbops.yaml and a
reload.
"""

from __future__ import annotations

from collections.abc import Sequence

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
from dbops.components.jobs import build_jobs
from dbops.components.resources import BackupResource, DatabaseResource, MigrationsResource, launch_settings
from dbops.components.schedules import build_schedules
from dbops.components.security.resources import SecurityResource
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


def target_defs(target: TargetSettings) -> dg.Definitions:
    """Every step's definitions for ``target``, and its schedules (a schedule for a missing step is skipped)."""
    name = target.name
    steps = dg.Definitions.merge(
        migrate.build(name, rehearsal=target.rehearsal.enabled), catalog.build(name), profile.build(name),
        loadtest.build(name), backup.build(name), restore.build(name), validate.build(name), security.build(name),
        maintain.build(name, matview_max_age_hours=target.matviews.max_age_hours), health.build(name),
    )
    keys = {k for a in steps.assets or [] for k in (a.keys if isinstance(a, dg.AssetsDefinition) else [a.key])}
    return dg.Definitions.merge(steps, dg.Definitions(schedules=build_schedules(target, keys),
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

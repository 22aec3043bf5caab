"""The integrity group of a target loads beside its migrate group with the shared resources, and with the schedules
the target's settings give it, as the code location will."""

from __future__ import annotations

import dagster as dg

from dbops.components import migrate, validate
from dbops.components.naming import asset_key
from dbops.components.resources import BackupResource, MigrationsResource, default_resources
from dbops.components.schedules import build_schedules
from dbops.settings import load_settings

TARGET = "dbops"  # no config file: the one embedded target


def test_integrity_group_loads() -> None:
    target = load_settings().target(TARGET)
    steps = dg.Definitions.merge(
        migrate.build(TARGET, rehearsal=target.rehearsal.enabled), validate.build(TARGET),
        dg.Definitions(resources={**default_resources(), "migrations": MigrationsResource(),
                                  "backups": BackupResource()}),
    )
    present = steps.resolve_asset_graph().get_all_asset_keys()
    merged = dg.Definitions.merge(steps, dg.Definitions(schedules=build_schedules(target, present)))
    dg.Definitions.validate_loadable(merged)
    graph = merged.resolve_asset_graph()
    keys = {asset_key(TARGET, k) for k in ("integrity_validation", "dimension_integrity", "index_integrity")}
    assert {k.to_user_string() for k in keys} == {"dbops/integrity_validation", "dbops/dimension_integrity",
                                                 "dbops/index_integrity"}
    assert keys <= graph.get_all_asset_keys()
    for key in keys:
        assert graph.get(key).group_name == "validate"
    validation = graph.get(asset_key(TARGET, "integrity_validation"))
    assert validation.partitions_def is not None and validation.backfill_policy == dg.BackfillPolicy.single_run()
    assert dg.AssetCheckKey(asset_key(TARGET, "integrity_validation"), "no_integrity_violations") in \
        graph.asset_check_keys
    assert merged.resolve_sensor_def("dbops_revalidate_after_migration") is not None
    assert merged.resolve_schedule_def("dbops_integrity_daily").cron_schedule == "30 1 * * *"

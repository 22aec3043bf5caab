"""The integrity group loads beside the migrate group with the shared resources, as the code location will."""

from __future__ import annotations

import dagster as dg

from dbops.defs import migrate
from dbops.defs.resources import BackupResource, MigrationsResource, default_resources
from dbops.defs.validate import defs


def test_integrity_group_loads() -> None:
    merged = dg.Definitions.merge(
        migrate.defs, defs, dg.Definitions(resources={**default_resources(), "migrations": MigrationsResource(),
                                                   "backups": BackupResource()})
    )
    dg.Definitions.validate_loadable(merged)
    graph = merged.resolve_asset_graph()
    keys = {dg.AssetKey(k) for k in ("integrity_validation", "dimension_integrity", "index_integrity")}
    assert keys <= graph.get_all_asset_keys()
    for key in keys:
        assert graph.get(key).group_name == "validate"
    validation = graph.get(dg.AssetKey("integrity_validation"))
    assert validation.partitions_def is not None and validation.backfill_policy == dg.BackfillPolicy.single_run()
    assert dg.AssetCheckKey(dg.AssetKey("integrity_validation"), "no_integrity_violations") in graph.asset_check_keys
    assert merged.resolve_sensor_def("revalidate_after_migration") is not None
    assert merged.resolve_schedule_def("integrity_daily").cron_schedule == "30 1 * * *"

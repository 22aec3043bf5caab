"""``<target>/restore_drill`` (group ``restore``): the latest backup of each kind restored into a scratch copy,
compared with its manifest and timed, with its checks ``drill_data_matches`` (blocking) and
``drill_rto_under_target``."""

from typing import Any

import dagster as dg
from pydantic import Field

from dbops.backup.manifest import load_manifest
from dbops.backup.physical import PHYSICAL_KINDS
from dbops.components.naming import asset_key, pool
from dbops.components.resources import BackupResource, DatabaseResource, read_verified
from dbops.restore.drill import drill, physical_drill


class RestoreDrillConfig(dg.Config):
    backup_id: str = Field(default="", description="drill this backup only (default: the latest of each kind)")
    logical: bool = Field(default=True, description="drill the latest logical backup (if there is one)")
    physical: bool = Field(default=True, description="drill the latest base backup chain (if there is one)")
    pitr: bool = Field(default=True, description="physical: canary rows and WAL replay to a target time")
    allow_production: bool = Field(default=False, description="logical: restore the scratch copy on a production "
                                   "target's server anyway (its I/O and disk)")


def build_restore_drill(target: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(target, "restore_drill"),
        group_name="restore",
        deps=[asset_key(target, "logical_backup"), asset_key(target, "base_backup")],
        pool=pool(target),
        kinds={"postgres"},
        check_specs=[
            dg.AssetCheckSpec("drill_data_matches", asset=asset_key(target, "restore_drill"), blocking=True,
                              description="Logical: rows and content checksums of every table equal the manifest. "
                              "Physical: pg_verifybackup passes and the PITR canaries are right. amcheck clean."),
            dg.AssetCheckSpec("drill_rto_under_target", asset=asset_key(target, "restore_drill"),
                              description="Every drill (verify, decrypt, restore, replay, check) took less than the "
                                          "RTO (limits.rto_seconds in the target's targets file)."),
        ],
        description="Restores the latest logical backup into a scratch database and the latest base backup chain into "
                    "a scratch cluster on a free port (pg_combinebackup, pg_verifybackup, WAL replay to a target time "
                    "between two canary rows) after checking every object's sha256; verifies the data, runs amcheck on "
                    "every btree index, measures the recovery time per phase, and removes the scratch copies.",
    )
    def restore_drill(context: dg.AssetExecutionContext, config: RestoreDrillConfig, database: DatabaseResource,
                      backups: BackupResource):
        database, backups = database.for_target(target), backups.for_target(target)
        store, key = backups.open_store(), backups.master_key()
        chosen = load_manifest(store, config.backup_id, key) if config.backup_id else None
        present = {chosen["kind"]} if chosen else {m.get("kind") for m in read_verified(context, store, key).backups}
        results: dict[str, Any] = {}
        if (config.logical or chosen) and "logical" in present:
            results["logical"] = drill(database.target_url, store, key, backup_id=config.backup_id or None,
                                       bin_dir=backups.bin_dir, staging_root=backups.staging_root,
                                       production=database.is_production, allow_production=config.allow_production)
        if (config.physical or chosen) and present & set(PHYSICAL_KINDS):
            results["physical"] = physical_drill(database.target_url, store, key, backup_id=config.backup_id or None,
                                                 bin_dir=backups.bin_dir, pitr=config.pitr, spool=backups.wal_spool)
        if not results:
            raise dg.Failure(f"there is no backup to drill in {store.describe()}: materialize logical_backup or "
                             "base_backup first")
        metadata: dict[str, Any] = {}
        problems: list[str] = []
        for kind, result in results.items():
            context.log.info(f"{kind} drill of {result.backup_id}: {result.rto_seconds} s, phases {result.phases}")
            metadata[f"{kind}_backup_id"] = dg.MetadataValue.text(result.backup_id)
            metadata[f"{kind}_rto_seconds"] = dg.MetadataValue.float(result.rto_seconds)
            for name, value in result.phases.items():
                metadata[f"{kind}_phase_{name}_seconds"] = dg.MetadataValue.float(value)
            metadata[f"{kind}_rows_checked"] = dg.MetadataValue.int(result.rows_checked)
            metadata[f"{kind}_indexes_checked"] = dg.MetadataValue.int(result.indexes_checked)
            problems += [f"{kind}: {p}" for p in result.problems]
        if "physical" in results:
            metadata["physical_wal_files_replayed"] = dg.MetadataValue.int(results["physical"].wal_files_replayed)
            metadata["physical_target_time"] = dg.MetadataValue.text(results["physical"].target_time or "backup end")
            for note in results["physical"].notes:
                context.log.warning(note)
        rto = max(r.rto_seconds for r in results.values())
        rto_target = backups.limits.rto_seconds
        first = next(iter(results.values()))
        metadata.update({
            "backup_id": dg.MetadataValue.text(first.backup_id),
            "rto_seconds": dg.MetadataValue.float(rto),
            "tables_checked": dg.MetadataValue.int(sum(r.tables_checked for r in results.values())),
            "rows_checked": dg.MetadataValue.int(sum(r.rows_checked for r in results.values())),
            "indexes_checked": dg.MetadataValue.int(sum(r.indexes_checked for r in results.values())),
        })
        yield dg.MaterializeResult(metadata=metadata)
        yield dg.AssetCheckResult(check_name="drill_data_matches", passed=not problems,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  metadata={"problems": dg.MetadataValue.md(
                                      "\n".join(f"- {p}" for p in problems[:50]) or "none")})
        yield dg.AssetCheckResult(check_name="drill_rto_under_target",
                                  passed=rto < rto_target,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  metadata={"rto_seconds": dg.MetadataValue.float(rto),
                                            "target_seconds": dg.MetadataValue.float(float(rto_target))})

    return restore_drill

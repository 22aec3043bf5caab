"""``<target>/restore_drill`` (group ``restore``): the latest backup of each kind restored into a scratch copy,
compared with its manifest and timed, with its checks ``drill_data_matches`` (blocking) and
``drill_rto_under_target``."""


import dagster as dg
from pydantic import Field

from dbops.backup.manifest import load_manifest
from dbops.backup.physical import PHYSICAL_KINDS
from dbops.components.metadata import figures, table
from dbops.components.naming import asset_key, pool
from dbops.components.resources import BackupResource, DatabaseResource, read_verified
from dbops.redact import redact
from dbops.restore.drill import DrillResult, PhysicalDrillResult, drill, physical_drill

TABLE_ROWS = 500  # rows of a per-table metadata table at most (the tables that do not match come first)


class RestoreDrillConfig(dg.Config):
    backup_id: str = Field(default="", description="drill this backup only (default: the latest of each kind)")
    logical: bool = Field(default=True, description="drill the latest logical backup (if there is one)")
    physical: bool = Field(default=True, description="drill the latest base backup chain (if there is one)")
    pitr: bool = Field(default=True, description="physical: canary rows and WAL replay to a target time")
    allow_production: bool = Field(default=False, description="logical: restore the scratch copy on a production "
                                   "target's server anyway (its I/O and disk)")


def _phases(results: dict[str, DrillResult]) -> dg.MetadataValue:
    return table([{"drill": kind, "phase": name, "seconds": float(seconds)}
                  for kind, result in results.items() for name, seconds in result.phases.items()],
                 columns=["drill", "phase", "seconds"],
                 descriptions={"seconds": "wall time of the phase; their sum is the drill's RTO"})


def drill_metadata(results: dict[str, DrillResult], store_name: str) -> dict[str, dg.MetadataValue]:
    """Per drill (``logical_`` / ``physical_``): backup id, RTO (the keys the scorecard reads: ``logical_rto_seconds``,
    ``physical_rto_seconds``), what was checked, and its table of tables; then the phases of both as one table and
    the totals. Nothing not measured is shown: a physical drill without PITR has no target time."""
    metadata: dict[str, dg.MetadataValue] = {}
    for kind, result in results.items():
        metadata.update(figures({
            f"{kind}_backup_id": result.backup_id,
            f"{kind}_rto_seconds": float(result.rto_seconds),
            f"{kind}_tables_checked": result.tables_checked,
            f"{kind}_rows_checked": result.rows_checked,
            f"{kind}_indexes_checked": result.indexes_checked,
            f"{kind}_problems": len(result.problems),
        }))
        if kind == "logical":
            metadata["logical_comparison"] = table(
                result.tables[:TABLE_ROWS], columns=["table", "rows_backed_up", "rows_restored", "result", "matches"],
                descriptions={"rows_backed_up": "rows in the manifest (the dump's snapshot)",
                              "rows_restored": "rows read back from the scratch copy",
                              "result": "match, rows differ, content differs (checksum), missing or extra"})
        else:
            metadata["physical_tables"] = table(result.tables[:TABLE_ROWS], columns=["table", "rows_restored"],
                                                descriptions={"rows_restored": "rows read back after WAL replay"})
        if isinstance(result, PhysicalDrillResult):
            metadata.update(figures({
                "physical_chain": " + ".join(result.chain),
                "physical_wal_files_replayed": result.wal_files_replayed,
                "physical_pitr": result.target_time is not None,
                "physical_target_time": result.target_time,  # left out without PITR: replayed to the backup's end
            }))
    first = next(iter(results.values()))
    metadata.update(figures({
        "backup_id": first.backup_id,
        "store": redact(store_name),
        "rto_seconds": max(float(r.rto_seconds) for r in results.values()),
        "tables_checked": sum(r.tables_checked for r in results.values()),
        "rows_checked": sum(r.rows_checked for r in results.values()),
        "indexes_checked": sum(r.indexes_checked for r in results.values()),
    }))
    metadata["phases"] = _phases(results)
    return metadata


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
        results: dict[str, DrillResult] = {}
        if (config.logical or chosen) and "logical" in present:
            results["logical"] = drill(database.target_url, store, key, backup_id=config.backup_id or None,
                                       bin_dir=backups.bin_dir, staging_root=backups.staging_root,
                                       production=database.is_production, allow_production=config.allow_production,
                                       progress=context.log.info)
        if (config.physical or chosen) and present & set(PHYSICAL_KINDS):
            results["physical"] = physical_drill(database.target_url, store, key, backup_id=config.backup_id or None,
                                                 bin_dir=backups.bin_dir, pitr=config.pitr, spool=backups.wal_spool,
                                                 progress=context.log.info)
        if not results:
            raise dg.Failure(f"there is no backup to drill in {redact(store.describe())}: materialize logical_backup "
                             "or base_backup first")
        problems = [{"drill": kind, "problem": p} for kind, r in results.items() for p in r.problems]
        for result in results.values():
            for note in getattr(result, "notes", []):
                context.log.warning(note)
        rto = max(r.rto_seconds for r in results.values())
        rto_target = backups.limits.rto_seconds
        yield dg.MaterializeResult(metadata=drill_metadata(results, store.describe()))
        yield dg.AssetCheckResult(check_name="drill_data_matches", passed=not problems,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  metadata={**figures({
                                      "problems": len(problems),
                                      "tables_compared": sum(r.tables_checked for r in results.values()),
                                      "indexes_checked": sum(r.indexes_checked for r in results.values()),
                                  }), **({"mismatches": table(problems[:TABLE_ROWS], columns=["drill", "problem"])}
                                         if problems else {})})
        yield dg.AssetCheckResult(check_name="drill_rto_under_target",
                                  passed=rto < rto_target,
                                  severity=dg.AssetCheckSeverity.ERROR,
                                  metadata=figures({"rto_seconds": float(rto), "target_seconds": float(rto_target),
                                                    **{f"{k}_rto_seconds": float(r.rto_seconds)
                                                       for k, r in results.items()}}))

    return restore_drill

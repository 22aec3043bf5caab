"""``logical_backup`` and ``restore_drill``: a backup is only counted once a drill has restored it."""

from datetime import UTC, datetime

import dagster as dg

from dbops.backup.logical import logical_backup as take_logical_backup
from dbops.backup.manifest import latest
from dbops.defs.backup.resources import BackupResource
from dbops.defs.resources import DatabaseResource
from dbops.restore import drill


@dg.asset(
    group_name="backup",
    deps=["schema_migrations"],
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("backup_fresh", asset="logical_backup",
                                   description="The newest complete backup is younger than max_age_hours.")],
    description="pg_dump (custom format) in an exported snapshot, streamed through zstd and AES-256-GCM into the "
    "backup store; rows and a content checksum per table recorded in the signed manifest.",
)
def logical_backup(context: dg.AssetExecutionContext, database: DatabaseResource, backups: BackupResource):
    store = backups.open_store()
    step = {"next": 256 << 20}

    def progress(stored: int) -> None:
        if stored >= step["next"]:
            context.log.info(f"{stored >> 20} MiB stored")
            step["next"] += 256 << 20

    manifest = take_logical_backup(database.url, store, backups.master_key(), bin_dir=backups.bin_dir,
                                   progress=progress)
    newest = latest(store)
    age_hours = (datetime.now(UTC) - datetime.fromisoformat(newest["finished_at"])).total_seconds() / 3600
    yield dg.MaterializeResult(metadata={
        "backup_id": dg.MetadataValue.text(manifest["id"]),
        "store": dg.MetadataValue.text(store.describe()),
        "raw_bytes": dg.MetadataValue.int(manifest["raw_bytes"]),
        "stored_bytes": dg.MetadataValue.int(manifest["stored_bytes"]),
        "compression_ratio": dg.MetadataValue.float(round(manifest["raw_bytes"] / max(manifest["stored_bytes"], 1), 2)),
        "duration_seconds": dg.MetadataValue.float(manifest["duration_seconds"]),
        "tables": dg.MetadataValue.int(len(manifest["tables"])),
        "rows": dg.MetadataValue.int(sum(t["rows"] for t in manifest["tables"].values())),
        "key_id": dg.MetadataValue.text(manifest["encryption"]["key_id"]),
    })
    yield dg.AssetCheckResult(check_name="backup_fresh", passed=age_hours < backups.max_age_hours,
                              metadata={"age_hours": dg.MetadataValue.float(round(age_hours, 3)),
                                        "max_age_hours": dg.MetadataValue.float(backups.max_age_hours)})


@dg.asset(
    group_name="backup",
    deps=["logical_backup"],
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec("drill_data_matches", asset="restore_drill", blocking=True,
                          description="Rows and content checksums of every table equal the manifest; amcheck clean."),
        dg.AssetCheckSpec("drill_rto_under_target", asset="restore_drill",
                          description="The whole drill (verify, decrypt, restore, check) took less than the RTO."),
    ],
    description="Restores the latest backup into a scratch database after checking every object's sha256, compares "
    "rows and checksums with the manifest, runs amcheck on every btree index, measures the recovery time per phase, "
    "and drops the scratch database.",
)
def restore_drill(context: dg.AssetExecutionContext, database: DatabaseResource, backups: BackupResource):
    result = drill(database.url, backups.open_store(), backups.master_key(), bin_dir=backups.bin_dir)
    context.log.info(f"drill of {result.backup_id}: {result.rto_seconds} s, phases {result.phases}")
    yield dg.MaterializeResult(metadata={
        "backup_id": dg.MetadataValue.text(result.backup_id),
        "rto_seconds": dg.MetadataValue.float(result.rto_seconds),
        **{f"phase_{name}_seconds": dg.MetadataValue.float(value) for name, value in result.phases.items()},
        "tables_checked": dg.MetadataValue.int(result.tables_checked),
        "rows_checked": dg.MetadataValue.int(result.rows_checked),
        "indexes_checked": dg.MetadataValue.int(result.indexes_checked),
    })
    yield dg.AssetCheckResult(check_name="drill_data_matches", passed=result.data_matches,
                              severity=dg.AssetCheckSeverity.ERROR,
                              metadata={"problems": dg.MetadataValue.md(
                                  "\n".join(f"- {p}" for p in result.problems[:50]) or "none")})
    yield dg.AssetCheckResult(check_name="drill_rto_under_target",
                              passed=result.rto_seconds < backups.rto_target_seconds,
                              severity=dg.AssetCheckSeverity.ERROR,
                              metadata={"rto_seconds": dg.MetadataValue.float(result.rto_seconds),
                                        "target_seconds": dg.MetadataValue.float(backups.rto_target_seconds)})

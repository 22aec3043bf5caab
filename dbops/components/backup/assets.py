"""The backup group: ``logical_backup``, ``base_backup``, ``wal_archive`` and ``backup_retention``. A backup is only
counted once a drill has restored it (``restore_drill``, group ``restore``)."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from dbops.backup import wal
from dbops.backup.keys import MasterKey
from dbops.backup.logical import logical_backup as take_logical_backup
from dbops.backup.physical import PHYSICAL_KINDS
from dbops.backup.physical import base_backup as take_base_backup
from dbops.backup.retention import prune, rules
from dbops.backup.store import Store
from dbops.components.naming import asset_key, def_name, pool
from dbops.components.resources import BackupResource, DatabaseResource, read_verified


def _fresh(context: dg.AssetExecutionContext, store: Store, key: MasterKey, kinds: tuple[str, ...],
           max_age_hours: float, check: str, asset: dg.AssetKey) -> dg.AssetCheckResult:
    newest = [m for m in read_verified(context, store, key).backups if m.get("kind") in kinds]
    age_hours = None
    if newest:
        age_hours = (datetime.now(UTC) - datetime.fromisoformat(newest[-1]["finished_at"])).total_seconds() / 3600
    return dg.AssetCheckResult(check_name=check, asset_key=asset,
                               passed=age_hours is not None and age_hours < max_age_hours,
                               metadata={"age_hours": dg.MetadataValue.float(round(age_hours or -1.0, 3)),
                                         "max_age_hours": dg.MetadataValue.float(float(max_age_hours))})


def _progress(context: dg.AssetExecutionContext):  # type: ignore[no-untyped-def]
    step = {"next": 256 << 20}

    def progress(stored: int) -> None:
        if stored >= step["next"]:
            context.log.info(f"{stored >> 20} MiB stored")
            step["next"] += 256 << 20

    return progress


def _backup_metadata(manifest: dict[str, Any], store: Store) -> dict[str, dg.MetadataValue]:
    """What every backup reports: its id, where it went, its sizes and how long it took."""
    return {
        "backup_id": dg.MetadataValue.text(manifest["id"]),
        "store": dg.MetadataValue.text(store.describe()),
        "raw_bytes": dg.MetadataValue.int(manifest["raw_bytes"]),
        "stored_bytes": dg.MetadataValue.int(manifest["stored_bytes"]),
        "compression_ratio": dg.MetadataValue.float(round(manifest["raw_bytes"] / max(manifest["stored_bytes"], 1), 2)),
        "duration_seconds": dg.MetadataValue.float(manifest["duration_seconds"]),
    }


class LogicalBackupConfig(dg.Config):
    jobs: int = Field(default=0, description="0: one pg_dump stream (custom format, nothing staged locally); N > 0: "
                      "pg_dump --format=directory --jobs N, staging the dump files locally")


class BaseBackupConfig(dg.Config):
    kind: str = Field(default="full", description="full, or incremental (PostgreSQL 17+, on the previous backup)")


def _archive_metadata(status: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in status.items() if value is not None}


def build(target: str) -> dg.Definitions:
    """``target``'s backups: logical, base, the WAL archive (and its sensor), retention."""

    @dg.asset(
        key=asset_key(target, "logical_backup"),
        group_name="backup",
        deps=[asset_key(target, "schema_migrations")],
        kinds={"postgres"},
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec("backup_fresh", asset=asset_key(target, "logical_backup"),
                                       description="The newest complete backup is younger than "
                                       "limits.backup_max_age_hours.")],
        description="pg_dump (custom format, or directory format with jobs > 0) in an exported snapshot, streamed "
                    "through zstd and AES-256-GCM into the backup store; rows and a content checksum per table "
                    "recorded in the signed manifest.",
    )
    def logical_backup(context: dg.AssetExecutionContext, config: LogicalBackupConfig, database: DatabaseResource,
                       backups: BackupResource):
        database, backups = database.for_target(target), backups.for_target(target)
        store, key = backups.open_store(), backups.master_key()
        manifest = take_logical_backup(database.target_url, store, key, bin_dir=backups.bin_dir,
                                       progress=_progress(context), jobs=config.jobs or None,
                                       staging_root=backups.staging_root)
        yield dg.MaterializeResult(metadata={
            **_backup_metadata(manifest, store),
            "dump_format": dg.MetadataValue.text(manifest.get("dump_format", "custom")),
            "tables": dg.MetadataValue.int(len(manifest["tables"])),
            "rows": dg.MetadataValue.int(sum(t["rows"] for t in manifest["tables"].values())),
            "key_id": dg.MetadataValue.text(manifest["encryption"]["key_id"]),
        })
        yield _fresh(context, store, key, ("logical",), backups.limits.backup_max_age_hours, "backup_fresh",
                 asset_key(target, "logical_backup"))


    @dg.asset(
        key=asset_key(target, "base_backup"),
        group_name="backup",
        deps=[asset_key(target, "schema_migrations")],
        kinds={"postgres"},
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec("backup_fresh", asset=asset_key(target, "base_backup"),
                                       description="The newest complete base backup is younger than "
                                       "limits.backup_max_age_hours.")],
        description="pg_basebackup of the whole cluster (full, or incremental against the previous backup's manifest "
                    "on PostgreSQL 17+), streamed as one tar through zstd and AES-256-GCM; then the spooled WAL is "
                    "archived.",
    )
    def base_backup(context: dg.AssetExecutionContext, config: BaseBackupConfig, database: DatabaseResource,
                    backups: BackupResource):
        database, backups = database.for_target(target), backups.for_target(target)
        if config.kind not in PHYSICAL_KINDS:
            raise dg.Failure(f"base_backup kind {config.kind!r} is not one of {', '.join(PHYSICAL_KINDS)}")
        store, key = backups.open_store(), backups.master_key()
        manifest = take_base_backup(database.target_url, store, key, incremental=config.kind == "incremental",
                                    bin_dir=backups.bin_dir, progress=_progress(context))
        pushed = wal.push_spool(store, key, backups.wal_spool) if backups.wal_spool else []
        context.log.info(f"{config.kind} base backup {manifest['id']}; {len(pushed)} WAL file(s) archived")
        yield dg.MaterializeResult(metadata={
            **_backup_metadata(manifest, store),
            "kind": dg.MetadataValue.text(manifest["kind"]),
            "parent": dg.MetadataValue.text(manifest["parent"] or "none"),
            "start_lsn": dg.MetadataValue.text(str(manifest["start_lsn"])),
            "end_lsn": dg.MetadataValue.text(str(manifest["end_lsn"])),
            "wal_files_archived": dg.MetadataValue.int(len(pushed)),
        })
        yield _fresh(context, store, key, PHYSICAL_KINDS, backups.limits.backup_max_age_hours, "backup_fresh",
                 asset_key(target, "base_backup"))


    @dg.asset(
        key=asset_key(target, "wal_archive"),
        group_name="backup",
        deps=[asset_key(target, "base_backup")],
        kinds={"postgres"},
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec("wal_archive_current", asset=asset_key(target, "wal_archive"),
                                       description="At most limits.wal_max_segments_behind finished WAL files are "
                                                   "missing from the archive, and the server's archiving is not "
                                                   "failing.")],
        description="Moves the WAL files the server's archive_command left in the spool into the backup store "
        "(encrypted), then measures the archive lag (RPO). The wal_archive_sensor observes the lag between runs.",
    )
    def wal_archive(context: dg.AssetExecutionContext, database: DatabaseResource, backups: BackupResource):
        database, backups = database.for_target(target), backups.for_target(target)
        most_behind = backups.limits.wal_max_segments_behind
        store = backups.open_store()
        pushed = wal.push_spool(store, backups.master_key(), backups.wal_spool) if backups.wal_spool else []
        status = wal.archive_status(database.target_url, store, backups.wal_spool)
        context.log.info(f"{len(pushed)} WAL file(s) archived; {status['segments_behind']} segment(s) behind")
        yield dg.MaterializeResult(metadata={"wal_files_archived_now": len(pushed), **_archive_metadata(status)})
        behind = status["segments_behind"]
        yield dg.AssetCheckResult(
            check_name="wal_archive_current",
            passed=status["archive_mode"] != "off" and behind is not None
            and behind <= most_behind and not status["failing"],
            metadata={"segments_behind": -1 if behind is None else behind, "failing": status["failing"],
                      "archive_mode": status["archive_mode"], "max_segments_behind": most_behind})


    @dg.sensor(
        name=def_name(target, "wal_archive_sensor"),
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Every 5 minutes, observes the WAL archive lag (segments behind, spool backlog, failures) as an "
        "observation of wal_archive (no run is launched).",
    )
    def wal_archive_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource,
                           backups: BackupResource) -> dg.SensorResult:
        database, backups = database.for_target(target), backups.for_target(target)
        status = wal.archive_status(database.target_url, backups.open_store(), backups.wal_spool)
        observation = dg.AssetObservation(asset_key=asset_key(target, "wal_archive"),
                                          metadata=_archive_metadata(status))
        return dg.SensorResult(asset_events=[observation])


    @dg.asset(
        key=asset_key(target, "backup_retention"),
        group_name="backup",
        deps=[asset_key(target, "logical_backup"), asset_key(target, "base_backup")],
        pool=pool(target),
        kinds={"postgres"},
        description="Deletes backups outside the retention rules (backup.keep_last / keep_days): logical "
        "backups and physical full chains, never a base an incremental or the PITR window needs, and the archived WAL "
        "older than the oldest kept base backup; also unfinished uploads older than a day. Only backups whose signed "
        "manifest verifies are counted or deleted: the others are reported and left alone.",
    )
    def backup_retention(context: dg.AssetExecutionContext, backups: BackupResource):
        backups = backups.for_target(target)
        keep_last, keep_days = rules(backups.backup_settings())
        result = prune(backups.open_store(), backups.master_key, keep_last, keep_days)
        for item in result.ignored:
            context.log.warning(f"{item} (left in place)")
        context.log.info(f"deleted {len(result.ids)} backup(s), {len(result.wal)} WAL file(s) and "
                         f"{len(result.unfinished)} unfinished upload(s)")
        return dg.MaterializeResult(metadata={
            "deleted_backups": dg.MetadataValue.int(len(result.ids)),
            "deleted_ids": dg.MetadataValue.text(", ".join(result.ids) or "none"),
            "deleted_wal_files": dg.MetadataValue.int(len(result.wal)),
            "removed_unfinished_uploads": dg.MetadataValue.int(len(result.unfinished)),
            "kept_backups": dg.MetadataValue.int(len(result.kept)),
            "ignored_backups": dg.MetadataValue.text("\n".join(str(i) for i in result.ignored) or "none"),
            "keep_last": dg.MetadataValue.int(keep_last or 0),
            "keep_days": dg.MetadataValue.float(keep_days or 0.0),
        })

    return dg.Definitions(assets=[logical_backup, base_backup, wal_archive, backup_retention],
                          sensors=[wal_archive_sensor])

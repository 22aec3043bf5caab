"""The backup group: ``logical_backup``, ``base_backup``, ``wal_archive``, ``backup_retention`` and
``restore_drill``. A backup is only counted once a drill has restored it."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from dbops.backup import wal
from dbops.backup.keys import MasterKey
from dbops.backup.logical import logical_backup as take_logical_backup
from dbops.backup.manifest import Listing, load_manifest, read_store
from dbops.backup.physical import PHYSICAL_KINDS
from dbops.backup.physical import base_backup as take_base_backup
from dbops.backup.retention import prune, rules_from_env
from dbops.backup.store import Store
from dbops.defs.backup.resources import BackupResource
from dbops.defs.resources import DatabaseResource
from dbops.restore import drill
from dbops.restore.physical import physical_drill


def _read(context: dg.AssetExecutionContext, store: Store, key: MasterKey) -> Listing:
    """The store's verified backups; each manifest that does not verify is logged (and left alone)."""
    listing = read_store(store, key)
    for item in listing.ignored:
        context.log.warning(str(item))
    return listing


def _fresh(context: dg.AssetExecutionContext, store: Store, key: MasterKey, kinds: tuple[str, ...],
           max_age_hours: float, check: str, asset: str) -> dg.AssetCheckResult:
    newest = [m for m in _read(context, store, key).backups if m.get("kind") in kinds]
    age_hours = None
    if newest:
        age_hours = (datetime.now(UTC) - datetime.fromisoformat(newest[-1]["finished_at"])).total_seconds() / 3600
    return dg.AssetCheckResult(check_name=check, asset_key=asset,
                               passed=age_hours is not None and age_hours < max_age_hours,
                               metadata={"age_hours": dg.MetadataValue.float(round(age_hours or -1.0, 3)),
                                         "max_age_hours": dg.MetadataValue.float(max_age_hours)})


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


@dg.asset(
    group_name="backup",
    deps=["schema_migrations"],
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("backup_fresh", asset="logical_backup",
                                   description="The newest complete backup is younger than max_age_hours.")],
    description="pg_dump (custom format, or directory format with jobs > 0) in an exported snapshot, streamed through "
    "zstd and AES-256-GCM into the backup store; rows and a content checksum per table recorded in the signed "
    "manifest.",
)
def logical_backup(context: dg.AssetExecutionContext, config: LogicalBackupConfig, database: DatabaseResource,
                   backups: BackupResource):
    store, key = backups.open_store(), backups.master_key()
    manifest = take_logical_backup(database.url, store, key, bin_dir=backups.bin_dir,
                                   progress=_progress(context), jobs=config.jobs or None,
                                   staging_root=backups.staging_root)
    yield dg.MaterializeResult(metadata={
        **_backup_metadata(manifest, store),
        "dump_format": dg.MetadataValue.text(manifest.get("dump_format", "custom")),
        "tables": dg.MetadataValue.int(len(manifest["tables"])),
        "rows": dg.MetadataValue.int(sum(t["rows"] for t in manifest["tables"].values())),
        "key_id": dg.MetadataValue.text(manifest["encryption"]["key_id"]),
    })
    yield _fresh(context, store, key, ("logical",), backups.max_age_hours, "backup_fresh", "logical_backup")


class BaseBackupConfig(dg.Config):
    kind: str = Field(default="full", description="full, or incremental (PostgreSQL 17+, on the previous backup)")


@dg.asset(
    group_name="backup",
    deps=["schema_migrations"],
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("backup_fresh", asset="base_backup",
                                   description="The newest complete base backup is younger than max_age_hours.")],
    description="pg_basebackup of the whole cluster (full, or incremental against the previous backup's manifest on "
    "PostgreSQL 17+), streamed as one tar through zstd and AES-256-GCM; then the spooled WAL is archived.",
)
def base_backup(context: dg.AssetExecutionContext, config: BaseBackupConfig, database: DatabaseResource,
                backups: BackupResource):
    if config.kind not in PHYSICAL_KINDS:
        raise dg.Failure(f"base_backup kind {config.kind!r} is not one of {', '.join(PHYSICAL_KINDS)}")
    store, key = backups.open_store(), backups.master_key()
    manifest = take_base_backup(database.url, store, key, incremental=config.kind == "incremental",
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
    yield _fresh(context, store, key, PHYSICAL_KINDS, backups.max_age_hours, "backup_fresh", "base_backup")


def _archive_metadata(status: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in status.items() if value is not None}


@dg.asset(
    group_name="backup",
    deps=["base_backup"],
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("wal_archive_current", asset="wal_archive",
                                   description="At most max_wal_segments_behind finished WAL files are missing from "
                                   "the archive, and the server's archiving is not failing.")],
    description="Moves the WAL files the server's archive_command left in the spool into the backup store "
    "(encrypted), then measures the archive lag (RPO). The wal_archive_sensor observes the lag between runs.",
)
def wal_archive(context: dg.AssetExecutionContext, database: DatabaseResource, backups: BackupResource):
    store = backups.open_store()
    pushed = wal.push_spool(store, backups.master_key(), backups.wal_spool) if backups.wal_spool else []
    status = wal.archive_status(database.url, store, backups.wal_spool)
    context.log.info(f"{len(pushed)} WAL file(s) archived; {status['segments_behind']} segment(s) behind")
    yield dg.MaterializeResult(metadata={"wal_files_archived_now": len(pushed), **_archive_metadata(status)})
    behind = status["segments_behind"]
    yield dg.AssetCheckResult(
        check_name="wal_archive_current",
        passed=status["archive_mode"] != "off" and behind is not None
        and behind <= backups.max_wal_segments_behind and not status["failing"],
        metadata={"segments_behind": -1 if behind is None else behind, "failing": status["failing"],
                  "archive_mode": status["archive_mode"], "max_segments_behind": backups.max_wal_segments_behind})


@dg.sensor(
    name="wal_archive_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 5 minutes, observes the WAL archive lag (segments behind, spool backlog, failures) as an "
    "observation of wal_archive (no run is launched).",
)
def wal_archive_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource,
                       backups: BackupResource) -> dg.SensorResult:
    status = wal.archive_status(database.url, backups.open_store(), backups.wal_spool)
    observation = dg.AssetObservation(asset_key="wal_archive", metadata=_archive_metadata(status))
    return dg.SensorResult(asset_events=[observation])


@dg.asset(
    group_name="backup",
    deps=["logical_backup", "base_backup"],
    kinds={"postgres"},
    description="Deletes backups outside the retention rules (DBOPS_BACKUP_KEEP_LAST / _KEEP_DAYS): logical "
    "backups and physical full chains, never a base an incremental or the PITR window needs, and the archived WAL "
    "older than the oldest kept base backup; also unfinished uploads older than a day. Only backups whose signed "
    "manifest verifies are counted or deleted: the others are reported and left alone.",
)
def backup_retention(context: dg.AssetExecutionContext, backups: BackupResource):
    keep_last, keep_days = rules_from_env()
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


class RestoreDrillConfig(dg.Config):
    backup_id: str = Field(default="", description="drill this backup only (default: the latest of each kind)")
    logical: bool = Field(default=True, description="drill the latest logical backup (if there is one)")
    physical: bool = Field(default=True, description="drill the latest base backup chain (if there is one)")
    pitr: bool = Field(default=True, description="physical: canary rows and WAL replay to a target time")


@dg.asset(
    group_name="backup",
    deps=["logical_backup", "base_backup"],
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec("drill_data_matches", asset="restore_drill", blocking=True,
                          description="Logical: rows and content checksums of every table equal the manifest. "
                          "Physical: pg_verifybackup passes and the PITR canaries are right. amcheck clean."),
        dg.AssetCheckSpec("drill_rto_under_target", asset="restore_drill",
                          description="Every drill (verify, decrypt, restore, replay, check) took less than the RTO."),
    ],
    description="Restores the latest logical backup into a scratch database and the latest base backup chain into a "
    "scratch cluster on a free port (pg_combinebackup, pg_verifybackup, WAL replay to a target time between two "
    "canary rows) after checking every object's sha256; verifies the data, runs amcheck on every btree index, "
    "measures the recovery time per phase, and removes the scratch copies.",
)
def restore_drill(context: dg.AssetExecutionContext, config: RestoreDrillConfig, database: DatabaseResource,
                  backups: BackupResource):
    store, key = backups.open_store(), backups.master_key()
    chosen = load_manifest(store, config.backup_id, key) if config.backup_id else None
    present = {chosen["kind"]} if chosen else {m.get("kind") for m in _read(context, store, key).backups}
    results: dict[str, Any] = {}
    if (config.logical or chosen) and "logical" in present:
        results["logical"] = drill(database.url, store, key, backup_id=config.backup_id or None,
                                   bin_dir=backups.bin_dir, staging_root=backups.staging_root)
    if (config.physical or chosen) and present & set(PHYSICAL_KINDS):
        results["physical"] = physical_drill(database.url, store, key, backup_id=config.backup_id or None,
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
                              passed=rto < backups.rto_target_seconds,
                              severity=dg.AssetCheckSeverity.ERROR,
                              metadata={"rto_seconds": dg.MetadataValue.float(rto),
                                        "target_seconds": dg.MetadataValue.float(backups.rto_target_seconds)})

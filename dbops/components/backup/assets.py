"""The backup group: ``logical_backup``, ``base_backup``, ``wal_archive`` and ``backup_retention``. A backup is only
counted once a drill has restored it (``restore_drill``, group ``restore``)."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from dbops.backup import wal
from dbops.backup.keys import MasterKey
from dbops.backup.logical import logical_backup as take_logical_backup
from dbops.backup.manifest import MANIFEST, object_key
from dbops.backup.physical import PHYSICAL_KINDS
from dbops.backup.physical import base_backup as take_base_backup
from dbops.backup.retention import PrunePlan, prune, rules
from dbops.backup.store import Store
from dbops.components.metadata import figures, path, table
from dbops.components.naming import asset_key, def_name, pool
from dbops.components.resources import BackupResource, DatabaseResource, read_verified
from dbops.redact import redact

TABLE_ROWS = 500  # rows of a metadata table at most (a directory dump of a big schema has a file per table)


def _fresh(context: dg.AssetExecutionContext, store: Store, key: MasterKey, kinds: tuple[str, ...],
           max_age_hours: float, check: str, asset: dg.AssetKey) -> dg.AssetCheckResult:
    """The newest verified backup of ``kinds`` is younger than ``max_age_hours``; no backup at all fails, saying so
    (its age is then not measured: left out, never -1)."""
    newest = [m for m in read_verified(context, store, key).backups if m.get("kind") in kinds]
    age_hours = None
    if newest:
        age_hours = (datetime.now(UTC) - datetime.fromisoformat(newest[-1]["finished_at"])).total_seconds() / 3600
    return dg.AssetCheckResult(check_name=check, asset_key=asset,
                               passed=age_hours is not None and age_hours < max_age_hours,
                               metadata=figures({
                                   "age_hours": age_hours,
                                   "max_age_hours": float(max_age_hours),
                                   "newest_backup_id": newest[-1]["id"] if newest else None,
                                   "reason": None if newest else f"no verified {' or '.join(kinds)} backup in "
                                                                 f"{redact(store.describe())}",
                               }))


def _objects(manifest: dict[str, Any]) -> dg.MetadataValue:
    """The backup's stored objects (the biggest first, at most TABLE_ROWS): name, plain and stored bytes, sha256."""
    biggest = sorted(manifest["objects"], key=lambda o: -int(o["size"]))[:TABLE_ROWS]
    return table([{"name": o["name"], "raw_bytes": o.get("raw_size"), "stored_bytes": o["size"],
                   "sha256": o["sha256"]} for o in biggest],
                 columns=["name", "raw_bytes", "stored_bytes", "sha256"],
                 descriptions={"raw_bytes": "before compression and encryption",
                               "stored_bytes": "as stored (zstd, AES-256-GCM)"})


def _backup_metadata(manifest: dict[str, Any], store: Store) -> dict[str, dg.MetadataValue]:
    """What every backup reports: its id, where it went (the store, the backup's folder and signed manifest as
    paths), its sizes, objects and how long it took."""
    backup_id = manifest["id"]
    return {
        **figures({
            "backup_id": backup_id,
            "store": redact(store.describe()),
            "raw_bytes": manifest["raw_bytes"],
            "stored_bytes": manifest["stored_bytes"],
            "compression_ratio": manifest["raw_bytes"] / manifest["stored_bytes"] if manifest["stored_bytes"] else None,
            "duration_seconds": float(manifest["duration_seconds"]),
            "server_version": manifest.get("server_version"),
            "key_id": manifest["encryption"]["key_id"],
            "object_count": len(manifest["objects"]),
        }),
        "backup_directory": path(store.location(object_key(backup_id, MANIFEST).rsplit("/", 1)[0])),
        "manifest": path(store.location(object_key(backup_id, MANIFEST))),
        "objects": _objects(manifest),
    }


class LogicalBackupConfig(dg.Config):
    jobs: int = Field(default=0, description="0: one pg_dump stream (custom format, nothing staged locally); N > 0: "
                      "pg_dump --format=directory --jobs N, staging the dump files locally")


class BaseBackupConfig(dg.Config):
    kind: str = Field(default="full", description="full, or incremental (PostgreSQL 17+, on the previous backup)")


def _archive_metadata(status: dict[str, Any], spool: Any = None) -> dict[str, dg.MetadataValue]:
    """The archive lag (:func:`dbops.backup.wal.archive_status`) as metadata: what was not measured (no WAL stored
    yet, never archived) is left out; the spool as a path."""
    return {**figures(status), **({"wal_spool": path(spool)} if spool else {})}


def _retention_metadata(result: PrunePlan, keep_last: int | None, keep_days: float | None
                        ) -> dict[str, dg.MetadataValue]:
    """Counts, the rules (a rule not set is left out), and one table of every backup looked at: kept, deleted, or
    ignored (its manifest does not verify: left in place)."""
    rows = [{"backup_id": m["id"], "kind": m.get("kind", "logical"), "finished_at": m.get("finished_at"),
             "parent": m.get("parent"), "action": action, "stored_bytes": m.get("stored_bytes")}
            for action, manifests in (("deleted", result.backups), ("kept", result.kept)) for m in manifests]
    rows.sort(key=lambda r: (r["finished_at"] or "", r["backup_id"]))
    rows += [{"backup_id": i.backup_id, "action": "ignored", "reason": i.reason} for i in result.ignored]
    return {
        **figures({
            "deleted_backups": len(result.ids),
            "kept_backups": len(result.kept),
            "ignored_backups": len(result.ignored),
            "deleted_wal_files": len(result.wal),
            "oldest_deleted_wal": result.wal[0] if result.wal else None,
            "newest_deleted_wal": result.wal[-1] if result.wal else None,
            "removed_unfinished_uploads": len(result.unfinished),
            "keep_last": keep_last,
            "keep_days": float(keep_days) if keep_days is not None else None,
        }),
        "backups": table(rows, columns=["backup_id", "kind", "finished_at", "parent", "action", "stored_bytes",
                                        "reason"],
                         descriptions={"action": "kept, deleted, or ignored (manifest does not verify: left alone)"}),
    }


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
                                       progress=context.log.info, jobs=config.jobs or None,
                                       staging_root=backups.staging_root)
        rows = sum(t["rows"] for t in manifest["tables"].values())
        directory = manifest.get("dump_format") == "directory"
        yield dg.MaterializeResult(metadata={
            **_backup_metadata(manifest, store),
            **figures({
                "dump_format": manifest.get("dump_format", "custom"),
                "jobs": manifest.get("jobs", 1),
                "tables": len(manifest["tables"]),
                "rows": rows,
                "dagster/row_count": rows,  # the rows the backup holds, counted in its snapshot
            }),
            **({"staging": path(backups.staging_root)} if directory else {}),
            "table_figures": table([{"table": name, "rows": t["rows"], "row_hash": t.get("hash", "text")}
                                    for name, t in list(manifest["tables"].items())[:TABLE_ROWS]],
                                   columns=["table", "rows", "row_hash"],
                                   descriptions={"rows": "rows in the dump's snapshot (a drill compares them)",
                                                 "row_hash": "how the content checksum hashes a row"}),
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
                                    bin_dir=backups.bin_dir, progress=context.log.info)
        if backups.wal_spool:
            context.log.info(f"moving the WAL spool {backups.wal_spool} into the store")
        pushed = wal.push_spool(store, key, backups.wal_spool) if backups.wal_spool else []
        context.log.info(f"{config.kind} base backup {manifest['id']} done; {len(pushed)} WAL file(s) archived")
        yield dg.MaterializeResult(metadata={
            **_backup_metadata(manifest, store),
            **figures({
                "kind": manifest["kind"],
                "parent": manifest["parent"],  # an incremental's base; left out for a full backup
                "timeline": manifest.get("timeline"),
                "start_lsn": manifest.get("start_lsn"),
                "end_lsn": manifest.get("end_lsn"),
                "start_wal_file": manifest.get("start_wal_file"),
                "tar_members": manifest.get("tar_members"),
                "wal_files_archived": len(pushed),
            }),
            **({"wal_spool": path(backups.wal_spool)} if backups.wal_spool else {}),
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
        behind = status["segments_behind"]
        context.log.info(f"{len(pushed)} WAL file(s) archived; "
                         + (f"{behind} segment(s) behind" if behind is not None else "no WAL in the store yet"))
        yield dg.MaterializeResult(metadata={**figures({"wal_files_archived_now": len(pushed)}),
                                             **_archive_metadata(status, backups.wal_spool)})
        reason = ("WAL archiving is off on the server (archive_mode = off)" if status["archive_mode"] == "off"
                  else "no WAL file is in the store yet: the lag cannot be measured" if behind is None
                  else "the server's last archive attempt failed (pg_stat_archiver)" if status["failing"]
                  else f"{behind} finished WAL file(s) not archived, more than {most_behind}"
                  if behind > most_behind else None)
        yield dg.AssetCheckResult(
            check_name="wal_archive_current",
            passed=reason is None,
            metadata=figures({"segments_behind": behind, "failing": status["failing"],
                              "archive_mode": status["archive_mode"], "max_segments_behind": most_behind,
                              "reason": reason}))


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
                                          metadata=_archive_metadata(status, backups.wal_spool))
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
                         f"{len(result.unfinished)} unfinished upload(s); kept {len(result.kept)}")
        return dg.MaterializeResult(metadata=_retention_metadata(result, keep_last, keep_days))

    return dg.Definitions(assets=[logical_backup, base_backup, wal_archive, backup_retention],
                          sensors=[wal_archive_sensor])

"""Notice new or changed migration files of a target and request its ``schema_migrations`` run (off by default)."""

import hashlib
from pathlib import Path

import dagster as dg

from dbops.components.naming import asset_key, def_name
from dbops.components.resources import launch_target


def migrations_fingerprint(folder: Path) -> tuple[str, int]:
    """A digest of every migration file's name and content in ``folder``, and how many there are."""
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
    for path in files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16], len(files)


def build_new_migration_files(target: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=def_name(target, "new_migration_files"),
        # upstream(): with the rehearsal on, the same run rehearses first and its blocking check gates the migrate.
        asset_selection=dg.AssetSelection.assets(asset_key(target, "schema_migrations")).upstream(),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Requests a {target}/schema_migrations run (with its migration_rehearsal first when the "
        "rehearsal is on) when files in the target's migrations folder are added or changed.",
    )
    def new_migration_files(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        fingerprint, count = migrations_fingerprint(launch_target(target).migrations)
        if context.cursor == fingerprint:
            return dg.SkipReason(f"{target}: {count} migration files, unchanged")
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"{target}-migrations-{fingerprint}")],
                               cursor=fingerprint)

    return new_migration_files

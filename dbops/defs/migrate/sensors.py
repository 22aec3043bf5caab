"""Notice new or changed migration files and request a ``schema_migrations`` run (off by default)."""

import hashlib

import dagster as dg

from dbops.defs.resources import launch_settings


def migrations_fingerprint() -> tuple[str, int]:
    """A digest of every migration file's name and content, and how many there are."""
    folder = launch_settings().migrations_dir
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else []
    for path in files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16], len(files)


@dg.sensor(
    # upstream(): with the rehearsal on, the same run rehearses first and its blocking check gates the migrate.
    asset_selection=dg.AssetSelection.assets("schema_migrations").upstream(),
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests a schema_migrations run (with migration_rehearsal first when the rehearsal is on) when "
    "files in sql/migrations are added or changed.",
)
def new_migration_files(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    fingerprint, count = migrations_fingerprint()
    if context.cursor == fingerprint:
        return dg.SkipReason(f"{count} migration files, unchanged")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"migrations-{fingerprint}")],
        cursor=fingerprint,
    )

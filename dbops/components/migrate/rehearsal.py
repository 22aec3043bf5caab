"""``<target>/migration_rehearsal``: the pending migrations run first on the latest backup, restored into a scratch
copy.

When the rehearsal is on (``DBOPS_REHEARSAL``, read when the definitions are built, default ``on``),
``schema_migrations`` depends on it and its blocking check ``rehearsal_safe`` keeps a dangerous migration from running
in production in the same run. The rehearsal reads the newest backup from the store but does not depend on
``logical_backup`` (which depends on ``schema_migrations``): the graph stays acyclic.
"""

import dagster as dg

from dbops.components import metadata as mt
from dbops.components.naming import asset_key, pool
from dbops.components.resources import BackupResource, DatabaseResource, MigrationsResource
from dbops.migrate.rehearsal import RehearsalReport, Thresholds, rehearse


def _metadata(report: RehearsalReport, thresholds: Thresholds) -> dict[str, dg.MetadataValue]:
    judged = [m for m in report.migrations if not m.in_production]
    return {
        **mt.figures({
            "pending_count": len(report.pending),
            "rehearsed_count": len(report.migrations),
            "unsafe_count": sum(not m.safe for m in judged),
            # nothing rehearsed: no duration or lock was measured (left out, not 0)
            "max_migration_seconds": max((float(m.seconds) for m in judged), default=None),
            "max_access_exclusive_seconds": max((float(m.max_exclusive_seconds) for m in judged), default=None),
            "rewritten_tables": sum(1 for m in judged for r in m.rewrites if r.kind == "table"),
            "rewritten_bytes": sum(m.rewritten_bytes for m in judged),
            "restore_seconds": float(report.restore_seconds) if report.rehearsed else None,
            "total_seconds": float(report.total_seconds),
            "large_table_bytes": thresholds.large_table_bytes,
            "max_lock_seconds": float(thresholds.max_exclusive_seconds),
            # the query replay, undo and compatibility checks; None where nothing was rehearsed
            "replayed_statements": report.replay.planned if report.replay is not None else None,
            "broken_statements": len(report.replay.broken) if report.replay is not None else None,
            "plan_regressions": len(report.replay.regressions) if report.replay is not None else None,
            "undo_rehearsed": sum(m.undo is not None for m in judged) if report.rehearsed else None,
            "undo_failed": sum(m.undo is not None and not m.undo.passed for m in judged) if report.rehearsed
            else None,
            "breaking_migrations": sum(c.breaking for c in report.compat.values()) if report.compat else None,
        }),
        "verdict": dg.MetadataValue.text(report.verdict),
        "backup_id": dg.MetadataValue.text(report.backup_id or "none"),
        "note": dg.MetadataValue.text(report.note or "rehearsed"),
        "report": dg.MetadataValue.md(report.markdown()),
    }


def build_rehearsal(target: str) -> dg.AssetsDefinition:
    """``target``'s rehearsal asset and its blocking check ``rehearsal_safe``."""

    @dg.asset(
        key=asset_key(target, "migration_rehearsal"),
        group_name="migrate",
        kinds={"postgres", "sql"},
        pool=pool(target),
        check_specs=[dg.AssetCheckSpec(
            "rehearsal_safe", asset=asset_key(target, "migration_rehearsal"), blocking=True,
            description="On a restored copy of production, no pending migration holds ACCESS EXCLUSIVE on a large "
                        "table longer than allowed, rewrites a large table, fails (or fails a dbops:assert), breaks a "
                        "statement production runs, or has an undo file that does not undo it. Blocks "
                        "schema_migrations in the same run; plan regressions and changes breaking for running "
                        "application versions are warnings.",
        )],
        description="Restores the newest logical backup into a scratch database, applies the pending migrations there "
        "while sampling pg_locks and comparing relfilenodes, and reports per migration its duration, strongest lock "
        "per table and how long it was held, and the tables it rewrote; plans production's top statements before and "
        "after, runs each U undo file up -> undo -> up, and classifies each file's backward compatibility. The "
        "scratch copy is dropped afterwards.",
    )
    def migration_rehearsal(
        context: dg.AssetExecutionContext, database: DatabaseResource, migrations: MigrationsResource,
        backups: BackupResource,
    ) -> dg.MaterializeResult:
        database, migrations, backups = (database.for_target(target), migrations.for_target(target),
                                         backups.for_target(target))
        thresholds = migrations.rehearsal_thresholds()
        server = migrations.rehearsal_server(database.target_url)
        context.log.info("rehearsing the pending migrations on a scratch copy restored from the newest backup")
        report = rehearse(database.target_url, backups.open_store(), backups.master_key, migrations.path, thresholds,
                          server_url=server, staging_root=backups.staging_root,
                          exclude_roles=migrations.exclude_roles(), **migrations.options())
        if report.rehearsed and database.is_production and server == database.target_url:
            context.log.warning("the rehearsal copy was restored on the production server (its I/O and disk): set "
                                "DBOPS_REHEARSAL_SERVER_URL to restore it elsewhere")
        for item in report.migrations:
            context.log.info(f"rehearsed {item.script} in {item.seconds:.2f} s: "
                             + ("; ".join(item.problems) if item.problems else "safe"))
        problems, warnings = report.problems, report.warnings
        if report.note and report.note not in warnings:
            context.log.info(report.note)
        for problem in report.replay_problems:  # the migrations' own were logged with each above
            context.log.error(problem)
        for warning in warnings:
            context.log.warning(warning)
        # Problems fail the check as ERROR (blocking schema_migrations); warnings alone (plan regressions, breaking
        # changes, nothing rehearsed or replayed) fail it as WARN, which Dagster does not block on.
        return dg.MaterializeResult(
            metadata=_metadata(report, thresholds),
            check_results=[dg.AssetCheckResult(
                check_name="rehearsal_safe",
                passed=not problems and not warnings,
                severity=dg.AssetCheckSeverity.ERROR if problems else dg.AssetCheckSeverity.WARN,
                description="; ".join(problems or warnings) if problems or warnings
                else (report.note or "every pending migration is safe"),
                metadata={
                    "unsafe_count": dg.MetadataValue.int(sum(not m.safe for m in report.migrations)),
                    "problems": dg.MetadataValue.text("\n".join(problems) or "none"),
                    "warnings": dg.MetadataValue.text("\n".join(warnings) or "none"),
                },
            )],
        )

    return migration_rehearsal

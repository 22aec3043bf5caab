"""Flyway-compatible migrations: versioned and repeatable SQL files, Flyway's history table, squawk lint."""

from dbops.migrate.engine import (
    AppliedMigration,
    ApplyResult,
    MigrationInfo,
    Migrator,
    PlannedMigration,
    RepairResult,
    statements,
)
from dbops.migrate.files import MigrationError, ResolvedMigration, Version, flyway_checksum, resolve
from dbops.migrate.lint import DEFAULT_LINT_EXCLUDE, LintFinding, lint_files

__all__ = [
    "DEFAULT_LINT_EXCLUDE",
    "AppliedMigration",
    "ApplyResult",
    "LintFinding",
    "MigrationError",
    "MigrationInfo",
    "Migrator",
    "PlannedMigration",
    "RepairResult",
    "ResolvedMigration",
    "Version",
    "flyway_checksum",
    "lint_files",
    "resolve",
    "statements",
]

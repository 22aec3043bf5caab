"""Flyway-compatible migrations: versioned and repeatable SQL files, Flyway's history table, squawk lint."""

from dbops.migrate.baseline import BaselineRecord
from dbops.migrate.engine import (
    AppliedMigration,
    ApplyResult,
    MigrationInfo,
    Migrator,
    PlannedMigration,
    RepairResult,
    UndoResult,
    migrator_options,
    statements,
)
from dbops.migrate.files import MigrationError, ResolvedMigration, Version, flyway_checksum, resolve
from dbops.migrate.lint import DEFAULT_LINT_EXCLUDE, LintFinding, lint_files
from dbops.migrate.placeholders import Placeholders

__all__ = [
    "DEFAULT_LINT_EXCLUDE",
    "AppliedMigration",
    "BaselineRecord",
    "ApplyResult",
    "LintFinding",
    "MigrationError",
    "MigrationInfo",
    "Migrator",
    "Placeholders",
    "PlannedMigration",
    "RepairResult",
    "ResolvedMigration",
    "UndoResult",
    "Version",
    "flyway_checksum",
    "lint_files",
    "migrator_options",
    "resolve",
    "statements",
]

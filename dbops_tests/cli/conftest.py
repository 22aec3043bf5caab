"""Fixtures of the `dbops run` / `dbops ui` tests: a Dagster storage database of the test's own and a migrations
folder a test can break and repair."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbops.pg.connect import drop_database
from dbops_tests.conftest import MIGRATIONS_DIR


@pytest.fixture
def dagster_db(pg_server) -> Iterator[str]:
    """URL of a database for Dagster's storage, dropped after the test."""
    name = f"dagster_{uuid.uuid4().hex[:8]}"
    try:
        yield pg_server.url(name)
    finally:
        drop_database(pg_server.url(), name)


@pytest.fixture
def broken_migrations(tmp_path: Path) -> Path:
    """A copy of the reference migrations with one more whose SQL fails (``V900__broken.sql``)."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    (folder / "V900__broken.sql").write_text("SELECT * FROM no_such_table_anywhere;\n")
    return folder


def repair(folder: Path) -> None:
    """The broken migration made a valid one."""
    (folder / "V900__broken.sql").write_text("CREATE TABLE app.repaired (id int);\n")

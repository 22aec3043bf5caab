"""A small seeded database for integrity validation tests (real PostgreSQL, real seed, real migrations)."""

from __future__ import annotations

import pytest

from dbops.seed import seed

# 1,000 orders over 60 days: about 17 a day, enough for every rule to see rows in every partition.
SCALE = 0.01


@pytest.fixture
def seeded_db(migrated_db: str) -> str:
    seed(migrated_db, SCALE)
    return migrated_db


@pytest.fixture(autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test of this folder has a DBOPS_HOME of its own (a test may set another): the first partition cached
    there by one test (dbops.validate.start) is never another's, nor the checkout's ./.dbops."""
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path_factory.mktemp("dbops-home")))

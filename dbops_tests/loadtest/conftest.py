"""A migrated, lightly seeded database shared by the load test module (seeding once keeps the module fast)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import MIGRATIONS_DIR, new_database


@pytest.fixture(scope="module")
def seeded_url(pg_server: EmbeddedServer) -> Iterator[str]:
    from dbops.migrate import Migrator
    from dbops.pg.connect import drop_database
    from dbops.seed import seed

    server_url = pg_server.url("postgres")
    url = new_database(server_url)
    try:
        Migrator(url, MIGRATIONS_DIR).apply()
        seed(url, 0.02)
        yield url
    finally:
        drop_database(server_url, url.rsplit("/", 1)[1])

"""Resources shared by every lifecycle step. Secrets arrive through ``dg.EnvVar`` and are resolved at launch."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg

from dbops.pg.connect import check_url, connection
from dbops.redact import redact_url


class DatabaseResource(dg.ConfigurableResource):
    """The managed PostgreSQL database.

    ``production`` marks a target where destructive or heavy operations (load tests, scratch restores on the same
    server) must be explicitly allowed.
    """

    url: str
    production: bool = False

    @contextmanager
    def connect(self, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
        with connection(check_url(self.url), **kwargs) as conn:
            yield conn

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


def default_resources() -> dict[str, Any]:
    return {
        "database": DatabaseResource(
            url=dg.EnvVar("DBOPS_DATABASE_URL"),
            production=False,
        ),
    }

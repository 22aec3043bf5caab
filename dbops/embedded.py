"""The embedded server of `dbops db up`, started when dbops runs its own, with the managed and Dagster databases.

Every command that works on the managed database calls :func:`ensure_embedded` first; with an external database
(``DBOPS_DATABASE_URL``) it does nothing.
"""

from __future__ import annotations

import dataclasses

from dbops.pg.connect import ensure_database, parse_url
from dbops.settings import Settings
from dbops.settings.model import DAGSTER_DB_NAME

# Databases of the embedded server no application role has any business in: PUBLIC loses CONNECT and TEMPORARY.
CLOSED_DATABASES = ("postgres", DAGSTER_DB_NAME)


def ensure_embedded(settings: Settings) -> bool:
    """Start the embedded server if dbops runs its own, create every embedded target's and the ``dagster`` databases,
    and close
    ``postgres`` and ``dagster`` to PUBLIC (the Dagster storage user keeps CONNECT).

    This is the long-lived server of ``db up``: it never changes the permissions of a folder above DBOPS_HOME.
    """
    embedded = [t for t in settings.targets.values() if t.embedded]
    if not embedded:
        return False
    server = dataclasses.replace(settings.server(), widen_parents=False)
    started = server.start()
    admin = server.url("postgres")
    for target in embedded:
        ensure_database(admin, target.db_name)
    ensure_database(admin, DAGSTER_DB_NAME)
    storage_user = parse_url(settings.dagster_url()).user
    server.close_to_public(CLOSED_DATABASES, keep=(storage_user,) if storage_user else ())
    return started

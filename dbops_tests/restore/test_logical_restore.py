"""Logical restores and the drill's checks: a non-empty target is refused, and the two-connection verification of a
restored copy checks the same as one connection would."""

from __future__ import annotations

import pytest

from dbops.backup.figures import table_figures
from dbops.backup.keys import MasterKey
from dbops.backup.logical import logical_backup
from dbops.backup.store import LocalStore
from dbops.pg.connect import connection
from dbops.restore.drill import amcheck_all, verify_restored
from dbops.restore.logical import RestoreError, restore_logical


def test_restore_onto_a_non_empty_database_is_refused(seeded_small: str, local_store: LocalStore,
                                                      master_key: MasterKey) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key)
    with pytest.raises(RestoreError, match="is not empty"):
        restore_logical(local_store, master_key, manifest, seeded_small)


def test_parallel_verify_checks_the_same_as_one_connection(seeded_small: str) -> None:
    figures, indexes = verify_restored(seeded_small, connections=2)
    with connection(seeded_small) as conn:
        assert figures == table_figures(conn)
    assert indexes == amcheck_all(seeded_small) > 50

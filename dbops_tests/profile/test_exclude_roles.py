"""Maintenance roles (dumps, seeds, checks) can be left out of the query profile."""

from __future__ import annotations

from dbops.pg.connect import connection
from dbops.profile.statements import excluded_roles, take_snapshot


def test_statements_of_excluded_roles_are_left_out(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        user = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        every = [s.query for s in take_snapshot(conn).statements.values()]
        kept = [s.query for s in take_snapshot(conn, [user]).statements.values()]
    assert any("generate_series" in q for q in every)
    assert not any("generate_series" in q for q in kept)


def test_excluded_roles_come_from_the_environment() -> None:
    assert excluded_roles("postgres, dbops_owner,") == ["postgres", "dbops_owner"]
    assert excluded_roles("") == []

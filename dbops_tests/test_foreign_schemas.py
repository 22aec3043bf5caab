"""The test schemas dbops did not create (dbops_tests/foreign) build, seed and work as their teams use them."""

from __future__ import annotations

import psycopg
from psycopg import sql

from dbops_tests.foreign import ForeignSchema


def test_each_schema_has_what_a_team_database_has(foreign_db: tuple[ForeignSchema, str]) -> None:
    schema, url = foreign_db
    with psycopg.connect(url) as conn:
        for call in schema.definer_calls:
            conn.execute(call)
        for table in schema.partitioned:
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))
                                 ).fetchone()
            assert count is not None and count[0] > 1000
        kinds = conn.execute("""
            SELECT count(*) FILTER (WHERE t.typtype = 'd'), count(*) FILTER (WHERE t.typtype = 'e')
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = ANY(%s)""",
                             (list(schema.schemas),)).fetchone()
        assert kinds == (1, 1)
        features = conn.execute("""
            SELECT (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND n.nspname = ANY(%s)),
                   (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE p.prosecdef AND n.nspname = ANY(%s)),
                   (SELECT count(*) FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid
                     WHERE c.contype = 'f' AND r.relkind = 'p'),
                   (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'),
                   (SELECT count(*) FROM pg_namespace WHERE nspname = 'app'),
                   (SELECT count(*) FROM pg_tables WHERE tablename = 'flyway_schema_history')""",
                                (list(schema.schemas),) * 2).fetchone()
        triggers, definers, fks_onto_partitioned, public_tables, app, history = features  # type: ignore[misc]
        assert triggers >= 1 and definers >= 1 and fks_onto_partitioned >= 1 and public_tables >= 1
        assert app == 0 and history == 0

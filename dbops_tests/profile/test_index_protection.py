"""Which index of identical ones is proposed for dropping: never the one a constraint or a foreign key needs, and never
both of two copies."""

from __future__ import annotations

from dbops.pg.connect import connection
from dbops.profile.indexes import index_findings, list_indexes

DROPS = ("duplicate", "redundant", "unused")


def drops(url: str) -> dict[str, str]:
    with connection(url) as conn:
        return {f.index: f.kind for f in index_findings(conn) if f.kind in DROPS and f.index}


def test_of_two_unique_copies_the_one_a_foreign_key_references_stays(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        conn.execute("""
            CREATE TABLE public.codes (code text NOT NULL);
            CREATE UNIQUE INDEX codes_a ON public.codes (code);
            CREATE UNIQUE INDEX codes_b ON public.codes (code);
            CREATE TABLE public.uses (id int PRIMARY KEY, code text REFERENCES public.codes (code));
            CREATE INDEX uses_code_idx ON public.uses (code);
        """)
        referenced = conn.execute("SELECT conindid::regclass::text FROM pg_constraint WHERE conname = 'uses_code_fkey'")
        referenced = "public." + referenced.fetchone()[0].split(".")[-1]
        indexes = {i.qualified: i for i in list_indexes(conn)}
    assert any("uses_code_fkey" in b for b in indexes[referenced].backs)
    found = drops(fresh_db)
    other = ({"public.codes_a", "public.codes_b"} - {referenced}).pop()
    assert found.get(other) == "duplicate" and referenced not in found, found
    assert "public.uses_code_idx" not in found  # the foreign key's only index, unused though it is


def test_two_unused_copies_of_a_foreign_key_index_lose_one(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        conn.execute("""
            CREATE TABLE public.parents (id int PRIMARY KEY);
            CREATE TABLE public.children (id int PRIMARY KEY, parent_id int REFERENCES public.parents (id),
                                          note text);
            CREATE INDEX children_parent_a ON public.children (parent_id);
            CREATE INDEX children_parent_b ON public.children (parent_id);
            CREATE INDEX children_note_idx ON public.children (note);
        """)
    found = drops(fresh_db)
    assert found == {"public.children_parent_b": "duplicate", "public.children_note_idx": "unused"}, found


def test_a_partitions_own_foreign_key_is_checked_on_the_partition(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        conn.execute("""
            CREATE TABLE public.kinds (id int PRIMARY KEY);
            CREATE TABLE public.events (id int, kind_id int REFERENCES public.kinds (id), other_kind int,
                                        at date NOT NULL) PARTITION BY RANGE (at);
            CREATE TABLE public.events_a PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
            CREATE TABLE public.events_b PARTITION OF public.events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
            ALTER TABLE public.events_b ADD CONSTRAINT events_b_other_fkey FOREIGN KEY (other_kind)
                REFERENCES public.kinds (id);
        """)
        found = [(f.table, f.detail) for f in index_findings(conn) if f.kind == "unindexed_fk"]
        assert found == [("public.events", "foreign key events_kind_id_fkey (kind_id) has no index"),
                         ("public.events_b", "foreign key events_b_other_fkey (other_kind) has no index")], found
        conn.execute("CREATE INDEX events_kind_idx ON public.events (kind_id)")  # on the parent: every partition
        conn.execute("CREATE INDEX events_b_other_idx ON public.events_b (other_kind)")
        assert not [f for f in index_findings(conn) if f.kind == "unindexed_fk"]
    found = drops(fresh_db)
    assert "public.events_kind_idx" not in found and "public.events_b_other_idx" not in found, found

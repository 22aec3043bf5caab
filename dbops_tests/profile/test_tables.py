"""TableFacts facts on real PostgreSQL: sequences near exhaustion, dead tuples, bloat by pgstattuple or estimate."""

from __future__ import annotations

from dbops.pg.connect import connection
from dbops.profile.report import summary_lines
from dbops.profile.statements import build_profile
from dbops.profile.tables import table_facts


def test_table_facts(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        conn.execute("CREATE SEQUENCE small_seq MAXVALUE 100")
        conn.execute("SELECT setval('small_seq', 95)")
        conn.execute("CREATE SEQUENCE roomy_seq")
        conn.execute("CREATE TABLE churn (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO churn SELECT g, 'x' FROM generate_series(1, 5000) AS g")
        conn.execute("DELETE FROM churn WHERE id % 2 = 0")
        estimated = table_facts(conn)
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        exact = table_facts(conn)
    assert [s["sequence"] for s in estimated.sequences_in_danger] == ["public.small_seq"]
    assert 0 < estimated.xid_age < estimated.xid_left
    assert estimated.cache_hit_ratio is None or 0 <= estimated.cache_hit_ratio <= 1
    assert estimated.bloat_method == "estimate" and exact.bloat_method == "pgstattuple"
    churn = next(t for t in exact.tables if t["table"] == "public.churn")
    assert churn["bloat_ratio"] >= 0.3  # half the rows are dead tuples
    text = "\n".join(summary_lines(build_profile([], False), exact))
    assert "public.small_seq is 95% used" in text

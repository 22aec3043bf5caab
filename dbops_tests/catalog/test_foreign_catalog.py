"""The catalog of the two team databases (dbops_tests/foreign) and of the reference: domains with their checks, enums
with their labels in order, composite types, sequences, partitioned tables with their partitions' bounds and own keys
and indexes, and an ER diagram that draws the relationships of partitioned tables (never a partition as a table)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from psycopg import sql

from dbops.catalog.diff import diff
from dbops.catalog.docs import data_dictionary, dbml, mermaid_er
from dbops.catalog.introspect import snapshot
from dbops.components.catalog.assets import build_schema_catalog
from dbops.components.catalog.resources import CatalogResource
from dbops.components.naming import op_name
from dbops.components.resources import DatabaseResource
from dbops.migrate.history import HistoryTable
from dbops.pg.connect import connection
from dbops_tests.foreign import ForeignSchema

# What each team database declares (read from its schema.sql), to be found in its catalog.
TYPES = {
    "library": {
        "lending.isbn13": ("domain", "text", "^97[89][0-9]{10}$"),
        "lending.loan_status": ("enum", ["out", "returned", "lost"]),
        "lending.address": ("composite", [("street", "text"), ("city", "text"), ("postcode", "text")]),
    },
    "telemetry": {
        "iot.device_kind": ("enum", ["thermometer", "hygrometer", "meter"]),
        "iot.percent": ("domain", "numeric(5,2)", "VALUE >= 0"),
    },
}
SEQUENCES = {  # sequence -> (type, owned by, identity)
    "library": {"public.branches_id_seq": ("integer", "public.branches.id", False),
                "lending.members_id_seq": ("bigint", "lending.members.id", True),
                "lending.loans_id_seq": ("bigint", "lending.loans.id", True)},
    "telemetry": {"iot.alarms_id_seq": ("bigint", "iot.alarms.id", False),
                  "public.site_outages_id_seq": ("integer", "public.site_outages.id", False)},
}
RELATIONSHIPS = {  # Mermaid lines: foreign keys from and onto the partitioned table, and one in public
    "library": ['lending_members ||--o{ lending_loans : "member_id"', 'lending_books ||--o{ lending_loans : "book_id"',
                'lending_loans ||--o{ lending_loan_events : "loan_id,loaned_on"',
                'public_branches ||--o{ lending_members : "branch_id"'],
    "telemetry": ['iot_devices ||--o{ iot_readings : "device_id"',
                  'iot_readings ||--o{ iot_alarms : "device_id,recorded_at"',
                  'public_sites ||--o{ public_site_outages : "site_code"'],
}


def partitions_in_database(conn, table: str) -> list[tuple[str, str]]:  # noqa: ANN001
    """(partition, bound) read straight from pg_inherits, to compare the catalog with."""
    return conn.execute(
        "SELECT n.nspname || '.' || c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i"
        " JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE i.inhparent = %s::regclass ORDER BY 1", (table,)).fetchall()


def test_catalog_of_a_team_database(foreign_db: tuple[ForeignSchema, str]) -> None:
    schema, url = foreign_db
    parent, key = next(iter(schema.partitioned.items()))
    with connection(url) as conn:
        in_db = partitions_in_database(conn, parent)
        part = in_db[0][0]
        ident = sql.Identifier(*part.split("."))
        # a partition's own index and check, a foreign key of its own, and one onto it (not onto the parent)
        conn.execute(sql.SQL("CREATE INDEX own_idx ON {} ({})").format(ident, sql.Identifier(key)))
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT own_check CHECK ({} IS NOT NULL)").format(
            ident, sql.Identifier(key)))
        before = snapshot(conn, list(schema.schemas))
        parent_fk = next(c for c in before["tables"][parent]["constraints"].values() if c["type"] == "foreign key")
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT own_fkey {}").format(
            ident, sql.SQL(parent_fk["definition"])))  # noqa: S608 - the catalog's own text of a foreign key
        pk = before["tables"][parent]["constraints"]
        pk_cols = next(c["columns"] for c in pk.values() if c["type"] == "primary key")
        cols = sql.SQL(", ").join(map(sql.Identifier, pk_cols))
        conn.execute(sql.SQL("CREATE TABLE public.partition_notes AS SELECT {} FROM {} LIMIT 0").format(cols, ident))
        conn.execute(sql.SQL("ALTER TABLE public.partition_notes ADD CONSTRAINT notes_fkey FOREIGN KEY ({})"
                             " REFERENCES {} ({})").format(cols, ident, cols))
        HistoryTable(schema.default_schema, "flyway_schema_history").create(conn)  # bookkeeping, not schema
        HistoryTable(schema.default_schema, "team_history").create(conn)
        snap = snapshot(conn, list(schema.schemas), ignore=(f"{schema.default_schema}.team_history",))

    # types: domains with their checks, enums with labels in order, composites with their attributes
    for name, expected in TYPES[schema.name].items():
        t = snap["types"][name]
        assert t["kind"] == expected[0], t
        if t["kind"] == "domain":
            assert t["base_type"] == expected[1]
            assert any(expected[2] in c["definition"] for c in t["checks"].values()), t["checks"]
        elif t["kind"] == "enum":
            assert t["labels"] == expected[1]
        else:
            assert [(a["name"], a["type"]) for a in t["attributes"]] == expected[1]
    assert set(snap["types"]) == set(TYPES[schema.name])  # no table row types, no array types
    for name, (type_, owner, identity) in SEQUENCES[schema.name].items():
        seq = snap["sequences"][name]
        assert (seq["type"], seq["owned_by"], seq["identity"], seq["increment"]) == (type_, owner, identity, 1), seq

    # partitioned tables: the key, every partition with its bound, under the parent and never a table of its own
    table = snap["tables"][parent]
    assert table["partition_key"] == f"RANGE ({key})"
    assert [(p, v["bound"]) for p, v in table["partitions"].items()] == in_db
    assert not set(table["partitions"]) & set(snap["tables"])
    assert {"public.partition_notes", *schema.partitioned} <= set(snap["tables"])
    assert not {n for n in snap["tables"] if n.endswith(("flyway_schema_history", "team_history"))}
    own = table["partitions"][part]
    assert own["indexes"]["own_idx"]["inherited"] is None and own["constraints"]["own_check"]["inherited"] is None
    assert own["constraints"]["own_fkey"]["inherited"] is None
    inherited_pk = [c for c in own["constraints"].values() if c["type"] == "primary key"]
    assert len(inherited_pk) == 1 and inherited_pk[0]["inherited"] in pk
    assert all(any(i["inherited"] for i in p["indexes"].values()) for p in table["partitions"].values())
    if schema.name == "telemetry":
        assert snap["tables"]["public.site_outages"]["constraints"]["site_outages_during_excl"]["type"] == "exclusion"

    # the ER diagram: relationships of partitioned tables, no partition drawn
    er = mermaid_er(snap)
    for line in RELATIONSHIPS[schema.name]:
        assert f"    {line}" in er, er
    ent = parent.replace(".", "_")
    assert f'public_partition_notes : "{",".join(pk_cols)} (onto partition {part})"' in er
    assert any(line.strip().endswith(f'{ent} : "{",".join(parent_fk["columns"])} (partition {part})"')
               for line in er.splitlines()), er
    assert f' {key} PK "partition key"' in er or f' {key} "partition key"' in er
    for p in table["partitions"]:
        assert f"    {p.replace('.', '_')} {{" not in er
    # the data dictionary lists types, sequences, the partitions under their table, and who references it
    dictionary = data_dictionary(snap)
    for name in TYPES[schema.name]:
        assert f"| `{name}` |" in dictionary
    for name in SEQUENCES[schema.name]:
        assert f"| `{name}` |" in dictionary
    section = dictionary.split(f"## `{parent}`", 1)[1].split("\n## ", 1)[0]
    assert f"Partitions (partitioned by `RANGE ({key})`):" in section
    for p, bound in in_db:
        assert f"- `{p}`: `{bound}`" in section
    assert "own indexes: `own_idx`" in section and "Referenced by:" in section
    schema_dbml = dbml(snap)
    assert f'Table "{parent}"' in schema_dbml and f"Partitioned by RANGE ({key})" in schema_dbml
    refs = [line for line in schema_dbml.splitlines() if line.startswith(f'Ref: "{parent}".')]
    assert refs and len(refs) == len(set(refs)), refs  # the partition's copy of the parent's key is one reference
    assert f'> "{parent}".' in schema_dbml.split('Ref: "public.partition_notes"', 1)[1].splitlines()[0]
    print(f"\n{schema.name}: {len(snap['tables'])} tables, {len(table['partitions'])} partitions of {parent}, "
          f"{len(snap['types'])} types, {len(snap['sequences'])} sequences")

    # a partition's own index dropped is a change; its inherited ones are not compared on their own
    with connection(url) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(part.split(".")[0], "own_idx")))
        conn.execute("ALTER TYPE " + ("lending.loan_status ADD VALUE 'damaged'" if schema.name == "library"
                                      else "iot.device_kind ADD VALUE 'camera'"))
        after = snapshot(conn, list(schema.schemas), ignore=(f"{schema.default_schema}.team_history",))
    changes = [str(c) for c in diff(snap, after)]
    assert f"removed index {part}.own_idx: {own['indexes']['own_idx']['definition']}" in changes, changes
    assert any(c.startswith("changed enum ") and ("'damaged'" in c or "'camera'" in c) for c in changes), changes
    assert len(changes) == 2, changes


def test_catalog_of_the_reference_lists_sequences_and_partitions(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        snap = snapshot(conn, ["app"])
        in_db = partitions_in_database(conn, "app.orders")
    identity = {f"{name}.{c['name']}" for name, t in snap["tables"].items() for c in t["columns"] if c["identity"]}
    owned = {s["owned_by"] for s in snap["sequences"].values() if s["identity"]}
    assert identity and owned == identity
    orders = snap["tables"]["app.orders"]
    assert [(p, v["bound"]) for p, v in orders["partitions"].items()] == in_db
    assert all(any(c["type"] == "primary key" and c["inherited"] == "orders_pkey" for c in p["constraints"].values())
               for p in orders["partitions"].values())
    assert snap["types"] == {}
    dictionary = data_dictionary(snap)
    assert "## Sequences" in dictionary and "## Enums" not in dictionary
    assert "Referenced by:" in dictionary.split("## `app.orders`", 1)[1].split("\n## ", 1)[0]


def test_catalog_asset_on_a_team_database(foreign_db: tuple[ForeignSchema, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    schema, url = foreign_db
    monkeypatch.setenv("DBOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DBOPS_DATABASE_URL", url)
    target = "dbops"
    result = dg.materialize(
        [build_schema_catalog(target)], instance=dg.DagsterInstance.ephemeral(),
        resources={"database": DatabaseResource(url=url),
                   "catalog": CatalogResource(output_dir=str(tmp_path / "catalog"), schemas=list(schema.schemas))},
    )
    assert result.success
    meta = result.asset_materializations_for_node(op_name(target, "schema_catalog"))[0].metadata
    with connection(url) as conn:
        parts = sum(len(partitions_in_database(conn, t)) for t in schema.partitioned)
    assert meta["partitions"].value == parts > 0
    assert meta["types"].value == len(TYPES[schema.name])
    assert meta["sequences"].value >= len(SEQUENCES[schema.name])
    for line in RELATIONSHIPS[schema.name]:
        assert line in meta["er_diagram"].value

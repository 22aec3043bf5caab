"""Index advice on the two team databases (dbops_tests/foreign): no drop of an index that backs a constraint or is a
foreign key's only index, duplicates on partitions found, candidates proposed on the partitioned parent, and the
review migration numbered after the target's own history in its own style."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from psycopg import sql

from dbops.components import profile as profile_defs
from dbops.components.naming import op_name
from dbops.components.resources import DatabaseResource
from dbops.migrate.numbering import folder_versions, history_versions, next_version
from dbops.pg.connect import connection
from dbops.profile.advise import advise
from dbops.profile.cli import advise_main
from dbops.profile.indexes import UNUSED_MAX_SCANS, index_findings, list_indexes
from dbops.profile.statements import SnapshotStore, profile
from dbops.settings import load_settings
from dbops_tests.foreign import LIBRARY, ForeignSchema, create
from dbops_tests.profile.conftest import baseline_by_hand, library_workload

DROPS = ("duplicate", "redundant", "unused")


@dataclass(frozen=True)
class Plant:
    pk_copy: tuple[str, str, str]  # (table, column, its primary key's index): a plain index on the key's column
    fk_only: tuple[str, tuple[str, ...], str]  # (table, columns, foreign key) no index serves yet
    fk_parent: tuple[str, str, str]  # (partitioned table, foreign key, its only index): judged on the parent
    workload: tuple[str, ...]  # statements (one %s parameter each: a small integer) for pg_stat_statements


PLANTS = {
    "library": Plant(
        pk_copy=("lending.members", "id", "lending.members_pkey"),
        fk_only=("lending.loan_events", ("loan_id", "loaned_on"), "loan_events_loan_id_loaned_on_fkey"),
        fk_parent=("lending.loans", "loans_member_id_fkey", "lending.loans_member_idx"),
        workload=("SELECT id, status FROM lending.loans WHERE member_id = %s",
                  "SELECT full_name FROM lending.members WHERE id = %s"),
    ),
    "telemetry": Plant(
        pk_copy=("iot.devices", "id", "iot.devices_pkey"),
        fk_only=("iot.alarms", ("device_id", "recorded_at"), "alarms_device_id_recorded_at_fkey"),
        fk_parent=("iot.readings", "readings_device_id_fkey", "iot.readings_pkey"),
        workload=("SELECT value FROM iot.readings WHERE device_id = %s",
                  "SELECT serial FROM iot.devices WHERE id = %s"),
    ),
}


def first_partition(conn, table: str) -> str:  # noqa: ANN001
    return conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE i.inhparent = %s::regclass ORDER BY 1 LIMIT 1",
        (table,),
    ).fetchone()[0]


def run_load(url: str, statements: tuple[str, ...], calls: int = 20) -> None:
    with connection(url) as conn:
        for text in statements:
            for n in range(1, calls + 1):
                conn.execute(text, (n,)).fetchall()  # type: ignore[arg-type]


def test_advice_never_drops_an_index_that_backs_a_constraint(foreign_db: tuple[ForeignSchema, str],
                                                             tmp_path: Path) -> None:
    schema, url = foreign_db
    plant = PLANTS[schema.name]
    (parent, _key) = next(iter(schema.partitioned.items()))
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        before = index_findings(conn)
        fk_table, fk_cols, fk_name = plant.fk_only
        assert any(f.kind == "unindexed_fk" and f.table == fk_table and fk_name in f.detail for f in before), before
        table, column, pkey = plant.pk_copy
        copy = f"{table.split('.')[1]}_{column}_copy_idx"
        conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(copy), sql.Identifier(*table.split(".")), sql.Identifier(column)))
        fk_index = f"{fk_table.split('.')[1]}_fk_only_idx"
        conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(fk_index), sql.Identifier(*fk_table.split(".")),
            sql.SQL(", ").join(map(sql.Identifier, fk_cols))))
        # a partition's own index repeating the one it inherits from the parent's foreign key index
        partition = first_partition(conn, parent)
        fk_parent_index = plant.fk_parent[2]
        inherited_cols = next(i.columns for i in list_indexes(conn) if i.qualified == fk_parent_index)
        part_copy = f"{partition.split('.')[1]}_copy_idx"
        conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(part_copy), sql.Identifier(*partition.split(".")),
            sql.SQL(", ").join(map(sql.Identifier, inherited_cols))))
        conn.execute("ANALYZE")
        store = SnapshotStore(tmp_path / "snapshots", schema.name)
        profile(conn, store)
    run_load(url, plant.workload)
    with connection(url) as conn:
        prof = profile(conn, store)
        indexes = {i.qualified: i for i in list_indexes(conn)}
    assert sum(s.calls for s in prof.top if any(w.split(" WHERE ")[0] in s.query for w in plant.workload)) >= 40

    report = advise(url, prof, review_dir=tmp_path / "review", migrations_dir=tmp_path / "none",
                    verify_candidates=False)
    drops = {f.index: f for f in report.findings if f.kind in DROPS}
    schema_of = table.split(".")[0]
    # the planted copy of the primary key's index is proposed, the primary key's own index is not
    assert drops[f"{schema_of}.{copy}"].kind == "duplicate" and pkey in drops[f"{schema_of}.{copy}"].detail
    assert pkey not in drops
    # the foreign key's only index is never proposed, though it was never scanned (the old rule dropped it as unused)
    fk_qualified = f"{fk_table.split('.')[0]}.{fk_index}"
    assert indexes[fk_qualified].scans <= UNUSED_MAX_SCANS and not indexes[fk_qualified].unique
    assert any(fk_name in b for b in indexes[fk_qualified].backs), indexes[fk_qualified]
    assert fk_qualified not in drops
    assert not [f for f in report.findings if f.kind == "unindexed_fk" and f.table == fk_table]
    # the partitioned table's foreign key keeps its only index; the partition's copy of it is a duplicate
    assert fk_parent_index not in drops
    assert any(plant.fk_parent[1] in b for b in indexes[fk_parent_index].backs), indexes[fk_parent_index]
    part_qualified = f"{partition.split('.')[0]}.{part_copy}"
    assert drops[part_qualified].kind == "duplicate" and drops[part_qualified].table == partition
    # nothing that backs something is ever proposed, across the whole database
    protected = {name for name, i in indexes.items() if i.protected}
    assert protected and not protected & set(drops), protected & set(drops)
    kinds = {i.qualified: i.backs for i in indexes.values()}
    if schema.name == "telemetry":  # the exclusion constraint's index
        assert any("exclusion constraint" in b for b in kinds["public.site_outages_during_excl"])
    # foreign keys are judged on the partitioned parent, never on one partition
    partitions = {p for i in indexes.values() if i.on_partition for p in [i.qualified_table]}
    assert partitions and not [f for f in report.findings if f.kind == "unindexed_fk" and f.table in partitions]
    print(f"\n{schema.name}: " + "; ".join(f"{f.kind} {f.index or f.table}" for f in report.findings))


def test_unindexed_foreign_key_of_a_partitioned_table_is_named_on_the_parent(fresh_db: str) -> None:
    create(fresh_db, LIBRARY)
    with connection(fresh_db) as conn:
        found = [(f.table, f.detail) for f in index_findings(conn) if f.kind == "unindexed_fk"]
    assert ("lending.loans", "foreign key loans_book_id_fkey (book_id) has no index") in found
    assert not [t for t, _ in found if t.startswith("lending.loans_")], found


def test_review_numbering_follows_the_targets_history_and_style(foreign_db: tuple[ForeignSchema, str],
                                                                tmp_path: Path) -> None:
    schema, url = foreign_db
    with connection(url) as conn:
        assert history_versions(conn, schema.default_schema, "flyway_schema_history") == []
        baseline_by_hand(conn, schema, "schema_history")  # the target's own history table name (migrate.table)
        applied = history_versions(conn, schema.default_schema, "schema_history")
    assert applied == [schema.baseline_version]
    assert next_version(applied + folder_versions(tmp_path / "none")) == schema.next_version  # 021 / 2
    pending = folder_versions(schema.migrations)
    assert schema.next_version in pending
    after_pending = next_version(applied + pending)
    assert after_pending == {"library": "022", "telemetry": "3"}[schema.name]


def test_a_verified_index_on_library_is_written_as_v021_on_the_parent(big_library: str, tmp_path: Path) -> None:
    with connection(big_library) as conn:
        partition = first_partition(conn, "lending.loans")
        store = SnapshotStore(tmp_path / "snapshots", "library")
        profile(conn, store)
        for book in range(1, 31):
            conn.execute("SELECT id, status FROM lending.loans WHERE book_id = %s", (book,)).fetchall()
            conn.execute(sql.SQL("SELECT id FROM {} WHERE book_id = %s").format(  # a query on one partition
                sql.Identifier(*partition.split("."))), (book,)).fetchall()
        prof = profile(conn, store)

    report = advise(big_library, prof, review_dir=tmp_path / "review", migrations_dir=tmp_path / "none",
                    history=(LIBRARY.default_schema, "flyway_schema_history"))
    assert [a.candidate.describe() for a in report.advice] == ["lending.loans (book_id)"], report.advice
    assert len(report.advice[0].queries) == 2  # the partition's query is advice for the parent
    best = report.verified[0]
    assert best.measurement is not None and best.measurement.speedup > 2, best.measurement
    assert [p.name for p in (tmp_path / "review").iterdir()] == ["V021__add_index_loans_book_id_idx.sql"]
    text = best.migration.read_text()
    assert 'ON ONLY "lending"."loans" ("book_id")' in text and "ATTACH PARTITION" in text
    print(f"\nlibrary: {best.measurement}; {best.migration.name}")

    # with the library's own migrations folder, V021 is pending: the next free version is V022
    again = advise(big_library, prof, review_dir=tmp_path / "review2", migrations_dir=LIBRARY.migrations,
                   history=(LIBRARY.default_schema, "flyway_schema_history"))
    assert again.verified and again.verified[0].migration.name == "V022__add_index_loans_book_id_idx.sql"


def test_advise_command_and_asset_number_after_the_targets_history(big_library: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`dbops advise` and index_advice read the history where the target's migrate settings say it is."""
    env = {"DBOPS_DATABASE_URL": big_library, "DBOPS_HOME": str(tmp_path / "home"),
           "DBOPS_MIGRATIONS": str(tmp_path / "migrations"), "DBOPS_REVIEW_DIR": str(tmp_path / "review"),
           "DBOPS_MIGRATE_DEFAULT_SCHEMA": LIBRARY.default_schema}
    (tmp_path / "migrations").mkdir()
    library_workload(big_library)
    assert advise_main([], load_settings(env)) == 0
    out = capsys.readouterr().out
    assert "create index on lending.loans (book_id)" in out and "verified" in out
    assert [p.name for p in (tmp_path / "review").iterdir()] == ["V021__add_index_loans_book_id_idx.sql"]

    # the asset, with a fresh review folder: the history's 020 decides again (without it, V1)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    target = "dbops"
    defs = profile_defs.build(target)
    index_advice = next(a for a in defs.assets or [] if a.key.to_user_string() == f"{target}/index_advice")
    result = dg.materialize(
        [index_advice], instance=dg.DagsterInstance.ephemeral(),
        resources={"database": DatabaseResource(url=big_library)},
        run_config={"ops": {op_name(target, "index_advice"): {"config": {"review_dir": str(tmp_path / "r2")}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node(op_name(target, "index_advice"))[0].metadata
    migrations = {k: v for k, v in meta.items() if k.startswith("review_migration/")}
    assert [Path(v.value).name for v in migrations.values()] == ["V021__add_index_loans_book_id_idx.sql"]
    assert all(isinstance(v, dg.PathMetadataValue) for v in migrations.values())

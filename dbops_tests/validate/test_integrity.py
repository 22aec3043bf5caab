"""30 seeded days validate clean; then one violation of each kind is found in its day, table and rule, and only it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from psycopg import sql

from dbops.components.naming import op_name
from dbops.components.resources import DatabaseResource
from dbops.components.validate.assets import build
from dbops.pg.connect import connection
from dbops.scorecard import Row, build_scorecard
from dbops.validate.amcheck import check_indexes
from dbops.validate.run import IntegrityValidator, days_between

DAYS = 30
TARGET = "dbops"
integrity_validation, dimension_integrity, index_integrity = build(TARGET)


def last_days(n: int) -> list[date]:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    return days_between(yesterday - timedelta(days=n - 1), yesterday)


def noon(day: date) -> str:
    return f"{day.isoformat()} 12:00:00+00"


def rows_by_day(url: str, tables: dict[str, str | None], days: list[date]) -> dict[str, int]:
    """{day: rows of that UTC day in ``tables`` ({table: time column})}, counted with plain SQL."""
    totals = {d.isoformat(): 0 for d in days}
    with connection(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for name, column in tables.items():
            stmt = sql.SQL("SELECT {col}::date, count(*) FROM {table} WHERE {col} >= %s AND {col} < %s GROUP BY 1")
            stmt = stmt.format(col=sql.Identifier(column or ""), table=sql.Identifier(*name.split(".")))
            for day, count in conn.execute(stmt, (days[0], days[-1] + timedelta(days=1))).fetchall():
                totals[day.isoformat()] += count
    return totals


def integrity_row(instance: dg.DagsterInstance) -> Row:
    card = build_scorecard(instance, TARGET, {integrity_validation.key})
    return next(r for r in card.rows if r.target.asset == "integrity_validation")


def plant_violations(url: str, days: list[date]) -> dict[tuple[str, str, str], int]:
    """One violation of each kind, each in its own day; returns {(day, table, rule): unexpected rows}."""
    orphan_day, dup_day, null_day, check_day, rule_day = days[3], days[9], days[15], days[21], days[27]
    with connection(url) as conn:
        # An orphan item: triggers (hence foreign keys) are off in replica mode, as during a careless restore.
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                "INSERT INTO app.order_items (tenant_id, order_id, order_created_at, product_id, quantity, unit_price) "
                "SELECT tenant_id, 987654321, %s::timestamptz, product_id, 1, 1 FROM app.order_items LIMIT 1",
                (noon(orphan_day),),
            )
        # From here on, triggers are off too: V11 (order totals) and V14 (order keys) would refuse these rows.
        conn.execute("SET session_replication_role = replica")
        # A duplicate (tenant_id, id): the partitioned primary key includes created_at, so PostgreSQL allows it.
        conn.execute(
            "INSERT INTO app.orders (id, tenant_id, user_id, status, total, currency, created_at) "
            "OVERRIDING SYSTEM VALUE "
            "SELECT id, tenant_id, user_id, status, total, currency, created_at + interval '1 microsecond' "
            "FROM app.orders WHERE created_at >= %s::date AND created_at < %s::date + 1 ORDER BY created_at LIMIT 1",
            (dup_day, dup_day),
        )
        # A NULL under a NOT NULL constraint added NOT VALID (PostgreSQL 18).
        conn.execute("ALTER TABLE app.payments ALTER COLUMN method DROP NOT NULL")
        conn.execute(
            "UPDATE app.payments SET method = NULL WHERE id = (SELECT min(id) FROM app.payments "
            "WHERE order_created_at >= %s::date AND order_created_at < %s::date + 1)",
            (null_day, null_day),
        )
        conn.execute("ALTER TABLE app.payments ADD CONSTRAINT payments_method_not_null NOT NULL method NOT VALID")
        # A CHECK violation: the constraint dropped, a bad row written, the constraint back NOT VALID.
        conn.execute("ALTER TABLE app.order_items DROP CONSTRAINT order_items_quantity_check")
        conn.execute(
            "UPDATE app.order_items SET quantity = 0 WHERE id = (SELECT min(id) FROM app.order_items "
            "WHERE order_created_at >= %s::date AND order_created_at < %s::date + 1)",
            (check_day, check_day),
        )
        conn.execute(
            "ALTER TABLE app.order_items ADD CONSTRAINT order_items_quantity_check CHECK (quantity > 0) NOT VALID"
        )
        # An operator rule broken: payments.yml caps amount at 1,000,000.
        conn.execute(
            "UPDATE app.payments SET amount = 5000000 WHERE id = (SELECT max(id) FROM app.payments "
            "WHERE order_created_at >= %s::date AND order_created_at < %s::date + 1)",
            (rule_day, rule_day),
        )
    return {
        (orphan_day.isoformat(), "app.order_items", "foreign_key order_items_order_fkey"): 1,
        (dup_day.isoformat(), "app.orders", "rule unique tenant_id,id (orders.yml:5)"): 1,
        (null_day.isoformat(), "app.payments", "not_null method"): 1,
        (check_day.isoformat(), "app.order_items", "check order_items_quantity_check"): 1,
        (rule_day.isoformat(), "app.payments", "rule between amount (payments.yml:3)"): 1,
    }


def test_backfill_clean_then_each_planted_violation_found(seeded_db: str) -> None:
    days = last_days(DAYS)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"database": DatabaseResource(url=seeded_db)}

    # A 30-partition backfill is one ranged run (BackfillPolicy.single_run) and finds nothing.
    result = dg.materialize(
        [integrity_validation, dimension_integrity],
        instance=instance,
        resources=resources,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: days[0].isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: days[-1].isoformat(),
        },
        selection=[integrity_validation.key],
    )
    assert result.success
    materializations = result.asset_materializations_for_node(op_name(TARGET, "integrity_validation"))
    assert len(materializations) == DAYS
    # Each partition carries its own figures, not the run's totals: its rows are that day's, counted here by SQL.
    by_day = {m.partition: m.metadata for m in materializations}
    assert set(by_day) == {d.isoformat() for d in days}
    with IntegrityValidator(seeded_db) as planner:
        fact_tables = {p.name: p.time_column for p in planner.fact_plans}
    counted = rows_by_day(seeded_db, fact_tables, days)
    assert {day: meta["rows"].value for day, meta in by_day.items()} == counted
    assert len(set(counted.values())) > 1  # days differ: a total copied to every day would not
    for meta in by_day.values():
        assert meta["status"].value == "passed" and meta["violations"].value == 0
        assert meta["expectations_failed"].value == 0 and meta["unexpected_rows"].value == 0
        assert 40 < meta["expectations_evaluated"].value < 200  # one day's rules, not 30 days' worth
        assert meta["seconds"].value > 0 and "batches" not in meta and "failures" not in meta
        assert set(meta["tables"].value.split(", ")) == set(fact_tables)
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    assert checks[0].metadata["partitions_validated"].value == DAYS and checks[0].metadata["violations"].value == 0
    row = integrity_row(instance)
    assert (row.measured, row.status) == (f"0 in {DAYS} of {DAYS} partitions", "PASS")

    expected = plant_violations(seeded_db, days)

    with IntegrityValidator(seeded_db) as validator:
        reports = validator.validate_days(days)
        dims = validator.validate_dimensions()
    found = {(r.scope, f.table, f.rule): f.unexpected for r in reports for f in r.failures}
    assert found == expected
    assert dims.ok, dims.render()
    by_rule = {f.rule: f for r in reports for f in r.failures}
    # Sample rows are there, with sensitive columns (payments.method and amount, per access-control.yml) masked.
    null_sample = by_rule["not_null method"].samples
    assert null_sample and null_sample[0]["method"] == "***" and null_sample[0]["amount"] == "***"
    assert by_rule["foreign_key order_items_order_fkey"].samples[0]["order_id"] == 987654321
    assert by_rule["check order_items_quantity_check"].samples[0]["quantity"] == 0

    # The Dagster asset reports the same in one ranged run: each planted violation on its own partition's
    # materialization, and the blocking check (ERROR) names every (partition, table, rule).
    failing = dg.materialize(
        [integrity_validation], instance=instance, resources=resources, raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: days[0].isoformat(),
              ASSET_PARTITION_RANGE_END_TAG: days[-1].isoformat()},
    )
    by_day = {m.partition: m.metadata for m in failing.asset_materializations_for_node(
        op_name(TARGET, "integrity_validation"))}
    planted_days = {day for day, _, _ in expected}
    assert len(by_day) == DAYS
    for day, meta in by_day.items():
        mine = {(day, t, r): n for (d, t, r), n in expected.items() if d == day}
        assert meta["violations"].value == len(mine)
        assert meta["status"].value == ("failed" if day in planted_days else "passed")
        assert meta["unexpected_rows"].value == sum(mine.values())
        if mine:
            rows = meta["failures"].value.records
            assert {(day, r.data["table"], r.data["rule"]): r.data["unexpected_rows"] for r in rows} == mine
    evaluation = failing.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["violations"].value == len(expected)
    assert evaluation.metadata["partitions_failed"].value == len(planted_days)
    named = {(r.data["partition"], r.data["table"], r.data["rule"]): r.data["unexpected_rows"]
             for r in evaluation.metadata["failing_partitions"].value.records}
    assert named == expected
    assert all(day in (evaluation.description or "") for day in planted_days)
    # The scorecard sums the last 30 partitions' own violations.
    row = integrity_row(instance)
    assert (row.measured, row.status) == (f"{len(expected)} in {DAYS} of {DAYS} partitions", "FAIL")

    # One planted day alone: its check fails at ERROR with that day's one violation.
    single = dg.materialize([integrity_validation], instance=instance, resources=resources,
                            partition_key=days[3].isoformat(), raise_on_error=False)
    evaluation = single.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["violations"].value == 1

    # amcheck finds the indexes intact and reports the constraints left NOT VALID.
    with connection(seeded_db) as conn:
        report = check_indexes(conn, thorough=True)
    assert report.checked > 10 and not report.problems
    assert {(c.table, c.name) for c in report.not_valid} == {
        ("app.payments", "payments_method_not_null"),
        ("app.order_items", "order_items_quantity_check"),
    }
    index_result = dg.materialize([index_integrity], instance=instance, resources=resources)
    index_meta = index_result.asset_materializations_for_node(op_name(TARGET, "index_integrity"))[0].metadata
    assert index_meta["not_valid_constraints"].value == 2 and index_meta["corrupt_indexes"].value == 0

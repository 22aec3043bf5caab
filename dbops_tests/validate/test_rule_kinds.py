"""Every operator rule kind runs through its GX expectation on real rows and reports the right unexpected count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dbops.pg.connect import connection
from dbops.validate.run import IntegrityValidator

RULES = """\
rules:
  - row_count: {max: 1}
  - not_null: status
  - regex: {column: currency, pattern: '^EUR$'}
  - in_set: {column: status, values: [pending, paid, shipped, cancelled, refunded]}
  - between: {column: total, min: 0, max: 1000000}
  - unique: [tenant_id, id]
"""


def test_each_rule_kind(seeded_db: str, tmp_path: Path) -> None:
    (tmp_path / "orders.yml").write_text(RULES, encoding="utf-8")
    day = datetime.now(UTC).date() - timedelta(days=4)
    with connection(seeded_db) as conn:
        count = conn.execute(
            "SELECT count(*) FROM app.orders WHERE created_at >= %s::date AND created_at < %s::date + 1", (day, day)
        ).fetchone()[0]  # type: ignore[index]
        assert count > 2
        conn.execute(
            "UPDATE app.orders SET currency = 'USD' WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM app.orders "
            "WHERE created_at >= %s::date AND created_at < %s::date + 1 ORDER BY id LIMIT 2)",
            (day, day),
        )
    with IntegrityValidator(seeded_db, rules_dir=tmp_path) as validator:
        report = validator.validate_day(day)
        orders = next(p for p in validator.plans if p.name == "app.orders")
    # `not_null: status` restates the column's NOT NULL constraint: one rule, under the constraint's name.
    assert [c.rule for c in orders.checks if c.column == "status" and c.kind == "not_null"] == ["not_null status"]
    found = {(f.table, f.rule): f.unexpected for f in report.failures}
    assert found == {
        ("app.orders", "rule row_count rows (orders.yml:2)"): 1,
        ("app.orders", "rule regex currency (orders.yml:4)"): 2,
    }
    samples = {f.rule: f.samples for f in report.failures}
    assert [row["currency"] for row in samples["rule regex currency (orders.yml:4)"]] == ["USD", "USD"]


def test_duplicate_spread_over_two_days_is_found_in_a_range(seeded_db: str) -> None:
    day = datetime.now(UTC).date() - timedelta(days=6)
    with connection(seeded_db) as conn:
        conn.execute("SET session_replication_role = replica")  # V14's app.order_keys would refuse the copy
        conn.execute(
            "INSERT INTO app.orders (id, tenant_id, user_id, status, total, currency, created_at) "
            "OVERRIDING SYSTEM VALUE SELECT id, tenant_id, user_id, status, total, currency, created_at + interval "
            "'1 day' FROM app.orders WHERE created_at >= %s::date AND created_at < %s::date + 1 ORDER BY id LIMIT 1",
            (day, day),
        )
    with IntegrityValidator(seeded_db) as validator:
        # Day by day, each copy is alone; over the two days the (tenant_id, id) rule sees both.
        assert all(r.ok for r in validator.validate_days([day, day + timedelta(days=2)]))
        first, second = validator.validate_range(day, day + timedelta(days=1))
    assert first.ok
    assert [(f.table, f.rule, f.unexpected) for f in second.failures] == [
        ("app.orders", f"rule unique tenant_id,id (orders.yml:5) across {day}..{day + timedelta(days=1)}", 1)
    ]

"""Partition maintenance on the two team databases dbops did not create: library (lending.loans, monthly on a date,
DEFAULT partition, a foreign key onto it, a row trigger) and telemetry (iot.readings, daily on a timestamptz,
partitions until today + 7)."""

from __future__ import annotations

from datetime import datetime, timedelta

from dbops.maintain.partitions import add_months, maintain, move_defaults, status
from dbops.pg.connect import connection
from dbops_tests.foreign import ForeignSchema
from dbops_tests.maintain.test_partitions import DEFAULTS, acl, count, partitions_of, server_today


def test_team_tables_kept_ahead_in_their_naming_style(foreign_db: tuple[ForeignSchema, str]) -> None:
    schema, url = foreign_db
    (table, key), = schema.partitioned.items()
    before = set(partitions_of(url, table))
    with connection(url) as conn:
        report = maintain(conn, schema.schemas, DEFAULTS)
    (state,) = report.tables
    assert (state.qualified, state.key) == (table, key)
    today = server_today(url)  # the schema's own current_date
    short = table.split(".")[1]
    if schema.name == "library":
        month = today.replace(day=1)
        assert state.period == "monthly" and state.ahead == 3 == state.wanted
        last = max(datetime.strptime(p.split("_", 1)[1], "%Y_%m").date() for p in before if p != "loans_default")
        wanted = [add_months(month, k) for k in range(4) if add_months(month, k) > last]
        assert state.created == [f"lending.{short}_{m:%Y_%m}" for m in wanted]
        assert state.last_bound() == add_months(month, 4)
        assert state.default_rows == 0
    else:
        assert state.period == "daily" and state.ahead == 14 == state.wanted
        assert state.created == [f"iot.{short}_{today + timedelta(days=d):%Y%m%d}" for d in range(8, 15)]
        assert state.last_bound() == today + timedelta(days=15)
        assert state.default_rows is None  # telemetry has no DEFAULT partition
    parts = partitions_of(url, table)
    newest_old = max(p for p in before if not p.endswith("_default"))
    for name in state.created:
        new = name.split(".")[1]
        assert parts[new][0] == parts[newest_old][0]  # the owner of the partitions before
        assert acl(url, name) == acl(url, f"{table.split('.')[0]}.{newest_old}")  # and their grants
    with connection(url) as conn:
        assert maintain(conn, schema.schemas, DEFAULTS).created == []


def test_library_default_rows_moved_without_firing_its_trigger(foreign_db: tuple[ForeignSchema, str]) -> None:
    schema, url = foreign_db
    if schema.name != "library":
        with connection(url) as conn:  # nothing to move: no DEFAULT partition
            tables, moved = move_defaults(conn, schema.schemas, DEFAULTS)
        assert moved == [] and all(t.default is None for t in tables)
        return
    far = add_months(server_today(url).replace(day=1), 7)
    with connection(url) as conn:
        conn.execute("INSERT INTO lending.loans (loaned_on, member_id, book_id, due_on) "
                     "SELECT %s::date + i %% 20, 1 + i, 1 + i, %s::date + 30 FROM generate_series(0, 24) i", (far, far))
    events = count(url, "SELECT count(*) FROM lending.loan_events")
    with connection(url) as conn:
        (loans,) = status(conn, schema.schemas, DEFAULTS).defaults_with_rows()
    assert loans.default_rows == 25
    with connection(url) as conn:
        _, moved = move_defaults(conn, schema.schemas, DEFAULTS, "lending.loans")
    assert [(m.rows, m.partitions) for m in moved] == [(25, [f"lending.loans_{far:%Y_%m}"])]
    assert count(url, "SELECT count(*) FROM lending.loans_default") == 0
    assert count(url, "SELECT count(*) FROM lending.loan_events") == events  # record_loan did not fire again
    assert count(url, "SELECT count(*) FROM lending.loan_events e LEFT JOIN lending.loans l ON "
                      "(l.id, l.loaned_on) = (e.loan_id, e.loaned_on) WHERE l.id IS NULL") == 0

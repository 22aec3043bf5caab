"""Backward compatibility of pending migrations: every kind of change, widening against narrowing, the expand/contract
sketches of renames, and the catalog lookup against real databases (the reference schema and both team schemas)."""

from __future__ import annotations

import pytest

from dbops.migrate.compat import Change, ColumnInfo, Compatibility, catalog_lookup, classify
from dbops.pg.connect import connection
from dbops_tests.foreign import ForeignSchema


def lookup_from(columns: dict[tuple[str | None, str, str], ColumnInfo]):
    """A column_info lookup over a dict, recording what was asked."""
    asked: list[tuple[str | None, str, str]] = []

    def lookup(schema: str | None, table: str, column: str) -> ColumnInfo | None:
        asked.append((schema, table, column))
        return columns.get((schema, table, column))

    lookup.asked = asked  # type: ignore[attr-defined]
    return lookup


def only(sql_text: str, lookup=None) -> Change:
    changes = classify("V9__x.sql", sql_text, lookup).changes
    assert len(changes) == 1, changes
    return changes[0]


@pytest.mark.parametrize(("statement", "kind", "breaking"), [
    ("DROP TABLE app.orders", "drop table", True),
    ("DROP VIEW IF EXISTS app.v", "drop table", True),
    ("DROP MATERIALIZED VIEW app.daily", "drop table", True),
    ("ALTER TABLE app.users DROP COLUMN email", "drop column", True),
    ("DROP SCHEMA old CASCADE", "drop schema", True),
    ("DROP FUNCTION app.f(integer)", "drop function", True),
    ("DROP PROCEDURE app.p()", "drop function", True),
    ("DROP TYPE app.mood", "drop type", True),
    ("DROP DOMAIN app.email", "drop type", True),
    ("ALTER TABLE app.users RENAME COLUMN email TO mail", "rename column", True),
    ("ALTER TABLE app.users RENAME TO people", "rename table", True),
    ("ALTER VIEW app.v RENAME TO w", "rename table", True),
    ("ALTER SCHEMA app RENAME TO application", "rename schema", True),
    ("ALTER TABLE app.users SET SCHEMA archive", "move table", True),
    ("ALTER FUNCTION app.f() RENAME TO g", "rename function", True),
    ("ALTER TABLE app.users ALTER COLUMN email TYPE varchar(100)", "type change (old type unknown)", True),
    ("ALTER TABLE app.users ADD COLUMN nick text NOT NULL", "not null without default", True),
    ("ALTER TABLE app.users ADD COLUMN id2 integer PRIMARY KEY", "not null without default", True),
    ("ALTER TABLE app.users ADD COLUMN nick text NOT NULL DEFAULT ''", "add column", False),
    ("ALTER TABLE app.users ADD COLUMN nick text NOT NULL DEFAULT NULL", "not null without default", True),
    ("ALTER TABLE app.users ADD COLUMN nick text", "add column", False),
    ("ALTER TABLE app.users ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY", "add column", False),
    ("ALTER TABLE app.users ADD COLUMN n bigserial", "add column", False),
    ("ALTER TABLE app.users ALTER COLUMN email SET NOT NULL", "set not null", True),
    ("ALTER TABLE app.users ALTER COLUMN email DROP NOT NULL", "drop not null", False),
    ("ALTER TABLE app.users ALTER COLUMN email SET DEFAULT 'x'", "set default", False),
    ("ALTER TABLE app.users ALTER COLUMN id DROP IDENTITY", "drop default", True),
    ("ALTER TABLE app.users ADD CONSTRAINT c CHECK (length(email) < 99)", "new constraint", True),
    ("ALTER TABLE app.users ADD CONSTRAINT u UNIQUE (email)", "new constraint", True),
    ("ALTER TABLE app.users ADD CONSTRAINT f FOREIGN KEY (t) REFERENCES app.tenants (id)", "new constraint", True),
    ("ALTER TABLE app.users ADD CONSTRAINT x EXCLUDE USING gist (during WITH &&)", "new constraint", True),
    ("ALTER TABLE app.users ADD PRIMARY KEY (id)", "new constraint", True),
    ("ALTER TABLE app.users ADD CONSTRAINT c CHECK (id > 0) NOT ENFORCED", "new constraint", False),
    ("ALTER TABLE app.users ADD CONSTRAINT u UNIQUE USING INDEX users_email_idx", "new constraint", False),
    ("ALTER TABLE app.users VALIDATE CONSTRAINT c", "validate constraint", False),
    ("ALTER TABLE app.users DROP CONSTRAINT c", "drop constraint", False),
    ("ALTER TABLE app.users SET (fillfactor = 90)", "table setting", False),
    ("REVOKE SELECT ON app.users FROM dbops_app_ro", "revoke", True),
    ("REVOKE dbops_owner FROM dbops_migrator", "revoke", True),
    ("GRANT SELECT ON ALL TABLES IN SCHEMA app TO dbops_app_ro", "grant", False),
    ("GRANT dbops_owner TO dbops_migrator", "grant", False),
    ("CREATE TABLE app.notes (id bigint PRIMARY KEY, body text)", "create table", False),
    ("CREATE INDEX CONCURRENTLY notes_idx ON app.users (email)", "create index", False),
    ("CREATE INDEX notes_idx ON app.users (email)", "create index", False),
    ("CREATE UNIQUE INDEX users_mail_key ON app.users (lower(email))", "new constraint", True),
    ("CREATE VIEW app.v AS SELECT 1 AS one", "create view", False),
    ("CREATE OR REPLACE VIEW app.v AS SELECT 1 AS one", "create or replace view", False),
    ("CREATE MATERIALIZED VIEW app.m AS SELECT 1 AS one", "create view", False),
    ("COMMENT ON TABLE app.users IS 'people'", "comment", False),
    ("CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "create function", False),
    ("CREATE SCHEMA reporting", "create schema", False),
    ("CREATE TYPE app.mood AS ENUM ('ok')", "create type", False),
    ("ALTER TYPE app.mood ADD VALUE 'sad'", "add enum value", False),
    ("ALTER TYPE app.mood RENAME VALUE 'ok' TO 'fine'", "rename enum value", True),
    ("INSERT INTO app.tenants (slug, name) VALUES ('a', 'A')", "data change", False),
    ("UPDATE app.users SET full_name = 'x' WHERE id = 1", "data change", False),
    ("DELETE FROM app.users WHERE id = 1", "data change", False),
    ("SET LOCAL ROLE dbops_owner", "other", False),
    ("SELECT 1", "other", False),
    ("ALTER INDEX app.users_pkey RENAME TO users_pk", "rename", False),
    ("DROP INDEX app.users_idx", "drop index", False),
    ("CREATE TRIGGER t BEFORE INSERT ON app.users FOR EACH ROW EXECUTE FUNCTION app.f()", "unclassified DDL",
     False),
    ("DO $$ BEGIN PERFORM 1; END $$", "unclassified (DO block)", False),
])
def test_each_kind_of_change(statement: str, kind: str, breaking: bool) -> None:
    change = only(statement)
    assert (change.kind, change.breaking) == (kind, breaking), change.detail
    assert change.line == 1
    assert change.detail and "\n" not in change.detail


def test_details_name_the_object_never_the_statement() -> None:
    assert "app.users.email" in only("ALTER TABLE app.users DROP COLUMN email").detail
    assert "app.users.email" in only("ALTER TABLE app.users RENAME COLUMN email TO mail").detail
    secret = only("ALTER ROLE app_user PASSWORD 'correct-horse-battery'")
    assert secret.kind == "unclassified DDL" and not secret.reviewed and not secret.breaking
    assert "correct-horse" not in secret.detail
    drop = only("DROP TABLE app.orders CASCADE")
    assert "CASCADE" not in drop.detail and "app.orders" in drop.detail


def test_unreviewed_statements_are_flagged_not_counted_as_breaking() -> None:
    result = classify("V2__x.sql", "DO $$ BEGIN EXECUTE 'DROP TABLE app.users'; END $$;\nCALL app.p();")
    assert [c.kind for c in result.changes] == ["unclassified (DO block)", "unclassified (CALL)"]
    assert result.verdict == "safe" and not result.breaking
    assert len(result.unreviewed) == 2
    assert all("REVIEW" in line for line in result.lines()[1:])
    assert "2 to review by hand" in result.lines()[0]


@pytest.mark.parametrize(("old", "new", "kind"), [
    ("character varying(64)", "varchar(32)", "type narrowing"),
    ("character varying(64)", "varchar(128)", "type widening"),
    ("character varying(64)", "text", "type widening"),
    ("character varying(64)", "varchar", "type widening"),
    ("text", "varchar(200)", "type narrowing"),
    ("text", "character varying", "type widening"),
    ("integer", "varchar(20)", "type narrowing"),
    ("bigint", "integer", "type narrowing"),
    ("integer", "smallint", "type narrowing"),
    ("integer", "bigint", "type widening"),
    ("smallint", "int", "type widening"),
    ("real", "double precision", "type widening"),
    ("numeric(10,2)", "numeric(12,2)", "type widening"),
    ("numeric(10,2)", "numeric(12,4)", "type widening"),
    ("numeric(10,2)", "numeric", "type widening"),
    ("numeric(10,2)", "numeric(8,2)", "type narrowing"),
    ("numeric(10,2)", "numeric(10,1)", "type narrowing"),
    ("numeric(10,2)", "numeric(10,4)", "type narrowing"),  # two digits fewer before the point
    ("numeric", "numeric(20,4)", "type narrowing"),
    ("timestamp with time zone", "date", "type narrowing"),
    ("timestamp(6) with time zone", "timestamptz(3)", "type narrowing"),
    ("integer", "integer", "type unchanged"),
    ("integer", "text", "type change"),
    ("timestamp without time zone", "timestamptz", "type change"),
    ("integer", "numeric(12,2)", "type change"),
    ("integer[]", "bigint", "type change"),
    ("lending.loan_status", "text", "type change"),
])
def test_type_changes_compare_the_old_type_from_the_lookup(old: str, new: str, kind: str) -> None:
    lookup = lookup_from({("app", "t", "c"): ColumnInfo(old, False, False)})
    change = only(f"ALTER TABLE app.t ALTER COLUMN c TYPE {new} USING c::{new}", lookup)
    assert change.kind == kind, change.detail
    assert change.breaking is (kind in ("type narrowing", "type change"))
    assert old in change.detail and "app.t.c" in change.detail
    assert lookup.asked == [("app", "t", "c")]


def test_type_change_without_the_old_type_is_breaking() -> None:
    unknown = only("ALTER TABLE t ALTER c TYPE bigint", lookup_from({}))
    assert (unknown.kind, unknown.breaking) == ("type change (old type unknown)", True)
    assert only("ALTER TABLE t ALTER c TYPE bigint").kind == "type change (old type unknown)"


@pytest.mark.parametrize(("info", "breaking"), [
    (ColumnInfo("text", True, True), True),
    (ColumnInfo("text", False, True), False),
    (None, True),
])
def test_drop_default_breaks_only_a_not_null_column(info: ColumnInfo | None, breaking: bool) -> None:
    columns = {("app", "users", "plan"): info} if info else {}
    change = only("ALTER TABLE app.users ALTER COLUMN plan DROP DEFAULT", lookup_from(columns))
    assert (change.kind, change.breaking) == ("drop default", breaking), change.detail


def test_not_valid_constraint_is_still_breaking_for_new_rows() -> None:
    change = only("ALTER TABLE app.users ADD CONSTRAINT email_short CHECK (length(email) < 99) NOT VALID")
    assert change.breaking and change.kind == "new constraint"
    assert "NOT VALID" in change.detail and "from now on" in change.detail
    assert "email_short" in change.detail and "app.users" in change.detail


def test_column_rename_sketches_expand_contract_with_the_type() -> None:
    lookup = lookup_from({("s", "t", "a"): ColumnInfo("character varying(64)", True, False)})
    change = only("ALTER TABLE s.t RENAME COLUMN a TO b", lookup)
    steps = change.expand_contract
    assert [step.split(":")[0] for step in steps] == ["1. add", "2. sync", "3. backfill", "4. switch", "5. drop"]
    assert 'ALTER TABLE "s"."t" ADD COLUMN "b" character varying(64);' in steps[0]
    assert "NOT NULL only after the backfill" in steps[0]
    assert "TRIGGER" in steps[1] and 'ON "s"."t"' in steps[1]
    assert 'UPDATE "s"."t" SET "b" = "a" WHERE "b" IS DISTINCT FROM "a"' in steps[2] and "batches" in steps[2]
    assert "reads and writes b" in steps[3]
    assert "DROP TRIGGER" in steps[4] and steps[4].endswith('ALTER TABLE "s"."t" DROP COLUMN "a";')

    unknown = only("ALTER TABLE s.t RENAME COLUMN a TO b").expand_contract
    assert 'ADD COLUMN "b" <type of "a">;' in unknown[0]


def test_table_rename_sketches_copy_and_view_variants() -> None:
    change = only("ALTER TABLE s.t RENAME TO u")
    steps = change.expand_contract
    assert [step.split(":")[0] for step in steps] == [
        "1. add", "2. sync", "3. backfill", "4. switch", "5. drop", "alternative (no copy)"]
    assert 'CREATE TABLE "s"."u" (LIKE "s"."t" INCLUDING ALL);' in steps[0]
    assert 'INSERT INTO "s"."u" SELECT * FROM "s"."t"' in steps[2]
    assert 'DROP TABLE "s"."t";' in steps[4]
    assert 'ALTER TABLE "s"."t" RENAME TO "u"; CREATE VIEW "s"."t" AS SELECT * FROM "s"."u";' in steps[5]
    view = only("ALTER VIEW s.v RENAME TO w").expand_contract
    assert view[0].startswith('1. add: CREATE VIEW "s"."w"') and view[-1].endswith('DROP VIEW "s"."v";')
    assert only("ALTER TABLE s.t RENAME COLUMN a TO b").expand_contract
    assert only("ALTER TABLE s.t DROP COLUMN a").expand_contract == ()


def test_objects_created_in_the_same_file_are_safe_to_change() -> None:
    text = """CREATE TABLE app.drafts (id bigint, body text);
ALTER TABLE app.drafts ADD CONSTRAINT drafts_pk PRIMARY KEY (id), ALTER body SET NOT NULL;
ALTER TABLE app.drafts RENAME COLUMN body TO text;
ALTER TABLE app.drafts RENAME TO notes;
ALTER TABLE app.notes ALTER COLUMN text TYPE varchar(10);
CREATE UNIQUE INDEX notes_text_key ON app.notes (text);
ALTER TABLE app.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_all ON app.notes USING (true);
CREATE TRIGGER notes_touch BEFORE UPDATE ON app.notes FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE FUNCTION app.note_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM app.notes';
REVOKE ALL ON app.notes FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION app.note_count() FROM PUBLIC;
DROP TABLE app.notes;
"""
    result = classify("V3__drafts.sql", text)
    assert result.verdict == "safe" and not result.unreviewed, result.lines()
    assert [c.kind for c in result.changes] == [
        "create table", "new constraint", "set not null", "rename column", "rename table", "type change",
        "create index", "table change", "policy on new table", "trigger on new table", "create function",
        "revoke", "revoke", "drop table"]
    # the same statements on tables and functions that running versions use
    existing = classify("V3__x.sql", "ALTER TABLE app.users ENABLE ROW LEVEL SECURITY;\n"
                        "CREATE POLICY p ON app.users USING (true);\n"
                        "REVOKE EXECUTE ON FUNCTION app.note_count() FROM PUBLIC;")
    assert [(c.kind, c.breaking, c.reviewed) for c in existing.changes] == [
        ("unclassified DDL", False, False), ("unclassified DDL", False, False), ("revoke", True, True)]


def test_columns_added_in_the_same_file_feed_later_statements() -> None:
    text = """ALTER TABLE app.users ADD COLUMN score integer NOT NULL DEFAULT 0;
ALTER TABLE app.users ALTER COLUMN score DROP DEFAULT;
ALTER TABLE app.users ADD COLUMN nick text;
ALTER TABLE app.users ALTER COLUMN nick SET NOT NULL;
ALTER TABLE app.users ADD COLUMN level integer;
ALTER TABLE app.users ALTER COLUMN level TYPE smallint;
ALTER TABLE app.users RENAME COLUMN level TO rank;
"""
    changes = classify("V4__score.sql", text, lookup_from({})).changes
    assert [(c.line, c.kind, c.breaking) for c in changes] == [
        (1, "add column", False),
        (2, "drop default", True),  # old code inserting without score now fails
        (3, "add column", False),
        (4, "set not null", True),
        (5, "add column", False),
        (6, "type change", False),
        (7, "rename column", False),
    ]


def test_multi_statement_file_keeps_each_statement_line() -> None:
    text = """-- header comment
SET LOCAL ROLE dbops_owner;

CREATE TABLE app.notes (
    id bigint PRIMARY KEY
);
/* a block
   comment */
ALTER TABLE app.users
    ADD COLUMN nick text,
    DROP COLUMN email;
COMMENT ON TABLE app.notes IS 'x;y';
DROP TABLE app.orders, app.payments;
"""
    result = classify("V5__mixed.sql", text)
    assert [(c.line, c.kind, c.breaking) for c in result.changes] == [
        (2, "other", False), (4, "create table", False), (9, "add column", False), (9, "drop column", True),
        (12, "comment", False), (13, "drop table", True), (13, "drop table", True),
    ]
    assert "app.payments" in result.changes[-1].detail
    assert result.verdict == "breaking" and result.breaking
    lines = result.lines()
    assert lines[0] == "V5__mixed.sql: breaking (3 changes break running application versions)"
    assert lines[4].startswith("  line 9: BREAKING drop column: ")
    assert len(lines) == 1 + len(result.changes)


def test_rendering_indents_the_steps() -> None:
    lines = classify("V6__r.sql", "ALTER TABLE s.t RENAME COLUMN a TO b;").lines()
    assert lines[1].startswith("  line 1: BREAKING rename column: renames column s.t.a to b")
    assert [line[:9] for line in lines[2:]] == ["      1. ", "      2. ", "      3. ", "      4. ", "      5. "]


def test_unparseable_text_is_one_breaking_change() -> None:
    result = classify("V7__bad.sql", "SELECT 1;\nALTER TABLE app.users ADD COLUMN;\n")
    assert result.changes == (result.changes[0],)
    change = result.changes[0]
    assert (change.line, change.kind, change.breaking) == (2, "unparseable", True)
    assert "syntax error" in change.detail
    assert result.verdict == "breaking"


def test_nothing_to_classify() -> None:
    result = classify("V8__empty.sql", "-- nothing here\n\n/* still nothing */\n")
    assert result == Compatibility("V8__empty.sql", ())
    assert result.verdict == "nothing to classify" and not result.breaking
    assert result.lines() == ["V8__empty.sql: nothing to classify"]


# ---- the live catalog ------------------------------------------------------------------------------------------------

def test_catalog_lookup_on_the_reference_schema(migrated_db: str) -> None:
    with connection(migrated_db) as conn:
        lookup = catalog_lookup(conn)
        assert lookup("app", "products", "price") == ColumnInfo("numeric(12,2)", True, False)
        assert lookup("app", "users", "id") == ColumnInfo("bigint", True, True)  # identity: a default
        assert lookup("app", "users", "nope") is None
        assert lookup("nope", "users", "email") is None
        conn.execute("SET search_path = app")
        assert lookup(None, "users", "email") == ColumnInfo("text", True, False)

        text = """SET LOCAL ROLE dbops_owner;
ALTER TABLE app.users RENAME COLUMN email TO email_address;
ALTER TABLE app.products ALTER COLUMN sku TYPE varchar(32);
ALTER TABLE app.products ALTER COLUMN price TYPE numeric(14,2);
ALTER TABLE app.orders ALTER COLUMN tenant_id TYPE integer;
ALTER TABLE app.tenants ALTER COLUMN plan DROP DEFAULT;
"""
        result = classify("V17__rename_email.sql", text, lookup)
    kinds = [(c.line, c.kind, c.breaking) for c in result.changes]
    assert kinds == [(1, "other", False), (2, "rename column", True), (3, "type narrowing", True),
                     (4, "type widening", False), (5, "type narrowing", True), (6, "drop default", True)]
    rename = result.changes[1]
    assert 'ALTER TABLE "app"."users" ADD COLUMN "email_address" text;' in rename.expand_contract[0]
    assert "from text to varchar(32)" in result.changes[2].detail
    assert "from bigint to integer" in result.changes[4].detail


def test_catalog_lookup_caches_answers(migrated_db: str) -> None:
    with connection(migrated_db) as conn, connection(migrated_db) as other:
        lookup = catalog_lookup(conn)
        before = lookup("app", "inventory", "reserved")
        assert before == ColumnInfo("integer", True, True)
        other.execute("ALTER TABLE app.inventory ALTER COLUMN reserved DROP DEFAULT")
        assert lookup("app", "inventory", "reserved") is before
        assert catalog_lookup(conn)("app", "inventory", "reserved") == ColumnInfo("integer", True, False)


_NARROWER = {"bigint": "integer", "integer": "smallint", "text": "varchar(8)"}


def test_catalog_lookup_on_team_schemas(foreign_db: tuple[ForeignSchema, str]) -> None:
    schema, url = foreign_db
    with connection(url) as conn:
        row = conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0 "
            "AND NOT a.attisdropped AND format_type(a.atttypid, a.atttypmod) = ANY(%s) "
            "ORDER BY c.relname, a.attnum LIMIT 1",
            (schema.default_schema, list(_NARROWER)),
        ).fetchone()
        assert row is not None, f"no {list(_NARROWER)} column in {schema.default_schema}"
        table, column, old_type = row
        lookup = catalog_lookup(conn)
        text = f"ALTER TABLE {schema.default_schema}.{table} ALTER COLUMN {column} TYPE {_NARROWER[old_type]};"
        change = only(text, lookup)
        assert (change.kind, change.breaking) == ("type narrowing", True), change.detail
        assert f"{schema.default_schema}.{table}.{column} from {old_type}" in change.detail
        conn.execute("SELECT set_config('search_path', %s, false)", (schema.default_schema,))
        unqualified = only(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {_NARROWER[old_type]};", lookup)
        assert unqualified.kind == "type narrowing" and f"from {old_type}" in unqualified.detail
        assert lookup(None, table, "no_such_column") is None

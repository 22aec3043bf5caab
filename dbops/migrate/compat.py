"""Is a pending migration safe for the application versions still running while (and after) it is deployed?

During a rolling deploy the old application keeps running against the migrated schema: a migration is *breaking*
when code written for the schema before it would fail afterwards (a column it reads is gone or renamed, an insert
that omits a new column violates NOT NULL, a value it writes no longer fits a narrowed type...). Each top-level
statement of a file (split with :func:`dbops.migrate.files.split_statements`, so lines match what `apply` reports)
is parsed with pglast and classified as one or more :class:`Change` entries, statically.

What static reading cannot know comes from an optional lookup ``column_info(schema, table, column)`` returning a
:class:`ColumnInfo` (the column's ``format_type`` text, NOT NULL, whether it has a default), ``None`` when unknown:
:func:`catalog_lookup` builds one from a live database. Without it a type change is "old type unknown" (breaking)
and dropping a default of a column of unknown nullability is breaking.

Objects created earlier in the same file (tables, schemas) are new to every running version, so changes to them
are safe; columns added earlier in the file feed the lookup (a ``NOT NULL DEFAULT 0`` column whose default is then
dropped is still breaking: old code inserting without it fails). Statements that run code (DO blocks, CALL) and DDL
not recognised here are marked ``reviewed=False``: not counted as breaking, but shown for a person to check.
Placeholders (``${x}``) must be replaced before classifying: PostgreSQL's grammar does not take them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import psycopg
from pglast import ast, parse_sql
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType, GrantTargetType, ObjectType
from pglast.parser import ParseError
from pglast.stream import RawStream
from psycopg import sql

from dbops.migrate.files import SqlRefused, split_statements
from dbops.redact import redact


@dataclass(frozen=True)
class ColumnInfo:
    """A column of the live database: its type as ``format_type`` prints it ("character varying(64)", "bigint",
    "numeric(10,2)"), whether it is NOT NULL, and whether it has a default (identity and generated columns do)."""

    type: str
    not_null: bool
    has_default: bool


ColumnLookup = Callable[[str | None, str, str], ColumnInfo | None]


@dataclass(frozen=True)
class Change:
    """One change a statement makes, classified for running application versions."""

    line: int  # 1-based line of the statement in the file
    kind: str  # e.g. "rename column"
    breaking: bool
    detail: str  # one sentence naming the object and why old code breaks (or why it does not); never the statement
    expand_contract: tuple[str, ...] = ()  # for a rename: the expand/contract sequence that avoids the break
    reviewed: bool = True  # False: not understood here (DO block, unknown DDL); a person should read the statement


@dataclass(frozen=True)
class Compatibility:
    """The classification of one migration file."""

    script: str
    changes: tuple[Change, ...]

    @property
    def breaking(self) -> bool:
        return any(c.breaking for c in self.changes)

    @property
    def unreviewed(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if not c.reviewed)

    @property
    def verdict(self) -> str:
        """``breaking``, ``safe``, or ``nothing to classify`` for a file without statements."""
        if not self.changes:
            return "nothing to classify"
        return "breaking" if self.breaking else "safe"

    def lines(self) -> list[str]:
        """Plain text for the CLI: a header, then one line per change and its expand/contract steps indented."""
        header = f"{self.script}: {self.verdict}"
        if self.breaking:
            count = sum(c.breaking for c in self.changes)
            header += f" ({count} change{'s break' if count != 1 else ' breaks'} running application versions)"
        if self.unreviewed:
            header += f", {len(self.unreviewed)} to review by hand"
        out = [header]
        for change in self.changes:
            label = "BREAKING" if change.breaking else ("REVIEW" if not change.reviewed else "safe")
            out.append(f"  line {change.line}: {label} {change.kind}: {change.detail}")
            out.extend(f"      {step}" for step in change.expand_contract)
        return out


# ---- the live catalog ----------------------------------------------------------------------------------------------

_COLUMN_QUERY = sql.SQL(
    "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef OR a.attidentity <> '' "
    "FROM pg_catalog.pg_attribute a "
    "WHERE a.attrelid = pg_catalog.to_regclass(CASE WHEN %(schema)s::text IS NULL THEN quote_ident(%(table)s) "
    "ELSE quote_ident(%(schema)s) || '.' || quote_ident(%(table)s) END) "
    "AND a.attname = %(column)s AND a.attnum > 0 AND NOT a.attisdropped"
)


def catalog_lookup(conn: psycopg.Connection) -> Callable[[str | None, str, str], ColumnInfo | None]:
    """A ``column_info`` lookup reading pg_attribute of the database ``conn`` is connected to.

    An unqualified table resolves through the connection's search_path (``to_regclass``), as the migration's own
    statements would. Answers are cached per (schema, table, column) for the life of the lookup; ``None`` when the
    table or column does not exist. Reads in the connection's current transaction (one is opened unless autocommit).
    """
    cache: dict[tuple[str | None, str, str], ColumnInfo | None] = {}

    def lookup(schema: str | None, table: str, column: str) -> ColumnInfo | None:
        key = (schema, table, column)
        if key not in cache:
            row = conn.execute(_COLUMN_QUERY, {"schema": schema, "table": table, "column": column}).fetchone()
            cache[key] = ColumnInfo(row[0], bool(row[1]), bool(row[2])) if row else None
        return cache[key]

    return lookup


# ---- types: what a column can hold -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Type:
    name: str  # canonical: int4, varchar, numeric, timestamptz... or schema.name for a user type
    mods: tuple[int, ...] | None  # typmods as written; None when not plain integers
    array: bool
    shown: str


_INT_RANK = {"int2": 1, "int4": 2, "int8": 3}
_FLOAT_RANK = {"float4": 1, "float8": 2}
_UNBOUNDED_TEXT = frozenset({"text", "varchar"})
_PRECISION_TYPES = frozenset({"timestamptz", "timestamp", "time", "timetz"})  # (p), default 6
_DATE_FROM = frozenset({"timestamptz", "timestamp"})


def _type_of(node: ast.TypeName, shown: str | None = None) -> _Type:
    names = tuple(n.sval for n in node.names or ())
    if len(names) == 2 and names[0] == "pg_catalog" or len(names) == 1:
        name = names[-1]
    else:
        name = ".".join(names)
    mods: tuple[int, ...] | None = ()
    for mod in node.typmods or ():
        if isinstance(mod, ast.A_Const) and isinstance(mod.val, ast.Integer):
            mods = (*mods, mod.val.ival) if mods is not None else None
        else:
            mods = None
    if node.pct_type:
        mods = None
    return _Type(name, mods, bool(node.arrayBounds), shown if shown is not None else RawStream()(node))


def _parse_type(text: str) -> _Type | None:
    """The type a ``format_type`` text names, read by PostgreSQL's grammar; None when it is not a single type."""
    try:
        # Parsed locally, never executed: a cast is the smallest statement holding a type name.
        parsed = parse_sql("SELECT NULL::" + text)
    except ParseError:
        return None
    if len(parsed) != 1 or not isinstance(parsed[0].stmt, ast.SelectStmt):
        return None
    targets = parsed[0].stmt.targetList or ()
    if len(targets) != 1 or not isinstance(targets[0].val, ast.TypeCast):
        return None
    return _type_of(targets[0].val.typeName, text)


def _numeric_fits(old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """Does numeric(new) hold every value numeric(old) does (as many digits before and after the point)?"""
    p, s = old[0], old[1] if len(old) > 1 else 0
    p2, s2 = new[0], new[1] if len(new) > 1 else 0
    return s2 >= s and p2 - s2 >= p - s


def _compare_types(old: _Type, new: _Type) -> tuple[str, bool, str]:
    """(kind, breaking, why) for a column going from ``old`` to ``new``."""
    narrowing = ("type narrowing", True, "the new type holds fewer values, so values running versions write may "
                 "no longer fit (or are rounded)")
    widening = ("type widening", False, "every value of the old type fits the new one")
    other = ("type change", True, "running versions read and write values of the old type, which the new one "
             "does not take or returns differently")
    if old.array != new.array or old.mods is None or new.mods is None:
        return other
    if (old.name, old.mods) == (new.name, new.mods):
        return "type unchanged", False, "the column keeps its type"
    if new.name == "varchar" and new.mods:
        if old.name == "varchar" and old.mods and old.mods[0] <= new.mods[0]:
            return widening
        return narrowing
    if new.name in _UNBOUNDED_TEXT and not new.mods:
        return widening if old.name in _UNBOUNDED_TEXT else other
    if old.name in _INT_RANK and new.name in _INT_RANK:
        return widening if _INT_RANK[new.name] > _INT_RANK[old.name] else narrowing
    if old.name in _FLOAT_RANK and new.name in _FLOAT_RANK:
        return widening if _FLOAT_RANK[new.name] > _FLOAT_RANK[old.name] else narrowing
    if old.name == new.name == "numeric":
        if not new.mods:
            return widening
        if not old.mods:
            return narrowing
        return widening if _numeric_fits(old.mods, new.mods) else narrowing
    if old.name == new.name and old.name in _PRECISION_TYPES:
        before, after = (old.mods or (6,))[0], (new.mods or (6,))[0]
        return widening if after >= before else narrowing
    if old.name in _DATE_FROM and new.name == "date":
        return narrowing
    return other


# ---- names -------------------------------------------------------------------------------------------------------

_RelKey = tuple[str | None, str]


def _rel_key(rv: ast.RangeVar) -> _RelKey:
    return rv.schemaname, rv.relname


def _rel_name(rv: ast.RangeVar) -> str:
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else rv.relname


def _object_name(obj: object) -> str:
    """A readable dotted name for the object nodes DROP / RENAME / COMMENT carry."""
    if isinstance(obj, ast.RangeVar):
        return _rel_name(obj)
    if isinstance(obj, ast.String):
        return obj.sval
    if isinstance(obj, ast.ObjectWithArgs):
        return _object_name(obj.objname)
    if isinstance(obj, ast.TypeName):
        return ".".join(n.sval for n in obj.names or ())
    if isinstance(obj, (tuple, list)):
        return ".".join(_object_name(part) for part in obj)
    return "?"


def _ident(*parts: str | None) -> sql.Composable:
    return sql.Identifier(*(p for p in parts if p))


def _text(composed: sql.Composable) -> str:
    return composed.as_string(None)


_RELATIONS = {ObjectType.OBJECT_TABLE: "table", ObjectType.OBJECT_FOREIGN_TABLE: "foreign table",
              ObjectType.OBJECT_VIEW: "view", ObjectType.OBJECT_MATVIEW: "materialized view"}
_FUNCTIONS = {ObjectType.OBJECT_FUNCTION: "function", ObjectType.OBJECT_PROCEDURE: "procedure",
              ObjectType.OBJECT_ROUTINE: "routine", ObjectType.OBJECT_AGGREGATE: "aggregate"}
_TYPES = {ObjectType.OBJECT_TYPE: "type", ObjectType.OBJECT_DOMAIN: "domain"}
_INTERNAL_NAMES = {ObjectType.OBJECT_INDEX: "index", ObjectType.OBJECT_TRIGGER: "trigger",
                   ObjectType.OBJECT_POLICY: "policy", ObjectType.OBJECT_RULE: "rule",
                   ObjectType.OBJECT_STATISTIC_EXT: "statistics object"}

# Statements that change no schema: safe "other" (data changes get their own kind).
_NO_SCHEMA = (ast.SelectStmt, ast.VariableSetStmt, ast.VariableShowStmt, ast.TransactionStmt, ast.ExplainStmt,
              ast.LockStmt, ast.VacuumStmt, ast.NotifyStmt, ast.ListenStmt, ast.UnlistenStmt, ast.CheckPointStmt,
              ast.DiscardStmt, ast.PrepareStmt, ast.ExecuteStmt, ast.DeallocateStmt, ast.ClusterStmt,
              ast.ReindexStmt, ast.RefreshMatViewStmt, ast.ConstraintsSetStmt, ast.DeclareCursorStmt,
              ast.FetchStmt, ast.ClosePortalStmt)
_DATA = {ast.InsertStmt: "INSERT into", ast.UpdateStmt: "UPDATE of", ast.DeleteStmt: "DELETE from",
         ast.MergeStmt: "MERGE into"}
# ALTER TABLE subcommands that change neither names, types nor what rows are accepted.
_SETTINGS = frozenset({AT.AT_SetStatistics, AT.AT_SetOptions, AT.AT_ResetOptions, AT.AT_SetStorage,
                       AT.AT_SetCompression, AT.AT_ClusterOn, AT.AT_DropCluster, AT.AT_SetRelOptions,
                       AT.AT_ResetRelOptions, AT.AT_ReplaceRelOptions, AT.AT_SetTableSpace, AT.AT_ReplicaIdentity,
                       AT.AT_SetIdentity, AT.AT_SetLogged, AT.AT_SetUnLogged, AT.AT_SetAccessMethod})
_NEW_CONSTRAINTS = {ConstrType.CONSTR_CHECK: "CHECK", ConstrType.CONSTR_UNIQUE: "UNIQUE",
                    ConstrType.CONSTR_FOREIGN: "FOREIGN KEY", ConstrType.CONSTR_EXCLUSION: "EXCLUDE",
                    ConstrType.CONSTR_PRIMARY: "PRIMARY KEY", ConstrType.CONSTR_NOTNULL: "NOT NULL"}
_SERIALS = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
_NEW_OBJECT = "created earlier in this file, so no running application version uses it"


# ---- expand / contract sketches ------------------------------------------------------------------------------------

def _column_rename_steps(rv: ast.RangeVar, old: str, new: str, info: ColumnInfo | None) -> tuple[str, ...]:
    table = _ident(rv.schemaname, rv.relname)
    col_type = sql.SQL(info.type) if info else sql.SQL("<type of {}>").format(sql.Identifier(old))
    trigger = f"{rv.relname}_sync_{old}_{new}"[:63]
    function = _ident(rv.schemaname, trigger)
    add = _text(sql.SQL("ALTER TABLE {} ADD COLUMN {} {};").format(table, sql.Identifier(new), col_type))
    if info and info.has_default:
        add += f" (with the default of {old})"
    if info and info.not_null:
        add += f" (NOT NULL only after the backfill: a CHECK ({new} IS NOT NULL) NOT VALID, then validated)"
    sync = _text(sql.SQL("CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}();")
                 .format(sql.Identifier(trigger), table, function))
    backfill = _text(sql.SQL("UPDATE {} SET {} = {} WHERE {} IS DISTINCT FROM {};").format(
        table, sql.Identifier(new), sql.Identifier(old), sql.Identifier(new), sql.Identifier(old)))
    drop = _text(sql.SQL("DROP TRIGGER {} ON {}; DROP FUNCTION {}(); ALTER TABLE {} DROP COLUMN {};").format(
        sql.Identifier(trigger), table, function, table, sql.Identifier(old)))
    return (
        f"1. add: {add}",
        f"2. sync: {sync} (the function copies {old} to {new} when old code wrote {old}, and {new} to {old} when "
        f"new code wrote {new}, on INSERT and UPDATE while both columns exist)",
        f"3. backfill: {backfill} (in batches of a few thousand rows by primary key, one transaction each)",
        f"4. switch: deploy the application version that reads and writes {new}; wait until no running version "
        f"uses {old}",
        f"5. drop: in a later migration, {drop}",
    )


def _table_rename_steps(rv: ast.RangeVar, new: str, kind: str) -> tuple[str, ...]:
    old = _ident(rv.schemaname, rv.relname)
    renamed = _ident(rv.schemaname, new)
    if kind in ("view", "materialized view"):
        create = "CREATE MATERIALIZED VIEW" if kind == "materialized view" else "CREATE VIEW"
        return (
            f"1. add: {create} {_text(renamed)} AS <the query of {_text(old)}>;",
            f"2. switch: deploy the application version that reads {_text(renamed)}; wait until no running "
            f"version uses {_text(old)}",
            f"3. drop: in a later migration, DROP {create[7:]} {_text(old)};",
        )
    copy = _text(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL);").format(renamed, old))
    backfill = _text(sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {} ON CONFLICT DO NOTHING;").format(
        renamed, old, sql.SQL("<key range>")))
    view = _text(sql.SQL("ALTER TABLE {} RENAME TO {}; CREATE VIEW {} AS SELECT * FROM {};").format(
        old, sql.Identifier(new), old, renamed))
    return (
        f"1. add: {copy}",
        f"2. sync: row triggers on {_text(old)} that repeat every INSERT, UPDATE and DELETE on {_text(renamed)} "
        "(and back, guarded with pg_trigger_depth() = 1) while both tables are written",
        f"3. backfill: {backfill} (in batches by primary key, one transaction each)",
        f"4. switch: deploy the application version that reads and writes {_text(renamed)}; wait until no "
        f"running version uses {_text(old)}",
        f"5. drop: in a later migration, drop the triggers, then DROP TABLE {_text(old)};",
        f"alternative (no copy): {view} in one migration: a simple view is updatable, so old code keeps reading "
        "and writing through it (but TRUNCATE and COPY FROM do not take a view); drop the view once no running "
        "version uses the old name",
    )


# ---- classification --------------------------------------------------------------------------------------------------

@dataclass
class _File:
    """What the statements so far in the file created: new to every running version."""

    lookup: ColumnLookup | None
    tables: set[_RelKey] = field(default_factory=set)
    schemas: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)  # dotted names of functions CREATEd (not OR REPLACEd) here
    columns: dict[tuple[str | None, str, str], ColumnInfo] = field(default_factory=dict)  # added in this file

    def new_table(self, rv: ast.RangeVar) -> bool:
        return _rel_key(rv) in self.tables or bool(rv.schemaname and rv.schemaname in self.schemas)

    def new_column(self, rv: ast.RangeVar, column: str) -> bool:
        return (rv.schemaname, rv.relname, column) in self.columns

    def column(self, rv: ast.RangeVar, column: str) -> ColumnInfo | None:
        local = self.columns.get((rv.schemaname, rv.relname, column))
        if local is not None:
            return local
        return self.lookup(rv.schemaname, rv.relname, column) if self.lookup else None


def classify(script: str, text: str, column_info: ColumnLookup | None = None) -> Compatibility:
    """Classify every statement of the migration ``script`` (its SQL ``text``) for running application versions.

    ``column_info(schema or None, table, column)`` tells what the live database holds (see :func:`catalog_lookup`);
    without it type changes and dropped defaults are judged without the old column. A text PostgreSQL's parser
    cannot take gives one breaking "unparseable" change (``apply`` refuses such a file anyway).
    """
    try:
        statements = split_statements(text)
    except SqlRefused as exc:
        return Compatibility(script, (Change(exc.found.line, "unparseable", True, redact(exc.found.problem)),))
    state = _File(column_info)
    changes: list[Change] = []
    for statement in statements:
        try:
            parsed = parse_sql(statement.text)
        except ParseError as exc:
            message = str(exc.args[0]) if exc.args else str(exc)
            changes.append(Change(statement.line, "unparseable", True, redact(message)))
            continue
        for raw in parsed:
            changes.extend(replace(c, line=statement.line) for c in _statement(raw.stmt, state))
    return Compatibility(script, tuple(changes))


def _change(kind: str, breaking: bool, detail: str, steps: tuple[str, ...] = (), reviewed: bool = True) -> Change:
    return Change(0, kind, breaking, detail, steps, reviewed)


def _unclassified(node: object, what: str | None = None) -> Change:
    name = what or type(node).__name__
    return _change("unclassified DDL", False, f"{name} is not classified here: check by hand whether running "
                   "application versions still work after it", reviewed=False)


def _statement(node: object, state: _File) -> list[Change]:
    if isinstance(node, ast.AlterTableStmt):
        return [_alter_table_cmd(node.relation, cmd, state) for cmd in node.cmds or ()]
    if isinstance(node, ast.RenameStmt):
        return [_rename(node, state)]
    if isinstance(node, ast.DropStmt):
        return [_drop(node.removeType, obj, state) for obj in node.objects or ()]
    if isinstance(node, ast.AlterObjectSchemaStmt):
        return [_move(node, state)]
    if isinstance(node, (ast.GrantStmt, ast.GrantRoleStmt)):
        return [_grant(node, state)]
    return [_other(node, state)]


def _other(node: object, state: _File) -> Change:
    """Creations, comments, data changes and statements that change no schema."""
    if isinstance(node, ast.CreateStmt):
        state.tables.add(_rel_key(node.relation))
        part = " as a partition" if node.partbound else ""
        return _change("create table", False, f"creates table {_rel_name(node.relation)}{part}: nothing running "
                       "uses it yet")
    if isinstance(node, ast.CreateTableAsStmt) or isinstance(node, ast.SelectStmt) and node.intoClause:
        rel = node.into.rel if isinstance(node, ast.CreateTableAsStmt) else node.intoClause.rel
        state.tables.add(_rel_key(rel))
        view = isinstance(node, ast.CreateTableAsStmt) and node.objtype == ObjectType.OBJECT_MATVIEW
        return _change("create view" if view else "create table", False,
                       f"creates {'materialized view' if view else 'table'} {_rel_name(rel)}: nothing running uses "
                       "it yet")
    if isinstance(node, ast.ViewStmt):
        if node.replace:
            return _change("create or replace view", False, f"replaces view {_rel_name(node.view)}: PostgreSQL "
                           "only lets it append columns, so the columns running versions read stay")
        state.tables.add(_rel_key(node.view))
        return _change("create view", False, f"creates view {_rel_name(node.view)}: nothing running uses it yet")
    if isinstance(node, ast.IndexStmt):
        return _index(node, state)
    if isinstance(node, ast.CreateSchemaStmt):
        name = node.schemaname or _role(node.authrole)
        state.schemas.add(name)
        return _change("create schema", False, f"creates schema {name}: nothing running uses it yet")
    if isinstance(node, ast.CreateFunctionStmt):
        what = "procedure" if node.is_procedure else "function"
        if not node.replace:
            state.functions.add(_object_name(node.funcname))
        return _change("create function", False, f"creates {what} {_object_name(node.funcname)} (a replaced body "
                       "is not compared with the old one)")
    if isinstance(node, (ast.CreateEnumStmt, ast.CompositeTypeStmt, ast.CreateDomainStmt, ast.CreateRangeStmt)):
        name = node.typevar if isinstance(node, ast.CompositeTypeStmt) else getattr(
            node, "typeName", None) or getattr(node, "domainname", None)
        return _change("create type", False, f"creates type {_object_name(name)}: nothing running uses it yet")
    if isinstance(node, ast.CreateSeqStmt):
        return _change("create sequence", False, f"creates sequence {_rel_name(node.sequence)}: nothing running "
                       "uses it yet")
    if isinstance(node, ast.CreateExtensionStmt):
        return _change("create extension", False, f"creates extension {node.extname}: it only adds objects")
    if isinstance(node, ast.AlterEnumStmt):
        name = _object_name(node.typeName)
        if node.oldVal is not None:
            return _change("rename enum value", True, f"renames a value of enum {name}: running versions still "
                           "write and compare the old label")
        return _change("add enum value", False, f"adds a value to enum {name}: the values running versions use stay")
    if isinstance(node, ast.CommentStmt):
        return _change("comment", False, "a comment changes nothing an application reads or writes")
    if isinstance(node, ast.AlterDefaultPrivilegesStmt):
        return _change("default privileges", False, "changes the privileges of objects created later only")
    if isinstance(node, (ast.CreateTrigStmt, ast.CreatePolicyStmt, ast.AlterPolicyStmt)):
        rel = node.relation if isinstance(node, ast.CreateTrigStmt) else node.table
        what = "trigger" if isinstance(node, ast.CreateTrigStmt) else "policy"
        if state.new_table(rel):
            return _change(f"{what} on new table", False, f"adds a {what} to {_rel_name(rel)}, {_NEW_OBJECT}")
        return _change("unclassified DDL", False, f"a {what} on {_rel_name(rel)} may reject or hide rows running "
                       "versions write or read: check it by hand", reviewed=False)
    if isinstance(node, ast.DoStmt):
        return _change("unclassified (DO block)", False, "the statements of a DO block cannot be read statically: "
                       "check by hand what it changes", reviewed=False)
    if isinstance(node, ast.CallStmt):
        return _change("unclassified (CALL)", False, "a procedure call may change anything: check by hand what "
                       "it changes", reviewed=False)
    for stmt_type, verb in _DATA.items():
        if isinstance(node, stmt_type):
            return _change("data change", False, f"{verb} {_rel_name(node.relation)}: a data change keeps the "
                           "schema running versions use")
    if isinstance(node, ast.TruncateStmt):
        names = ", ".join(_rel_name(r) for r in node.relations or ())
        return _change("data change", False, f"TRUNCATE of {names}: a data change keeps the schema running "
                       "versions use")
    if isinstance(node, ast.CopyStmt):
        target = _rel_name(node.relation) if node.relation else "a query"
        return _change("data change" if node.is_from else "other", False,
                       f"COPY {'into' if node.is_from else 'from'} {target}: keeps the schema running versions use")
    if isinstance(node, _NO_SCHEMA):
        return _change("other", False, f"{type(node).__name__.removesuffix('Stmt')} changes no schema")
    return _unclassified(node)


def _index(node: ast.IndexStmt, state: _File) -> Change:
    name = _rel_name(node.relation)
    unique = "unique " if node.unique else ""
    index = f"{unique}index {node.idxname} on {name}" if node.idxname else f"a {unique}index on {name}"
    if node.unique and not state.new_table(node.relation):
        return _change("new constraint", True, f"creates {index}: running versions may write rows it rejects as "
                       "duplicates")
    return _change("create index", False, f"creates {index}: query results do not change (locking is checked "
                   "separately)")


def _grant(node: ast.GrantStmt | ast.GrantRoleStmt, state: _File) -> Change:
    if isinstance(node, ast.GrantRoleStmt):
        roles = ", ".join(r.priv_name for r in node.granted_roles or ())
        grantees = ", ".join(_role(r) for r in node.grantee_roles or ())
        if node.is_grant:
            return _change("grant", False, f"grants membership in {roles} to {grantees}: it only adds rights")
        return _change("revoke", True, f"revokes membership in {roles} from {grantees}: running versions using "
                       "those rights fail with permission denied")
    objects = ", ".join(_object_name(o) for o in node.objects or ()) or "objects"
    if node.targtype == GrantTargetType.ACL_TARGET_ALL_IN_SCHEMA:
        objects = f"all {node.objtype.name.removeprefix('OBJECT_').lower()}s in schema {objects}"
    grantees = ", ".join(_role(r) for r in node.grantees or ())
    if node.is_grant:
        return _change("grant", False, f"grants privileges on {objects} to {grantees}: it only adds rights")
    if node.objects and all(_new_object(node, obj, state) for obj in node.objects):
        return _change("revoke", False, f"revokes privileges on {objects} from {grantees}, {_NEW_OBJECT}")
    return _change("revoke", True, f"revokes privileges on {objects} from {grantees}: running versions using them "
                   "fail with permission denied")


def _new_object(node: ast.GrantStmt, obj: object, state: _File) -> bool:
    """Was the object of a REVOKE created earlier in this file?"""
    if node.targtype == GrantTargetType.ACL_TARGET_ALL_IN_SCHEMA or node.objtype == ObjectType.OBJECT_SCHEMA:
        return _object_name(obj) in state.schemas
    if isinstance(obj, ast.RangeVar):
        return state.new_table(obj)
    if isinstance(obj, ast.ObjectWithArgs):
        return _object_name(obj) in state.functions
    return False


def _role(spec: object) -> str:
    if isinstance(spec, ast.RoleSpec):
        return spec.rolename or spec.roletype.name.removeprefix("ROLESPEC_").lower()
    return "?"


def _drop(remove: ObjectType, obj: object, state: _File) -> Change:
    name = _object_name(obj)
    if remove in _RELATIONS:
        rv = _range_var(obj)
        if rv is not None and state.new_table(rv):
            return _change("drop table", False, f"drops {_RELATIONS[remove]} {name}, {_NEW_OBJECT}")
        return _change("drop table", True, f"drops {_RELATIONS[remove]} {name}: running versions that read or "
                       "write it fail")
    if remove == ObjectType.OBJECT_SCHEMA:
        if name in state.schemas:
            return _change("drop schema", False, f"drops schema {name}, {_NEW_OBJECT}")
        return _change("drop schema", True, f"drops schema {name} and what it holds: running versions using it fail")
    if remove in _FUNCTIONS:
        return _change("drop function", True, f"drops {_FUNCTIONS[remove]} {name}: running versions calling it fail")
    if remove in _TYPES:
        return _change("drop type", True, f"drops {_TYPES[remove]} {name}: running versions casting to it fail")
    if remove == ObjectType.OBJECT_SEQUENCE:
        return _change("drop sequence", True, f"drops sequence {name}: running versions calling nextval on it fail")
    if remove == ObjectType.OBJECT_INDEX:
        return _change("drop index", False, f"drops index {name}: query results do not change (plans and "
                       "ON CONFLICT inference may)")
    return _unclassified(obj, f"DROP {remove.name.removeprefix('OBJECT_')} {name}")


def _range_var(obj: object) -> ast.RangeVar | None:
    """A DROP's dotted name as a RangeVar, to compare with what this file created."""
    parts = [p.sval for p in obj] if isinstance(obj, (tuple, list)) else []
    if len(parts) == 1:
        return ast.RangeVar(relname=parts[0])
    if len(parts) == 2:
        return ast.RangeVar(schemaname=parts[0], relname=parts[1])
    return None


def _move(node: ast.AlterObjectSchemaStmt, state: _File) -> Change:
    if node.relation is not None and (node.objectType in _RELATIONS or node.objectType == ObjectType.OBJECT_SEQUENCE):
        name = _rel_name(node.relation)
        if state.new_table(node.relation):
            return _change("move table", False, f"moves {name} to schema {node.newschema}, {_NEW_OBJECT}")
        return _change("move table", True, f"moves {name} to schema {node.newschema}: running versions naming it "
                       "by its schema (or finding it on their search_path) fail")
    if node.objectType in _FUNCTIONS or node.objectType in _TYPES:
        what = "function" if node.objectType in _FUNCTIONS else "type"
        return _change(f"move {what}", True, f"moves {what} {_object_name(node.object)} to schema "
                       f"{node.newschema}: running versions naming it by its old schema fail")
    return _unclassified(node, f"ALTER {node.objectType.name.removeprefix('OBJECT_')} SET SCHEMA")


def _rename(node: ast.RenameStmt, state: _File) -> Change:
    kind = node.renameType
    if kind == ObjectType.OBJECT_COLUMN and node.relation is not None:
        rv, old, new = node.relation, node.subname, node.newname
        name = f"{_rel_name(rv)}.{old}"
        if state.new_table(rv) or state.new_column(rv, old):
            if info := state.columns.pop((rv.schemaname, rv.relname, old), None):
                state.columns[(rv.schemaname, rv.relname, new)] = info
            return _change("rename column", False, f"renames column {name} to {new}, {_NEW_OBJECT}")
        steps = ()
        if node.relationType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_FOREIGN_TABLE):
            steps = _column_rename_steps(rv, old, new, state.column(rv, old))
        return _change("rename column", True, f"renames column {name} to {new}: running versions still read and "
                       f"write {old} and fail until every one of them is replaced", steps)
    if kind in _RELATIONS and node.relation is not None:
        rv = node.relation
        what = _RELATIONS[kind]
        if state.new_table(rv):
            state.tables.add((rv.schemaname, node.newname))
            return _change("rename table", False, f"renames {what} {_rel_name(rv)} to {node.newname}, {_NEW_OBJECT}")
        return _change("rename table", True, f"renames {what} {_rel_name(rv)} to {node.newname}: running versions "
                       "still use the old name and fail", _table_rename_steps(rv, node.newname, what))
    if kind == ObjectType.OBJECT_SCHEMA:
        if node.subname in state.schemas:
            return _change("rename schema", False, f"renames schema {node.subname} to {node.newname}, {_NEW_OBJECT}")
        return _change("rename schema", True, f"renames schema {node.subname} to {node.newname}: running versions "
                       "naming it (or finding tables on their search_path) fail")
    if kind in _FUNCTIONS:
        return _change("rename function", True, f"renames {_FUNCTIONS[kind]} {_object_name(node.object)} to "
                       f"{node.newname}: running versions calling it fail")
    if kind in _TYPES:
        return _change("rename type", True, f"renames {_TYPES[kind]} {_object_name(node.object)} to "
                       f"{node.newname}: running versions casting to it fail")
    if kind == ObjectType.OBJECT_SEQUENCE and node.relation is not None:
        return _change("rename sequence", True, f"renames sequence {_rel_name(node.relation)} to {node.newname}: "
                       "running versions calling nextval on it fail")
    if kind == ObjectType.OBJECT_TABCONSTRAINT and node.relation is not None:
        return _change("rename constraint", False, f"renames constraint {node.subname} of "
                       f"{_rel_name(node.relation)} to {node.newname}: only code naming it (ON CONFLICT ON "
                       "CONSTRAINT, error handling) is affected")
    if kind in _INTERNAL_NAMES:
        owner = f" of {_rel_name(node.relation)}" if node.relation is not None and node.subname else ""
        target = node.subname or (_rel_name(node.relation) if node.relation is not None else "")
        return _change("rename", False, f"renames {_INTERNAL_NAMES[kind]} {target}{owner} to {node.newname}: "
                       "applications do not use it by name")
    return _unclassified(node, f"ALTER {kind.name.removeprefix('OBJECT_')} RENAME")


def _alter_table_cmd(rv: ast.RangeVar, cmd: ast.AlterTableCmd, state: _File) -> Change:
    table = _rel_name(rv)
    column = f"{table}.{cmd.name}" if cmd.name else table
    new_table = state.new_table(rv)
    sub = cmd.subtype
    if sub == AT.AT_AddColumn:
        return _add_column(rv, cmd.def_, state)
    if sub == AT.AT_DropColumn:
        if new_table or state.new_column(rv, cmd.name):
            state.columns.pop((rv.schemaname, rv.relname, cmd.name), None)
            return _change("drop column", False, f"drops column {column}, {_NEW_OBJECT}")
        return _change("drop column", True, f"drops column {column}: running versions that read or write it fail")
    if sub == AT.AT_AlterColumnType:
        return _type_change(rv, cmd, state)
    if sub == AT.AT_SetNotNull:
        info = state.column(rv, cmd.name)
        if new_table or state.new_column(rv, cmd.name) and info is not None and info.has_default:
            why = _NEW_OBJECT if new_table else "added earlier in this file with a default that old code relies on"
            return _change("set not null", False, f"makes {column} NOT NULL; the column is {why}")
        _set_local(state, rv, cmd.name, not_null=True)
        return _change("set not null", True, f"makes {column} NOT NULL: running versions may still write NULL "
                       "there (or omit it) and fail")
    if sub == AT.AT_DropNotNull:
        return _change("drop not null", False, f"lets {column} hold NULL: what running versions write still fits")
    if (sub == AT.AT_ColumnDefault and cmd.def_ is not None) or sub == AT.AT_AddIdentity:
        _set_local(state, rv, cmd.name, has_default=True)
        return _change("set default", False, f"gives {column} a default: what running versions write is unchanged")
    if sub in (AT.AT_ColumnDefault, AT.AT_DropIdentity):
        return _drop_default(rv, cmd.name, sub == AT.AT_DropIdentity, state)
    if sub == AT.AT_AddConstraint:
        return _add_constraint(rv, cmd.def_, state)
    if sub == AT.AT_ValidateConstraint:
        return _change("validate constraint", False, f"validates constraint {cmd.name} of {table}: it already "
                       "applied to every new row")
    if sub == AT.AT_DropConstraint:
        return _change("drop constraint", False, f"drops constraint {cmd.name} of {table}: every row running "
                       "versions write still fits")
    if sub in _SETTINGS:
        return _change("table setting", False, f"changes a storage or planner setting of {table}, not what it holds")
    if new_table:
        return _change("table change", False, f"ALTER TABLE {table} {sub.name.removeprefix('AT_')} changes a table "
                       f"{_NEW_OBJECT}")
    return _unclassified(cmd, f"ALTER TABLE {table} {sub.name.removeprefix('AT_')}")


def _set_local(state: _File, rv: ast.RangeVar, column: str | None, **values: object) -> None:
    """Update what this file knows of a column it added (no-op for other columns)."""
    key = (rv.schemaname, rv.relname, column or "")
    if key in state.columns:
        state.columns[key] = replace(state.columns[key], **values)


def _add_column(rv: ast.RangeVar, coldef: ast.ColumnDef, state: _File) -> Change:
    name = f"{_rel_name(rv)}.{coldef.colname}"
    not_null = bool(coldef.is_not_null)
    has_default = _type_of(coldef.typeName).name in _SERIALS
    for con in coldef.constraints or ():
        if con.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY):
            not_null = True
        elif con.contype == ConstrType.CONSTR_DEFAULT:
            null_default = isinstance(con.raw_expr, ast.A_Const) and con.raw_expr.isnull
            has_default = has_default or not null_default
        elif con.contype in (ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED):
            has_default = True
    new_table = state.new_table(rv)
    state.columns[(rv.schemaname, rv.relname, coldef.colname)] = ColumnInfo(
        RawStream()(coldef.typeName), not_null, has_default)
    if not_null and not has_default and not new_table:
        return _change("not null without default", True, f"adds column {name} NOT NULL without a default: running "
                       "versions insert rows without it and fail")
    why = _NEW_OBJECT if new_table else ("NOT NULL with a default, so rows running versions insert without it get "
                                         "the default" if not_null else "nullable, so running versions can ignore it")
    return _change("add column", False, f"adds column {name}, {why}")


def _type_change(rv: ast.RangeVar, cmd: ast.AlterTableCmd, state: _File) -> Change:
    column = f"{_rel_name(rv)}.{cmd.name}"
    new = _type_of(cmd.def_.typeName)
    if state.new_table(rv) or state.new_column(rv, cmd.name):
        _set_local(state, rv, cmd.name, type=new.shown)
        return _change("type change", False, f"changes the type of {column} to {new.shown}; the column is "
                       f"{_NEW_OBJECT}")
    info = state.column(rv, cmd.name)
    if info is None:
        return _change("type change (old type unknown)", True, f"changes the type of {column} to {new.shown}; its "
                       "current type is unknown (no catalog lookup), so running versions may break")
    old = _parse_type(info.type)
    if old is None:
        kind, breaking, why = "type change", True, "the old type could not be read"
    else:
        kind, breaking, why = _compare_types(old, new)
    return _change(kind, breaking, f"changes the type of {column} from {info.type} to {new.shown}: {why}")


def _drop_default(rv: ast.RangeVar, column: str | None, identity: bool, state: _File) -> Change:
    name = f"{_rel_name(rv)}.{column}"
    what = "identity" if identity else "default"
    if state.new_table(rv):
        return _change("drop default", False, f"drops the {what} of {name}; the table is {_NEW_OBJECT}")
    info = state.column(rv, column or "")
    _set_local(state, rv, column, has_default=False)
    if identity or info is not None and info.not_null:
        return _change("drop default", True, f"drops the {what} of NOT NULL column {name}: running versions "
                       "inserting rows without it fail")
    if info is None:
        return _change("drop default", True, f"drops the default of {name}, whose nullability is unknown (no "
                       "catalog lookup): if it is NOT NULL, running versions inserting rows without it fail")
    return _change("drop default", False, f"drops the default of nullable column {name}: rows running versions "
                   "insert without it get NULL instead")


def _add_constraint(rv: ast.RangeVar, con: ast.Constraint, state: _File) -> Change:
    table = _rel_name(rv)
    what = _NEW_CONSTRAINTS.get(con.contype)
    if what is None:
        return _unclassified(con, f"ADD {con.contype.name.removeprefix('CONSTR_')} constraint on {table}")
    label = f"{what} constraint {con.conname} on {table}" if con.conname else f"a {what} constraint on {table}"
    if state.new_table(rv):
        return _change("new constraint", False, f"adds {label}; the table is {_NEW_OBJECT}")
    if con.contype in (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_FOREIGN) and not con.is_enforced:
        return _change("new constraint", False, f"adds {label} NOT ENFORCED: no row is rejected")
    if con.contype == ConstrType.CONSTR_UNIQUE and con.indexname:
        return _change("new constraint", False, f"adds {label} using the existing unique index {con.indexname}: it "
                       "rejects nothing the index did not already")
    if con.skip_validation:
        return _change("new constraint", True, f"adds {label} NOT VALID: existing rows are not checked, but every "
                       "row running versions write from now on is, and may be rejected")
    return _change("new constraint", True, f"adds {label}: running versions may write rows it rejects")

"""The ``replay`` profile: the target's own top read statements (pg_stat_statements) as pgbench scripts.

Which statements: the SELECTs of this database in pg_stat_statements (top level; the roles of ``profile.exclude_roles``,
earlier load test roles and dbops' own queries left out; reads of the catalog only, or of no table, are not application
reads), ranked by calls and by total time (a statement's better rank of the two), at most ``limit`` of them. Each
becomes one script, weighted by its share of the calls.

Parameters: pg_stat_statements shows constants and bound values as ``$n``. A ``$n`` in a simple predicate on a column of
a table (``col = $1``, ``col IN ($1, ...)``, ``col BETWEEN $1 AND $2``, ``col >= $1``, ``$1 < col``, casts allowed) is
replayed with the column's own values: up to 256 distinct values sampled from the table (TABLESAMPLE on a big one) go
into the script as an array literal, and pgbench picks one per transaction (``\\set p1 random(1, n)`` indexes it), so
the statement still runs with one plain value per predicate in one round trip. A lower and an upper bound on the same
column are drawn from the sorted sample as an ordered pair. An IN list that pg_stat_statements squashed
(``IN ($1 /*, ... */)``, its length lost) is replayed with 5 sampled values.

Everything else is listed with its reason, never guessed: a parameter elsewhere (LIMIT, select list, a function's
argument, compared with an expression or a function of a column, an array ``= ANY($1)``), a column that cannot be told
to one table (joined tables that both have it, a subquery's or function's column), a relation that is gone, a column
with nothing to sample. Each replayed statement is checked by EXPLAIN (read-only transaction) before it is kept.

The scripts hold real values of the database's columns: they are private files (0600 in a 0700 folder).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind
from pglast.parser import ParseError
from psycopg import sql

from dbops.loadtest.workloads import LoadTestError, Script
from dbops.pg.connect import connection
from dbops.pg.statements import Candidate as _Candidate
from dbops.pg.statements import rank, top_statements
from dbops.private import private_dir, write_private
from dbops.profile.statements import ensure_extension

MARKER = "dbops:replay"  # in every query the builder runs, so a later replay never picks it up
SAMPLE_VALUES = 256
SAMPLE_ROWS = 50_000  # tables with more rows (estimated) are sampled with TABLESAMPLE SYSTEM
IN_LIST_VALUES = 5
_CATALOGS = {"pg_catalog", "information_schema", "pg_toast"}
_COMPARE = {"=", "<>", "!=", "<", "<=", ">", ">="}
_LOWER = {">", ">="}
_UPPER = {"<", "<="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "<>": "<>", "!=": "!="}
_SQUASHED = re.compile(r"/\*,\s*\.\.\.\s*\*/")
_PGBENCH_VARIABLE = re.compile(r"(?<![:\w]):[A-Za-z_]\w*")


@dataclass(frozen=True)
class Parameter:
    """Where one ``$n`` of a replayed statement takes its values from."""

    number: int
    table: str
    column: str
    predicate: str  # =, IN, BETWEEN, >=, ...
    values: int = 0  # distinct values sampled

    def describe(self) -> str:
        return f"${self.number}: {self.table}.{self.column} ({self.predicate}, {self.values} sampled values)"


@dataclass(frozen=True)
class ReplayStatement:
    queryid: str
    query: str
    calls: int
    total_ms: float
    script: str
    weight: int
    parameters: tuple[Parameter, ...] = ()


@dataclass(frozen=True)
class SkippedStatement:
    queryid: str
    query: str
    calls: int
    total_ms: float
    reason: str


@dataclass
class ReplayProfile:
    statements: list[ReplayStatement] = field(default_factory=list)
    skipped: list[SkippedStatement] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)
    directory: Path | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-able: what was replayed (with its parameters' sources) and what was skipped, with why."""
        return {
            "replayed": [{**asdict(s), "parameters": [p.describe() for p in s.parameters]} for s in self.statements],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def rows(self, figures: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
        """One row per replayed statement (with its figures in ``figures``: a step's per-script figures; a statement
        that ran no transaction has none)."""
        figures = figures or {}
        out = []
        for s in self.statements:
            f = figures.get(s.script) or {}
            ran = bool(f.get("transactions"))
            out.append({"script": s.script, "calls": s.calls, "weight": s.weight,
                        "tps": f["tps"] if ran else None, "avg_ms": f["avg_ms"] if ran else None,
                        "p95_ms": f["p95_ms"] if ran else None, "failures": int(f["failures"]) if f else None,
                        "statement": " ".join(s.query.split()),
                        "parameters": "; ".join(p.describe() for p in s.parameters) or "none"})
        return out

    def skipped_rows(self) -> list[dict[str, Any]]:
        """One row per statement left out, with why."""
        return [{"statement": " ".join(s.query.split()), "calls": s.calls, "reason": s.reason} for s in self.skipped]

    def table(self, figures: dict[str, dict[str, float]] | None = None) -> str:
        """Replayed statements (with their figures in ``figures``: a step's per-script figures) and skipped ones."""
        figures = figures or {}
        lines = [f"replay: {len(self.statements)} statements replayed, {len(self.skipped)} skipped", ""]
        if self.statements:
            lines += ["| script | calls | weight | tps | avg ms | p95 ms | failures | statement | parameters |",
                      "|---|---:|---:|---:|---:|---:|---:|---|---|"]
            for s in self.statements:
                f = figures.get(s.script, {})
                ran = (f"{f['tps']:,.1f} | {f['avg_ms']:.2f} | {f['p95_ms']:.2f} | {int(f['failures'])}" if f
                       else " |  |  | ")
                lines.append(f"| {s.script} | {s.calls:,} | {s.weight} | {ran} | {_cell(s.query)} | "
                             f"{_cell('; '.join(p.describe() for p in s.parameters) or 'none')} |")
        if self.skipped:
            lines += ["", "| skipped statement | calls | reason |", "|---|---:|---|"]
            lines += [f"| {_cell(s.query)} | {s.calls:,} | {_cell(s.reason)} |" for s in self.skipped]
        return "\n".join(lines)


def _cell(text: str, width: int = 160) -> str:
    one = " ".join(text.split()).replace("|", "\\|")
    return one if len(one) <= width else one[: width - 1] + "…"


class NothingToReplay(LoadTestError):
    """pg_stat_statements holds no read statement that can be replayed: a load test that would measure nothing."""


class _Unreplayable(Exception):  # noqa: N818 - a reason, not an error
    pass


def top_read_statements(conn: psycopg.Connection[Any], exclude_roles: Sequence[str]) -> list[_Candidate]:
    """Every statement of this database in pg_stat_statements, summed over the roles that ran it (those of
    ``exclude_roles``, the load test's own roles and roles dropped since, as every load test role is, left out; dbops'
    own marked queries too), most called first."""
    return top_statements(conn, exclude_roles)


# --- the statement's shape -------------------------------------------------------------------------------------------

class _Catalog:
    """Relations through the database's search path, their columns and their types."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._relations: dict[str, tuple[str, str] | None] = {}
        self._columns: dict[str, dict[str, str]] = {}

    def relation(self, schema: str | None, name: str) -> tuple[str, str] | None:
        """(schema.name, relkind) or None when there is no such relation."""
        ref = sql.Identifier(*([schema, name] if schema else [name])).as_string(self.conn)
        if ref not in self._relations:
            row = self.conn.execute(
                "/* dbops:replay */ SELECT n.nspname, c.relname, c.relkind::text FROM pg_class AS c"
                " JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)", [ref]).fetchone()
            self._relations[ref] = (f"{row[0]}.{row[1]}", row[2]) if row else None
        return self._relations[ref]

    def columns(self, table: str) -> dict[str, str]:
        """column -> its type (format_type)."""
        if table not in self._columns:
            rows = self.conn.execute(
                "/* dbops:replay */ SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                [sql.Identifier(*table.split(".", 1)).as_string(self.conn)]).fetchall()
            self._columns[table] = {r[0]: r[1] for r in rows}
        return self._columns[table]


class _Scope:
    def __init__(self, parent: _Scope | None, ctes: set[str]) -> None:
        self.parent = parent
        self.ctes = ctes | (parent.ctes if parent else set())
        self.aliases: dict[str, str | None] = {}  # alias -> table (None: a subquery, function or CTE)
        self.tables: list[str] = []
        self.derived: list[str] = []
        self.using: set[str] = set()  # JOIN ... USING columns: one value in every table that has them


@dataclass
class _Use:
    """One parameter's place: the column it is compared with and how."""

    table: str
    column: str
    predicate: str
    bound: str = ""  # lower / upper for ranges
    squashed: tuple[int, int] | None = None  # the IN list's text span, when pg_stat_statements squashed it


def _names(node: ast.ColumnRef) -> list[str] | None:
    out = []
    for part in node.fields:
        if not isinstance(part, ast.String):
            return None
        out.append(part.sval)
    return out


def _strip(node: Any) -> Any:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node


def _children(node: ast.Node) -> list[tuple[str, Any]]:
    return [(name, getattr(node, name)) for name in node.__slots__ if name != "location"]


class _Shape:
    """Walks one SELECT: its relations, and for each ``$n`` the column it reads its values from (or why not)."""

    def __init__(self, catalog: _Catalog, query: str) -> None:
        self.catalog = catalog
        self.query = query
        self.relations: set[str] = set()
        self.uses: dict[int, _Use] = {}
        self.locations: dict[int, list[int]] = {}
        self.problems: dict[int, str] = {}
        self.missing: list[str] = []
        self.writes = False

    # scopes

    def _from(self, node: Any, scope: _Scope) -> None:
        if isinstance(node, ast.RangeVar):
            alias = node.alias.aliasname if node.alias else node.relname
            if not node.schemaname and node.relname in scope.ctes:
                scope.aliases[alias] = None
                scope.derived.append(alias)
                return
            found = self.catalog.relation(node.schemaname, node.relname)
            if found is None:
                self.missing.append(f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname)
                return
            table = found[0]
            self.relations.add(table)
            scope.aliases[alias] = table
            scope.aliases.setdefault(table, table)
            scope.tables.append(table)
        elif isinstance(node, ast.JoinExpr):
            self._from(node.larg, scope)
            self._from(node.rarg, scope)
            scope.using.update(p.sval for p in node.usingClause or () if isinstance(p, ast.String))
        elif isinstance(node, (ast.RangeSubselect, ast.RangeFunction, ast.RangeTableFunc)):
            name = node.alias.aliasname if getattr(node, "alias", None) else "(subquery)"
            scope.aliases[name] = None
            scope.derived.append(name)

    def column(self, ref: ast.ColumnRef, scope: _Scope) -> tuple[str, str]:
        parts = _names(ref)
        if not parts:
            raise _Unreplayable("compared with a whole row, not a column")
        column = parts[-1]
        if len(parts) >= 2:
            qualifier = ".".join(parts[:-1])
            at: _Scope | None = scope
            while at is not None:
                for key in (qualifier, parts[-2]):
                    if key in at.aliases:
                        table = at.aliases[key]
                        if table is None:
                            raise _Unreplayable(f"compared with {'.'.join(parts)}, a column of a subquery or function")
                        if column not in self.catalog.columns(table):
                            raise _Unreplayable(f"compared with {'.'.join(parts)}, which is not found")
                        return table, column
                at = at.parent
            raise _Unreplayable(f"compared with {'.'.join(parts)}, which cannot be resolved")
        at = scope
        while at is not None:
            owners = sorted({t for t in at.tables if column in self.catalog.columns(t)})
            if len(owners) == 1 or (owners and column in at.using):
                return owners[0], column
            if len(owners) > 1:
                raise _Unreplayable(f"compared with column {column}, which several joined tables have"
                                    f" ({', '.join(owners)})")
            if at.derived:
                raise _Unreplayable(f"compared with column {column} of a subquery or function"
                                    f" ({', '.join(at.derived)})")
            at = at.parent
        raise _Unreplayable(f"compared with column {column}, which none of the statement's tables has")

    # the walk

    def walk(self, node: Any, scope: _Scope | None, parents: list[tuple[Any, str]]) -> None:
        if isinstance(node, tuple):
            for item in node:
                self.walk(item, scope, parents)
            return
        if not isinstance(node, ast.Node):
            return
        if isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)):
            self.writes = True
        if isinstance(node, ast.SelectStmt):
            if node.lockingClause or node.intoClause is not None:
                self.writes = True
            ctes = {c.ctename for c in node.withClause.ctes} if node.withClause is not None else set()
            inner = _Scope(scope, ctes)
            for item in node.fromClause or ():
                self._from(item, inner)
            scope = inner
        if isinstance(node, ast.ParamRef):
            self.locations.setdefault(node.number, []).append(node.location)
            if node.number not in self.uses and node.number not in self.problems:
                try:
                    self.uses[node.number] = self._place(node, scope, parents)
                except _Unreplayable as why:
                    self.problems[node.number] = str(why)
            return
        for name, child in _children(node):
            self.walk(child, scope, [*parents, (node, name)])

    def _place(self, param: ast.ParamRef, scope: _Scope | None, parents: list[tuple[Any, str]]) -> _Use:
        chain = [p for p in parents if not isinstance(p[0], (ast.TypeCast, ast.NamedArgExpr))]
        if not chain or scope is None:
            raise _Unreplayable("at an unknown position")
        parent, slot = chain[-1]
        if isinstance(parent, ast.A_Expr):
            op = parent.name[-1].sval if parent.name and isinstance(parent.name[-1], ast.String) else "?"
            column = _strip(parent.lexpr)
            if parent.kind == A_Expr_Kind.AEXPR_OP and op in _COMPARE:
                other = _strip(parent.lexpr if slot == "rexpr" else parent.rexpr)
                if slot == "lexpr":
                    op = _FLIP[op]
                if isinstance(other, ast.ColumnRef):
                    table, name = self.column(other, scope)
                    bound = "lower" if op in _LOWER else "upper" if op in _UPPER else ""
                    return _Use(table, name, op, bound)
                if isinstance(other, ast.FuncCall):
                    raise _Unreplayable(f"compared with a function ({_func(other)}(...)), not a column")
                raise _Unreplayable(f"compared with an expression ({type(other).__name__}), not a column")
            if parent.kind == A_Expr_Kind.AEXPR_IN and slot == "rexpr" and isinstance(column, ast.ColumnRef):
                table, name = self.column(column, scope)
                text = self.query[parent.rexpr_list_start:parent.rexpr_list_end + 1]
                squashed = (parent.rexpr_list_start, parent.rexpr_list_end + 1) if _SQUASHED.search(text) else None
                return _Use(table, name, "IN", "", squashed)
            if parent.kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_BETWEEN_SYM) and slot == "rexpr" \
                    and isinstance(column, ast.ColumnRef):
                table, name = self.column(column, scope)
                first = _strip(parent.rexpr[0]) if parent.rexpr else None
                bound = "lower" if first is param else "upper"
                return _Use(table, name, "BETWEEN", bound)
            if parent.kind == A_Expr_Kind.AEXPR_OP_ANY:
                raise _Unreplayable(f"an array ({op} ANY(${param.number})) whose length is unknown")
            if isinstance(column, ast.FuncCall) or isinstance(_strip(parent.rexpr), ast.FuncCall):
                raise _Unreplayable("compared with a function of a column, not the column")
            raise _Unreplayable(f"part of an expression (operator {op}), not compared with a column")
        if isinstance(parent, ast.SelectStmt) and slot in ("limitCount", "limitOffset"):
            return_word = "LIMIT" if slot == "limitCount" else "OFFSET"
            raise _Unreplayable(f"the {return_word}, not a column's value")
        if isinstance(parent, ast.FuncCall):
            raise _Unreplayable(f"an argument of the function {_func(parent)}()")
        if isinstance(parent, ast.ResTarget):
            raise _Unreplayable("in the select list, compared with no column")
        raise _Unreplayable(f"at an unknown position (in a {type(parent).__name__})")


def _func(node: ast.FuncCall) -> str:
    return ".".join(p.sval for p in node.funcname if isinstance(p, ast.String))


# --- building the scripts --------------------------------------------------------------------------------------------

def _literal(array_text: str) -> str:
    """An E'' string literal pgbench leaves alone: no colon (pgbench reads ``:x`` as a variable even in quotes)."""
    escaped = array_text.replace("\\", "\\\\").replace("'", "''").replace(":", "\\072")
    return f"E'{escaped}'"


def _sample(conn: psycopg.Connection[Any], catalog: _Catalog, table: str, column: str, ordered: bool) -> list[Any]:
    """Up to SAMPLE_VALUES distinct non-null values of the column at random: [PostgreSQL's array text, count]
    (sorted when ``ordered``, for range bounds)."""
    relation = catalog.relation(*table.split(".", 1))
    kind = relation[1] if relation else "r"
    ident = sql.Identifier(*table.split(".", 1))
    row = conn.execute(
        "/* dbops:replay */ SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8"
        " FROM pg_partition_tree(%s::regclass) AS t JOIN pg_class AS c ON c.oid = t.relid WHERE t.isleaf",
        [ident.as_string(conn)]).fetchone()
    estimated = float(row[0]) if row else 0.0

    def query(source: sql.Composable) -> sql.Composed:
        return sql.SQL(
            "/* dbops:replay */ SELECT array_agg(v ORDER BY {order})::text, count(*) FROM (SELECT v FROM"
            " (SELECT DISTINCT {col} AS v FROM {source} WHERE {col} IS NOT NULL) AS d ORDER BY random() LIMIT {n})"
            " AS s").format(order=sql.SQL("v" if ordered else "1"), col=sql.Identifier(column), source=source,
                            n=sql.Literal(SAMPLE_VALUES))

    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = '60s'")
        found = None
        if kind in ("r", "p", "m") and estimated > SAMPLE_ROWS:
            percent = max(0.001, min(100.0, 100.0 * SAMPLE_ROWS / estimated))
            found = conn.execute(query(sql.SQL("{} TABLESAMPLE SYSTEM ({})").format(
                ident, sql.Literal(round(percent, 4))))).fetchone()
        if not found or not found[1]:  # a small table, or an unlucky sample of a sparse one: read it all
            found = conn.execute(query(ident)).fetchone()
    return [found[0], int(found[1])] if found and found[1] else ["", 0]


def _statement(conn: psycopg.Connection[Any], catalog: _Catalog, cand: _Candidate,
               samples: dict[tuple[str, str, bool], list[Any]]) -> tuple[str, tuple[Parameter, ...]] | None:
    """The pgbench script of one statement, or None when it is no application read; raises _Unreplayable."""
    if cand.query.strip() == "<insufficient privilege>":
        raise _Unreplayable("its text is hidden from this role (grant it pg_read_all_stats to replay it)")
    try:
        parsed = parse_sql(cand.query)
    except ParseError as exc:
        raise _Unreplayable(f"pglast cannot parse it ({str(exc).splitlines()[0]})") from exc
    if len(parsed) != 1 or not isinstance(parsed[0].stmt, ast.SelectStmt):
        return None
    shape = _Shape(catalog, cand.query)
    shape.walk(parsed[0].stmt, None, [])
    if shape.writes:
        return None
    if shape.missing:
        raise _Unreplayable(f"relation {', '.join(sorted(set(shape.missing)))} does not exist (any more)")
    if not shape.relations or all(t.split(".", 1)[0] in _CATALOGS for t in shape.relations):
        return None  # reads the catalog or no table: not the application's load
    numbers = sorted(shape.locations)
    if shape.problems:
        raise _Unreplayable("; ".join(f"${n} is {shape.problems[n]}" for n in sorted(shape.problems)))
    for n in numbers:
        if n not in shape.uses:
            raise _Unreplayable(f"${n} is at an unknown position")
    # Ranges: a lower and an upper bound on one column are drawn as an ordered pair from the sorted sample.
    bounds: dict[tuple[str, str], dict[str, int]] = {}
    for n in numbers:
        use = shape.uses[n]
        if use.bound:
            bounds.setdefault((use.table, use.column), {}).setdefault(use.bound, n)
    paired = {n for pair in bounds.values() if len(pair) == 2 for n in pair.values()}
    lines: list[str] = []
    replacements: list[tuple[int, int, str]] = []
    params: list[Parameter] = []
    # An upper bound is drawn from its lower bound's index, so the lower one is set first whatever their numbers.
    for n in sorted(numbers, key=lambda n: (n in paired and shape.uses[n].bound == "upper", n)):
        use = shape.uses[n]
        ordered = n in paired
        key = (use.table, use.column, ordered)
        if key not in samples:
            try:
                samples[key] = _sample(conn, catalog, use.table, use.column, ordered)
            except psycopg.Error as exc:
                raise _Unreplayable(f"${n}: cannot sample {use.table}.{use.column} "
                                    f"({str(exc).splitlines()[0]})") from exc
        text, count = samples[key]
        if not count:
            raise _Unreplayable(f"${n}: {use.table}.{use.column} holds no value to sample")
        array = f"({_literal(text)}::{catalog.columns(use.table)[use.column]}[])"
        if ordered and use.bound == "upper":
            lower = bounds[(use.table, use.column)]["lower"]
            lines.append(f"\\set p{n} random(:p{lower}, {count})")
        else:
            lines.append(f"\\set p{n} random(1, {count})")
        if use.squashed is not None:
            for i in range(2, IN_LIST_VALUES + 1):
                lines.append(f"\\set p{n}_{i} random(1, {count})")
            items = [f"{array}[:p{n}]"] + [f"{array}[:p{n}_{i}]" for i in range(2, IN_LIST_VALUES + 1)]
            replacements.append((use.squashed[0], use.squashed[1], "(" + ", ".join(items) + ")"))
            predicate = f"IN, squashed list replayed with {IN_LIST_VALUES} values"
        else:
            for at in shape.locations[n]:
                replacements.append((at, at + len(f"${n}"), f"{array}[:p{n}]"))
            predicate = use.predicate
        params.append(Parameter(n, use.table, use.column, predicate, count))
    params.sort(key=lambda p: p.number)
    text = cand.query
    for start, end, new in sorted(set(replacements), reverse=True):
        text = text[:start] + new + text[end:]
    text = text.strip().rstrip(";").rstrip()
    if any(line.lstrip().startswith("\\") for line in text.splitlines()):
        raise _Unreplayable("a line of it starts with a backslash, which pgbench reads as a meta-command")
    stray = [m for m in _PGBENCH_VARIABLE.findall(text) if not re.fullmatch(r":p\d+(_\d+)?", m)]
    if stray:
        raise _Unreplayable(f"it contains {stray[0]}, which pgbench would read as a variable")
    _explain(conn, text)
    header = [f"-- dbops replay of pg_stat_statements queryid {cand.queryid}: {cand.calls:,} calls,"
              f" {cand.total_ms:,.1f} ms in total", *(f"-- {p.describe()}" for p in params)]
    return "\n".join([*header, *lines, text, ";", ""]), tuple(params)


def _explain(conn: psycopg.Connection[Any], text: str) -> None:
    """The replayed form must plan (first value of every sample), read-only."""
    probe = re.sub(r":p\d+(_\d+)?", "1", text)
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SET LOCAL statement_timeout = '10s'")
            # The database's own statement (from pg_stat_statements), planned only, in a read-only transaction.
            conn.execute(sql.SQL("/* dbops:replay */ EXPLAIN {}").format(sql.SQL(probe)))  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise _Unreplayable(f"its replayed form does not plan ({str(exc).splitlines()[0]})") from exc


def build_replay(url: str, directory: Path, *, limit: int, exclude_roles: Sequence[str] = ()) -> ReplayProfile:
    """Write the replay scripts of the database at ``url`` into ``directory`` (private) and say what was skipped."""
    if limit < 1:
        raise LoadTestError(f"replay_statements must be at least 1, got {limit}", "set loadtest.replay_statements")
    profile = ReplayProfile(directory=private_dir(directory))
    with connection(url) as conn:
        ensure_extension(conn)
        try:  # the builder's own queries stay out of the view (a superuser setting; otherwise MARKER filters them)
            conn.execute("SET pg_stat_statements.track = 'none'")
        except psycopg.Error:
            pass
        catalog = _Catalog(conn)
        reads: list[_Candidate] = []
        for cand in top_read_statements(conn, exclude_roles):
            try:
                parsed = parse_sql(cand.query)
            except ParseError:
                parsed = None
            if parsed is not None and (len(parsed) != 1 or not isinstance(parsed[0].stmt, ast.SelectStmt)):
                continue
            reads.append(cand)
        samples: dict[tuple[str, str, bool], list[Any]] = {}
        kept: list[tuple[_Candidate, str, tuple[Parameter, ...]]] = []
        considered = 0
        for cand in rank(reads, len(reads)):
            if considered >= limit:
                break
            try:
                built = _statement(conn, catalog, cand, samples)
            except _Unreplayable as why:
                considered += 1
                profile.skipped.append(SkippedStatement(cand.queryid, cand.query, cand.calls,
                                                        round(cand.total_ms, 3), str(why)))
                continue
            if built is None:
                continue  # no application read (catalog, no table, a locking read)
            considered += 1
            kept.append((cand, *built))
    if not kept:
        if profile.skipped:
            first = profile.skipped[0]
            raise NothingToReplay(
                f"nothing to replay: none of the {len(profile.skipped)} top read statements can be parameterised "
                f"(e.g. {_cell(first.query, 80)!r}: {first.reason})",
                "see `dbops loadtest --profile replay --json` for the list, or replay your own scripts (--profile own)")
        raise NothingToReplay("nothing to replay: pg_stat_statements holds no read statement of this database",
                            "run the application's workload first (or check profile.exclude_roles)")
    most = max(c.calls for c, _, _ in kept)
    for i, (cand, script_text, params) in enumerate(kept, 1):
        name = f"replay_{i:02d}"
        path = write_private(profile.directory / f"{name}.sql", script_text)  # type: ignore[operator]
        weight = max(1, round(1000 * cand.calls / most))
        profile.scripts.append(Script(name, path, weight, reference=False, writes=False))
        profile.statements.append(ReplayStatement(cand.queryid, cand.query, cand.calls, round(cand.total_ms, 3),
                                                  name, weight, params))
    return profile

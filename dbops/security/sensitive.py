"""Sensitive data: columns holding e-mail addresses, phone numbers, card numbers, national identifiers, password hashes
and secrets, found by name and by bounded sampling; who can read them, whether backups of them are encrypted and
whether access to them is logged (pgaudit).

Sampled values never leave this module: a finding names the column and the kind of data, and says how many of the
sampled values looked like it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbops.security.catalog import A01, A04, A09, control
from dbops.security.findings import A01_ACCESS, A02_CRYPTO, A09_LOGGING, Finding, Severity
from dbops.security.matrix import AccessMatrix
from dbops.security.rules import AuditContext, q, q_qualified, rule

control("SEC100", "sensitive columns are readable only by the roles declared for them", A01, cis="4.4")
control("SEC101", "every sensitive column found is declared in the access-control matrix", A01)
control("SEC102", "no sensitive data in an unencrypted backup", A04)
control("SEC103", "pgaudit is loaded", A09, cis="3.2")
control("SEC104", "pgaudit logs the ddl, role and write session classes", A09, cis="3.2")
control("SEC105", "pgaudit object auditing covers every sensitive table", A09, cis="3.2")
control("SEC106", "pgaudit does not write statement parameters (sensitive values) to the log", A09, cis="3.2")
control("SEC107", "the pgaudit audit role cannot log in and has no members", A01, cis="3.2")
control("SEC108", "password columns hold hashes, never passwords", A04)
control("SEC109", "no secret (private key, API key, token) stored in clear", A04)

# ---- discovery --------------------------------------------------------------------------------------------------
EMAIL, PHONE, CARD, NATIONAL_ID = "email", "phone", "card number", "national id"
PASSWORD, PASSWORD_HASH, SECRET, DECLARED = "password", "password hash", "secret", "declared sensitive"

SAMPLE_ROWS = 200  # at most this many rows per table
SAMPLE_CHARS = 512  # of each value (nothing sensitive is longer; a PEM key is recognised by its first line)
SAMPLE_COLUMNS = 40  # text columns per table
HUGE_COLUMN = 2048  # average width (pg_stats) above which a column is not sampled
SAMPLE_TIMEOUT = "5s"  # per table
MATCH_SHARE = 0.6  # of the non-null sampled values, for a column to count as holding a kind

NAME_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (PASSWORD, re.compile(r"(^|_)(password|passwd|pwd|pass_?hash|password_?hash|pw_?hash)(_|$)")),
    (SECRET, re.compile(r"secret|api_?key|private_?key|(^|_)(access|refresh|auth|api|bearer|session)?_?token(_|$)")),
    (EMAIL, re.compile(r"e_?mail")),
    (PHONE, re.compile(r"phone|mobile|msisdn|(^|_)(tel|fax)(_|$)")),
    (CARD, re.compile(r"card_?(number|num|no)|credit_?card|(^|_)(pan|cc|ccn|cc_?number)(_|$)")),
    (NATIONAL_ID, re.compile(r"(^|_)(ssn|nin|nino|passport(_?(no|number))?|national_?id|tax_?id|social_?security"
                             r"(_?number)?)(_|$)")),
)
# kinds a numeric column can hold (a phone or card number stored as a number); the others are text
NUMERIC_KINDS = {PHONE, CARD, NATIONAL_ID}

HASH_VALUE = re.compile(
    r"^(\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}|\$argon2(id|i|d)\$.+|SCRAM-SHA-256\$\d+:.+|md5[0-9a-f]{32}|[0-9a-f]{32}"
    r"|\$[156]\$.+|\$(scrypt|pbkdf2[-_a-z0-9]*)\$.+|pbkdf2_sha(1|256|512)\$.+|scrypt:.+)$"
)
SECRET_VALUE = re.compile(
    r"^(AKIA[0-9A-Z]{16}|(sk|rk|pk)_(live|test)_[0-9A-Za-z]{16,}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|-----BEGIN ([A-Z]+ )?PRIVATE KEY-----.*)$",
    re.DOTALL,
)
TOKEN_VALUE = re.compile(r"^[A-Za-z0-9_\-+/=.]{32,}$")
EMAIL_VALUE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
CARD_VALUE = re.compile(r"^(\d{13,19}|\d{4}([ -]\d{4}){2,3}( ?\d{1,3})?)$")
PHONE_E164 = re.compile(r"^\+[1-9][0-9 ().-]{6,20}$")
PHONE_NATIONAL = re.compile(r"^\(?0[1-9]\d{0,3}\)?([ .-]\d{2,4}){2,4}$")
SSN_VALUE = re.compile(r"^(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}$")
NINO_VALUE = re.compile(r"^(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]$")


@dataclass(frozen=True)
class SensitiveColumn:
    schema: str
    table: str
    column: str
    kind: str
    how: str  # "name", "sample", "name, sample" or "matrix"
    matched: int = 0  # sampled values that looked like ``kind``
    sampled: int = 0  # non-null values sampled

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def share(self) -> float:
        return self.matched / self.sampled if self.sampled else 0.0

    def describe(self) -> str:
        """``email (by name; 8 of 200 sampled values look like e-mail addresses)``: never a value."""
        if self.sampled and "sample" in self.how:
            return (f"{self.column} ({self.kind}: {self.matched} of {self.sampled} sampled values look like"
                    f" {PLURAL[self.kind]}{'; also by name' if 'name' in self.how else ''})")
        return f"{self.column} ({self.kind}, by {self.how})"


PLURAL = {EMAIL: "e-mail addresses", PHONE: "phone numbers", CARD: "card numbers (Luhn)",
          NATIONAL_ID: "national identifiers", PASSWORD_HASH: "password hashes", SECRET: "secrets",
          PASSWORD: "passwords", DECLARED: "sensitive data"}


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def classify(value: str) -> str | None:
    """The kind of sensitive data one value looks like, or None."""
    value = value.strip()
    if not value:
        return None
    if HASH_VALUE.match(value):
        return PASSWORD_HASH
    if SECRET_VALUE.match(value):
        return SECRET
    if CARD_VALUE.match(value):
        digits = re.sub(r"\D", "", value)
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn(digits):
            return CARD
        return None
    if SSN_VALUE.match(value) or NINO_VALUE.match(value):
        return NATIONAL_ID
    if EMAIL_VALUE.match(value):
        return EMAIL
    if PHONE_E164.match(value) or PHONE_NATIONAL.match(value):
        if 8 <= len(re.sub(r"\D", "", value)) <= 15:
            return PHONE
        return None
    if (TOKEN_VALUE.match(value) and _entropy(value) >= 4.0
            and all(re.search(p, value) for p in ("[a-z]", "[A-Z]", "[0-9]"))):
        return SECRET
    return None


def kind_by_name(column: str, category: str) -> str | None:
    name = column.lower()
    for kind, pattern in NAME_PATTERNS:
        if pattern.search(name) and (category in ("S", "U") or (category == "N" and kind in NUMERIC_KINDS)):
            return kind
    return None


COLUMNS = """
SELECT n.nspname, c.relname, c.oid, a.attname, t.typcategory, a.attnum,
       (SELECT s.avg_width FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname
          AND s.attname = a.attname LIMIT 1),
       c.reltuples::float8, (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'm', 'p') AND NOT c.relispartition
ORDER BY 1, 2, a.attnum
"""
# the leaf tables of a partitioned one: their size says how much there is to sample
PARTITION_SIZE = """
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8,
       (coalesce(sum(pg_relation_size(c.oid)), 0) / current_setting('block_size')::int)::bigint
FROM pg_partition_tree(%s::oid::regclass) p JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf
"""


def discover(conn: psycopg.Connection[Any], schemas: Iterable[str]) -> list[SensitiveColumn]:
    """Columns of the tables in ``schemas`` that hold sensitive data, by name and by sampling each table
    (TABLESAMPLE SYSTEM, at most SAMPLE_ROWS rows, SAMPLE_TIMEOUT per table; a table the role cannot read or that
    takes too long is judged by its column names only)."""
    tables: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in conn.execute(COLUMNS, {"schemas": sorted(schemas)}).fetchall():
        tables.setdefault((row[0], row[1]), []).append(row)
    out: list[SensitiveColumn] = []
    for (schema, table), columns in tables.items():
        oid, reltuples, pages = columns[0][2], columns[0][7], columns[0][8]
        texts = [r[3] for r in columns if r[4] == "S" and (r[6] is None or r[6] <= HUGE_COLUMN)][:SAMPLE_COLUMNS]
        samples = _sample(conn, schema, table, oid, texts, reltuples, pages) if texts else {}
        for _, _, _, column, category, *_ in columns:
            named = kind_by_name(column, category)
            sampled_kind, matched, seen = samples.get(column, (None, 0, 0))
            if named == PASSWORD and sampled_kind == PASSWORD_HASH:
                out.append(SensitiveColumn(schema, table, column, PASSWORD_HASH, "name, sample", matched, seen))
            elif named == PASSWORD:
                hashes = _count(samples, column)
                out.append(SensitiveColumn(schema, table, column, PASSWORD, "name", hashes, seen))
            elif sampled_kind:
                how = "name, sample" if named else "sample"
                out.append(SensitiveColumn(schema, table, column, sampled_kind, how, matched, seen))
            elif named:
                out.append(SensitiveColumn(schema, table, column, named, "name", 0, seen))
    return out


def _count(samples: dict[str, tuple[str | None, int, int]], column: str) -> int:
    kind, matched, _ = samples.get(column, (None, 0, 0))
    return matched if kind == PASSWORD_HASH else 0


def _sample(conn: psycopg.Connection[Any], schema: str, table: str, oid: int, columns: list[str], reltuples: float,
            pages: int) -> dict[str, tuple[str | None, int, int]]:
    """column -> (the kind most of its sampled values look like, or None; how many did; non-null values seen)."""
    if not pages:  # a partitioned table has no storage of its own: its partitions do
        reltuples, pages = conn.execute(PARTITION_SIZE, (oid,)).fetchone()
    if not pages:
        return {}
    rows_estimate = reltuples if reltuples and reltuples > 0 else pages * 50
    percent = min(100.0, max(0.01, 100.0 * SAMPLE_ROWS * 4 / rows_estimate))
    query = sql.SQL("SELECT {} FROM {}.{} TABLESAMPLE SYSTEM ({}) LIMIT {}").format(
        sql.SQL(", ").join(sql.SQL("left({}::text, {})").format(sql.Identifier(c), sql.Literal(SAMPLE_CHARS))
                           for c in columns),
        sql.Identifier(schema), sql.Identifier(table), sql.Literal(round(percent, 4)), sql.Literal(SAMPLE_ROWS))
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (SAMPLE_TIMEOUT,))
            rows = conn.execute(query).fetchall()
    except (psycopg.errors.QueryCanceled, psycopg.errors.InsufficientPrivilege, psycopg.errors.LockNotAvailable,
            psycopg.errors.FeatureNotSupported):
        return {}
    out: dict[str, tuple[str | None, int, int]] = {}
    for i, column in enumerate(columns):
        values = [row[i] for row in rows if row[i] is not None and row[i].strip()]
        kinds = Counter(k for k in (classify(v) for v in values) if k)
        if not kinds:
            out[column] = (None, 0, len(values))
            continue
        kind, matched = kinds.most_common(1)[0]
        enough = matched >= min(3, len(values)) and matched / len(values) >= MATCH_SHARE
        out[column] = (kind if enough else None, matched if enough else 0, len(values))
    return out


def discovered(ctx: AuditContext) -> list[SensitiveColumn]:
    """The sensitive columns of the audited schemas, discovered once per audit (the rules below share them)."""
    key = f"sensitive_columns:{','.join(ctx.schemas)}"
    if key not in ctx.cache:
        ctx.cache[key] = discover(ctx.conn, ctx.schemas)
    return ctx.cache[key]


def sensitive_columns(ctx: AuditContext) -> list[SensitiveColumn]:
    """The discovered columns plus the columns the matrix declares sensitive (of the tables that exist)."""
    found = list(discovered(ctx))
    if ctx.matrix is None:
        return found
    known = {(c.qualified_table, c.column) for c in found}
    for table, columns in sorted(ctx.matrix.sensitive.items()):
        if "." not in table or _regclass(ctx, table) is None:
            continue  # SEC021 reports a declared table that does not exist
        schema, name = table.split(".", 1)
        found += [SensitiveColumn(schema, name, c, DECLARED, "matrix") for c in columns if (table, c) not in known]
    return found


def by_table(columns: Iterable[SensitiveColumn]) -> dict[str, list[SensitiveColumn]]:
    out: dict[str, list[SensitiveColumn]] = {}
    for column in columns:
        out.setdefault(column.qualified_table, []).append(column)
    return dict(sorted(out.items()))


def _regclass(ctx: AuditContext, table: str) -> int | None:
    """The oid of ``schema.table`` from the catalog (no USAGE on the schema needed, unlike a ::regclass cast)."""
    schema, _, name = table.partition(".")
    rows = ctx.rows("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s", (schema, name))
    return rows[0][0] if rows else None


# ---- SEC100: who can read them ----------------------------------------------------------------------------------
READERS = """
SELECT r.rolname, r.rolcanlogin
FROM pg_roles r
WHERE NOT r.rolsuper AND r.rolname !~ '^pg_' AND r.oid <> (SELECT relowner FROM pg_class WHERE oid = %(t)s::oid)
  AND has_column_privilege(r.oid, %(t)s::oid, %(c)s, 'SELECT')
ORDER BY 1
"""
PUBLIC_READS = """
SELECT EXISTS (SELECT 1 FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
               WHERE c.oid = %(t)s::oid AND a.grantee = 0 AND a.privilege_type = 'SELECT')
    OR EXISTS (SELECT 1 FROM pg_attribute att, aclexplode(att.attacl) a
               WHERE att.attrelid = %(t)s::oid AND att.attname = %(c)s AND a.grantee = 0
                 AND a.privilege_type = 'SELECT')
"""
# the direct SELECT grants of a role on a table (``*``) or on its columns
DIRECT_GRANTS = """
SELECT '*' FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = %(t)s::oid AND a.grantee = %(r)s::regrole AND a.privilege_type = 'SELECT'
UNION ALL
SELECT att.attname FROM pg_attribute att, aclexplode(att.attacl) a
WHERE att.attrelid = %(t)s::oid AND att.attname = ANY(%(cols)s) AND a.grantee = %(r)s::regrole
  AND a.privilege_type = 'SELECT'
"""
# the roles a role reads through (by inheritance) that hold a grant on the table, or read every table
THROUGH = """
SELECT g.rolname FROM pg_roles g
WHERE g.oid <> %(r)s::regrole AND pg_has_role(%(r)s::regrole, g.oid, 'USAGE')
  AND (g.rolname IN ('pg_read_all_data')
       OR g.oid = (SELECT relowner FROM pg_class WHERE oid = %(t)s::oid)
       OR EXISTS (SELECT 1 FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %(t)s::oid
                  AND a.grantee = g.oid AND a.privilege_type = 'SELECT')
       OR EXISTS (SELECT 1 FROM pg_attribute att, aclexplode(att.attacl) a WHERE att.attrelid = %(t)s::oid
                  AND a.grantee = g.oid AND a.privilege_type = 'SELECT'))
ORDER BY 1
"""


def _declared(matrix: AccessMatrix, role: str, table: str, column: str) -> bool:
    return ((role, table, "SELECT") in matrix.grants or (role, f"{table}({column})", "SELECT") in matrix.grants
            or role in matrix.owner_roles)


@rule
def sensitive_readers(ctx: AuditContext) -> list[Finding]:
    out = []
    for table, columns in by_table(sensitive_columns(ctx)).items():
        regclass = _regclass(ctx, table)
        readers: dict[str, list[str]] = {}  # reader -> the sensitive columns it reads
        high = ctx.matrix is not None
        for column in columns:
            if ctx.rows(PUBLIC_READS, {"t": regclass, "c": column.column})[0][0]:
                readers.setdefault("PUBLIC", []).append(column.column)
                high = True
                continue
            for role, login in ctx.rows(READERS, {"t": regclass, "c": column.column}):
                if ctx.matrix is not None and _declared(ctx.matrix, role, table, column.column):
                    continue
                if ctx.matrix is None and not login:
                    continue
                readers.setdefault(role, []).append(column.column)
        if not readers:
            continue
        fixes, notes = [], []
        for reader, names in sorted(readers.items()):
            fix, note = _revoke_reads(ctx, table, reader, names)
            fixes += fix
            notes += note
        kinds = ", ".join(c.describe() for c in columns if any(c.column in n for n in readers.values()))
        who = "; ".join(f"{r} ({', '.join(sorted(set(n)))})" for r, n in sorted(readers.items()))
        declared = "the matrix does not declare them for it" if ctx.matrix else "no access-control matrix declares it"
        remediation = " ".join(fixes) if fixes else ""
        if notes:
            remediation = (remediation + " " if remediation else "") + " ".join(notes)
        out.append(Finding(
            "SEC100", "sensitive columns readable by undeclared roles", Severity.HIGH if high else Severity.LOW,
            A01_ACCESS, table, f"{table} holds {kinds}; readable by {who}: {declared}",
            remediation + ("" if ctx.matrix else " (or declare the readers in an access-control matrix)"),
            tuple(fixes)))
    return out


def _revoke_reads(ctx: AuditContext, table: str, reader: str, columns: list[str]) -> tuple[list[str], list[str]]:
    """REVOKE statements for the reader's direct grants, and a sentence for what it reads through memberships."""
    oid = _regclass(ctx, table)
    table_id = sql.Identifier(*table.split(".", 1))
    grantee_id = sql.SQL("PUBLIC") if reader == "PUBLIC" else sql.Identifier(reader)
    if reader == "PUBLIC":
        grants = {"*"} if ctx.rows(
            "SELECT 1 FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a"
            " WHERE c.oid = %s::oid AND a.grantee = 0 AND a.privilege_type = 'SELECT'", (oid,)) else set()
        grants |= {name for (name,) in ctx.rows(
            "SELECT att.attname FROM pg_attribute att, aclexplode(att.attacl) a WHERE att.attrelid = %s::oid"
            " AND att.attname = ANY(%s) AND a.grantee = 0 AND a.privilege_type = 'SELECT'", (oid, columns))}
    else:
        grants = {name for (name,) in ctx.rows(DIRECT_GRANTS, {"t": oid, "r": q(reader), "cols": columns})}
    fixes = []
    if "*" in grants:
        fixes.append(sql.SQL("REVOKE SELECT ON {} FROM {};").format(table_id, grantee_id).as_string(None))
    fixes += [sql.SQL("REVOKE SELECT ({}) ON {} FROM {};").format(sql.Identifier(c), table_id, grantee_id)
              .as_string(None) for c in sorted(grants - {"*"})]
    notes = []
    if reader != "PUBLIC" and "*" not in grants and set(columns) - grants:
        through = [name for (name,) in ctx.rows(THROUGH, {"r": q(reader), "t": oid})]
        notes.append(f"{reader} reads {table} through {', '.join(through) or 'a role membership'}: revoke that"
                     " membership or grant only the declared columns.")
    return fixes, notes


# ---- SEC101: found but not declared -----------------------------------------------------------------------------
@rule
def undeclared_sensitive_columns(ctx: AuditContext) -> list[Finding]:
    if ctx.matrix is None:  # nothing to declare them in
        return []
    declared = {(table, column) for table, columns in ctx.matrix.sensitive.items() for column in columns}
    out = []
    for table, columns in by_table(discovered(ctx)).items():
        missing = [c for c in columns if (table, c.column) not in declared]
        if not missing:
            continue
        names = ", ".join(q(c.column) for c in missing)
        out.append(Finding(
            "SEC101", "sensitive columns not declared in the matrix", Severity.LOW, A01_ACCESS, table,
            f"{table} holds {', '.join(c.describe() for c in missing)}, which the access-control matrix does not"
            " list as sensitive: who may read them is not declared, and they get no audit trail",
            f"add {{table: {table}, columns: [{names}]}} to the matrix's sensitive list, or move the data out"))
    return out


# ---- SEC102: unencrypted backups -------------------------------------------------------------------------------
def backup_exposure(columns: list[SensitiveColumn], backup_findings: Iterable[Finding]) -> list[Finding]:
    """SEC102 for every unencrypted backup (SEC031 of :func:`dbops.security.backups.audit_backups`) of a database
    holding sensitive columns: names the columns at risk."""
    if not columns:
        return []
    tables = by_table(columns)
    listed = "; ".join(f"{t}: {', '.join(sorted({c.column for c in cs}))}" for t, cs in tables.items())
    kinds = ", ".join(sorted({c.kind for c in columns}))
    out = []
    for finding in backup_findings:
        if finding.rule != "SEC031":
            continue
        out.append(Finding(
            "SEC102", "sensitive data in an unencrypted backup", Severity.HIGH, A02_CRYPTO, finding.subject,
            f"{finding.subject} is not encrypted ({finding.evidence}) and holds {len(columns)} sensitive column(s)"
            f" ({kinds}): {listed}",
            "set DBOPS_BACKUP_KEY, take a new encrypted backup and delete the plain one (and its copies)"))
    return out


# ---- pgaudit ----------------------------------------------------------------------------------------------------
AUDIT_ROLE = "dbops_pgaudit"
PGAUDIT_CLASSES = ("read", "write", "function", "role", "ddl", "misc", "misc_set")
REQUIRED_CLASSES = ("ddl", "role")


def _pgaudit_loaded(ctx: AuditContext) -> bool:
    libraries = [lib.strip().strip('"') for lib in ctx.settings.get("shared_preload_libraries", "").split(",")]
    return "pgaudit" in libraries or "pgaudit.log" in ctx.settings


def sensitive_tables(ctx: AuditContext) -> list[str]:
    """The tables whose reads and writes must be audited: those holding discovered or declared sensitive columns."""
    return list(by_table(sensitive_columns(ctx)))


def parse_classes(value: str) -> set[str]:
    """pgaudit.log (``all, -misc``) as the set of classes it logs."""
    out: set[str] = set()
    for part in (p.strip().lower() for p in value.split(",")):
        negate = part.startswith("-")
        name = part.lstrip("-").strip()
        names = set(PGAUDIT_CLASSES) if name == "all" else {name} if name in PGAUDIT_CLASSES else set()
        out = out - names if negate else out | names
    return out


@rule
def pgaudit_loaded(ctx: AuditContext) -> list[Finding]:
    if _pgaudit_loaded(ctx):
        return []
    tables = sensitive_tables(ctx)
    libraries = ctx.settings.get("shared_preload_libraries")
    available = bool(ctx.rows("SELECT 1 FROM pg_available_extensions WHERE name = 'pgaudit'"))
    now = (f"shared_preload_libraries = '{libraries}'" if libraries is not None
           else "pgaudit's settings are absent (shared_preload_libraries is not visible to this role)")
    install = "" if available else " (install the pgaudit package for this server version first)"
    wanted = ", ".join([lib for lib in (libraries or "").split(",") if lib.strip()] + ["pgaudit"])
    held = f"; {len(tables)} table(s) hold sensitive data ({', '.join(tables[:5])}{', ...' if len(tables) > 5 else ''})"
    return [Finding(
        "SEC103", "pgaudit not loaded", Severity.MEDIUM if tables else Severity.LOW, A09_LOGGING,
        "shared_preload_libraries",
        f"{now}: who read or changed which table is not logged{held if tables else ''}"
        f"{'' if available else '; the pgaudit extension is not installed on the server'}",
        f"add pgaudit to shared_preload_libraries{install}: ALTER SYSTEM SET shared_preload_libraries = '{wanted}',"
        " then restart the server (a reload is not enough); the audit then checks pgaudit.log and pgaudit.role")]


@rule
def pgaudit_session_classes(ctx: AuditContext) -> list[Finding]:
    if not _pgaudit_loaded(ctx):
        return []
    value = ctx.settings.get("pgaudit.log", "none")
    logged = parse_classes(value)
    required = set(REQUIRED_CLASSES) | ({"write"} if sensitive_tables(ctx) else set())
    missing = sorted(required - logged)
    if not missing:
        return []
    wanted = ", ".join(c for c in PGAUDIT_CLASSES if c in logged | required)
    fix = f"ALTER SYSTEM SET pgaudit.log = '{wanted}';"
    why = " (sensitive tables are written)" if "write" in missing else ""
    return [Finding("SEC104", "pgaudit session logging misses classes", Severity.MEDIUM, A09_LOGGING, "pgaudit.log",
                    f"pgaudit.log = '{value}': {', '.join(missing)} statements are not logged{why}",
                    f"{fix} SELECT pg_reload_conf()", (fix, "SELECT pg_reload_conf();"), True)]


PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


@rule
def pgaudit_object_auditing(ctx: AuditContext) -> list[Finding]:
    if not _pgaudit_loaded(ctx):
        return []
    tables = sensitive_tables(ctx)
    if not tables:
        return []
    role = ctx.settings.get("pgaudit.role", "")
    exists = bool(role) and bool(ctx.rows("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)))
    if not exists:
        fix = []
        if not ctx.rows("SELECT 1 FROM pg_roles WHERE rolname = %s", (AUDIT_ROLE,)):
            fix.append(f"CREATE ROLE {q(AUDIT_ROLE)} NOLOGIN;")
        fix.append(f"ALTER SYSTEM SET pgaudit.role = '{AUDIT_ROLE}';")
        fix += [f"GRANT {', '.join(PRIVILEGES)} ON {q_qualified(t)} TO {q(AUDIT_ROLE)};" for t in tables]
        why = f"names role {role}, which does not exist" if role else "is not set"
        return [Finding("SEC105", "no pgaudit object auditing", Severity.MEDIUM, A09_LOGGING, "pgaudit.role",
                        f"pgaudit.role {why}: reads and writes of the sensitive tables ({', '.join(tables)}) are not"
                        " logged as AUDIT: OBJECT", " ".join(fix) + " SELECT pg_reload_conf()",
                        (*fix, "SELECT pg_reload_conf();"), True)]
    out = []
    for table in tables:
        missing = [p for p in PRIVILEGES if not ctx.rows(
            "SELECT has_table_privilege(%s, %s::oid, %s)", (role, _regclass(ctx, table), p))[0][0]]
        if missing:
            fix = f"GRANT {', '.join(missing)} ON {q_qualified(table)} TO {q(role)};"
            out.append(Finding("SEC105", "sensitive table not covered by pgaudit object auditing", Severity.MEDIUM,
                               A09_LOGGING, table, f"the audit role {role} (pgaudit.role) lacks {', '.join(missing)}"
                               f" on {table}: those statements on it are not logged as AUDIT: OBJECT", fix, (fix,)))
    return out


@rule
def pgaudit_parameters(ctx: AuditContext) -> list[Finding]:
    if not _pgaudit_loaded(ctx) or ctx.settings.get("pgaudit.log_parameter", "off") != "on":
        return []
    fix = "ALTER SYSTEM SET pgaudit.log_parameter = 'off';"
    return [Finding("SEC106", "pgaudit logs statement parameters", Severity.LOW, A09_LOGGING, "pgaudit.log_parameter",
                    "pgaudit.log_parameter = on: the values bound to audited statements (e-mail addresses, password"
                    " hashes, card numbers) are written to the server log, readable by whoever reads the logs",
                    f"{fix} SELECT pg_reload_conf()", (fix, "SELECT pg_reload_conf();"), True)]


@rule
def pgaudit_role_isolated(ctx: AuditContext) -> list[Finding]:
    role = ctx.settings.get("pgaudit.role", "") if _pgaudit_loaded(ctx) else ""
    if not role:
        return []
    rows = ctx.rows("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
    if not rows:
        return []
    members = [name for (name,) in ctx.rows(
        "SELECT m.rolname FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member"
        " WHERE am.roleid = %s::regrole ORDER BY 1", (q(role),))]
    problems, fix = [], []
    if rows[0][0]:
        problems.append("can log in")
        fix.append(f"ALTER ROLE {q(role)} NOLOGIN;")
    if members:
        problems.append(f"is granted to {', '.join(members)}")
        fix += [f"REVOKE {q(role)} FROM {q(m)};" for m in members]
    if not problems:
        return []
    return [Finding("SEC107", "the pgaudit audit role is usable", Severity.MEDIUM, A01_ACCESS, f"role {role}",
                    f"the audit role {role} (pgaudit.role) {' and '.join(problems)}: it holds the privileges that"
                    " select what is audited, so whoever uses it reads the sensitive tables", " ".join(fix),
                    tuple(fix))]


# ---- SEC108 / SEC109: data stored in clear ----------------------------------------------------------------------
@rule
def plaintext_passwords(ctx: AuditContext) -> list[Finding]:
    out = []
    for c in discovered(ctx):
        if c.kind != PASSWORD or not c.sampled or c.matched / c.sampled >= MATCH_SHARE:
            continue
        name = f"{c.qualified_table}.{c.column}"
        out.append(Finding(
            "SEC108", "passwords stored in clear", Severity.HIGH, A02_CRYPTO, name,
            f"{c.sampled - c.matched} of {c.sampled} sampled values of {name} are not password hashes (bcrypt,"
            " argon2, scrypt, SCRAM, crypt)",
            "store a slow salted hash (argon2id, bcrypt, scrypt) instead: rehash at next login, then erase the"
            " plain values (and the backups holding them)"))
    return out


@rule
def secrets_in_clear(ctx: AuditContext) -> list[Finding]:
    out = []
    for c in discovered(ctx):
        if c.kind != SECRET or "sample" not in c.how:
            continue
        name = f"{c.qualified_table}.{c.column}"
        out.append(Finding(
            "SEC109", "secrets stored in clear", Severity.MEDIUM, A02_CRYPTO, name,
            f"{c.matched} of {c.sampled} sampled values of {name} look like secrets (private keys, API keys or"
            " tokens) stored in clear",
            "keep secrets in a secret store (or encrypted, with the key outside the database), store only a hash of"
            " tokens, and rotate the ones exposed"))
    return out

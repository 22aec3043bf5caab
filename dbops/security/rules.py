"""The audit rules. Each reads the catalog of one database (and its cluster) and returns findings.

Rules that need a superuser's view (pg_authid, pg_hba_file_rules) report an ``info`` finding when the auditing role
cannot read it, rather than passing silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from dbops.security.catalog import A01, A02, A04, A07, A09, control
from dbops.security.findings import (
    A01_ACCESS,
    A02_CRYPTO,
    A05_MISCONFIG,
    A07_AUTH,
    A09_LOGGING,
    Finding,
    Severity,
)
from dbops.security.matrix import AccessMatrix

LOOPBACK = {"localhost", "127.0.0.1", "::1", ""}
RISKY_EXTENSIONS = {
    "dblink": "opens connections from the server to any host, as the server",
    "postgres_fdw": "opens connections from the server to any host",
    "file_fdw": "reads server files and runs programs (with the right grants)",
    "adminpack": "writes and deletes server files",
    "lo": "large objects bypass row-level security",
    "pageinspect": "reads raw pages, bypassing every privilege",
    "pg_surgery": "edits tuples in place",
}
TLS_ORDER = ["", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]


def q(ident: str) -> str:
    """A quoted identifier for remediation text (SQL we print, never execute here)."""
    return sql.Identifier(ident).as_string(None)


def q_qualified(name: str) -> str:
    return ".".join(q(part) for part in name.split("."))


USER_SCHEMAS = (
    "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND nspname !~ '^pg_(toast|temp_|toast_temp_)' ORDER BY 1"
)


@dataclass
class AuditContext:
    conn: psycopg.Connection[Any]
    # None: the target has no access-control matrix (its grants are compared with the baseline instead)
    matrix: AccessMatrix | None
    # None: TLS is required when ssl is on or the server listens beyond loopback
    require_tls: bool | None = None
    # the target's configured schemas (empty: every user schema); ``schemas`` is what the rules cover
    scope: tuple[str, ...] = ()
    settings: dict[str, str] = field(default_factory=dict)
    is_superuser: bool = False
    schemas: list[str] = field(default_factory=list)
    user_schemas: list[str] = field(default_factory=list)
    # what one audit computes once for several rules (the sensitive columns a sampling pass found)
    cache: dict[str, Any] = field(default_factory=dict)

    def load(self) -> AuditContext:
        self.settings = dict(self.conn.execute("SELECT name, setting FROM pg_settings").fetchall())
        self.is_superuser = self.settings.get("is_superuser") == "on" or bool(
            self.conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        )
        self.user_schemas = [name for (name,) in self.conn.execute(USER_SCHEMAS).fetchall()]
        self.schemas = audit_schemas(self.scope, self.user_schemas)
        return self

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    @property
    def listens_beyond_loopback(self) -> bool:
        addresses = {a.strip() for a in self.settings.get("listen_addresses", "").split(",")}
        return not addresses <= LOOPBACK

    @property
    def tls_required(self) -> bool:
        if self.require_tls is not None:
            return self.require_tls
        return self.settings.get("ssl") == "on" or self.listens_beyond_loopback


def audit_schemas(scope: tuple[str, ...], existing: list[str]) -> list[str]:
    """The schemas the generic rules cover: the configured ones (every user schema when none is), ``public``
    always (everybody's search_path resolves through it), and only those the database has."""
    wanted = set(scope or existing) | {"public"}
    return [name for name in existing if name in wanted]


Rule = Callable[[AuditContext], list[Finding]]
RULES: list[Rule] = []

control("SEC001", "no superuser beyond the bootstrap role", A01, cis="4.3")
control("SEC002", "every login role has a password", A07)
control("SEC003", "no password stored as an MD5 hash", A04, cis="5.4")
control("SEC004", "password_encryption is scram-sha-256", A04, cis="5.4")
control("SEC005", "pg_hba.conf: no trust, password or md5 method, no line in error", A07, cis="5.3, 5.4")
control("SEC006", "pg_hba.conf: remote lines require TLS (hostssl)", A04, cis="6.8")
control("SEC007", "TLS is on where connections leave the host", A04, cis="6.8")
control("SEC008", "TLS minimum version TLSv1.2 or later", A04, cis="6.9")
control("SEC009", "PUBLIC may not create objects in a schema", A01, cis="4.6")
control("SEC010", "application roles own no objects", A01, cis="4.3")
control("SEC011", "application roles hold no DDL rights", A01, cis="4.3")
control("SEC012", "every grant is in the access-control matrix", A01, cis="4.6")
control("SEC013", "every declared grant is present", A01)
control("SEC014", "tenant tables have row-level security", A01, cis="4.7")
control("SEC015", "row-level security is forced on tenant tables", A01, cis="4.7")
control("SEC016", "SECURITY DEFINER functions have a safe search_path", A01, cis="4.5")
control("SEC017", "no untrusted procedural language", A02)
control("SEC018", "no risky extension", A02)
control("SEC019", "no application role in the server file and program roles", A01, cis="4.3")
control("SEC020", "connections and disconnections are logged", A09, cis="3.1.20, 3.1.21")
control("SEC021", "the sensitive tables the matrix names exist", A09)
control("SEC022", "sensitive tables have an audit trail", A09, cis="3.2")


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def not_checked(rule_id: str, title: str, owasp: str, why: str) -> Finding:
    return Finding(rule_id, title, Severity.INFO, owasp, "(not checked)", why,
                   "audit as a superuser to check this rule")


# ---- roles and authentication ---------------------------------------------------------------------------------
@rule
def extra_superusers(ctx: AuditContext) -> list[Finding]:
    rows = ctx.rows("SELECT rolname FROM pg_roles WHERE rolsuper AND oid <> 10 ORDER BY 1")
    return [
        Finding("SEC001", "superuser beyond the bootstrap role", Severity.CRITICAL, A01_ACCESS, name,
                f"role {name} has SUPERUSER (only the bootstrap role should)",
                f"ALTER ROLE {q(name)} NOSUPERUSER", (f"ALTER ROLE {q(name)} NOSUPERUSER;",))
        for (name,) in rows
    ]


@rule
def login_passwords(ctx: AuditContext) -> list[Finding]:
    if not ctx.is_superuser:
        return [not_checked("SEC002", "login role passwords", A07_AUTH, "pg_authid is readable by superusers only")]
    out = []
    for name, password in ctx.rows(
        "SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin AND oid <> 10 ORDER BY 1"
    ):
        if password is None:
            out.append(Finding(
                "SEC002", "login role without a password", Severity.LOW, A07_AUTH, name,
                f"role {name} can log in but has no password (it cannot authenticate under scram-sha-256 and"
                " needs none under trust, peer or cert)",
                f"set a password from a secret store (ALTER ROLE {q(name)} PASSWORD ...) or ALTER ROLE {q(name)}"
                " NOLOGIN"))
        elif password.startswith("md5"):
            out.append(Finding(
                "SEC003", "password stored as an MD5 hash", Severity.HIGH, A02_CRYPTO, name,
                f"role {name} has an md5 password hash (unsalted beyond the role name, fast to brute-force)",
                f"with password_encryption = scram-sha-256, reset it: ALTER ROLE {q(name)} PASSWORD ..."))
    return out


@rule
def password_encryption(ctx: AuditContext) -> list[Finding]:
    value = ctx.settings.get("password_encryption", "")
    if value == "scram-sha-256":
        return []
    return [Finding("SEC004", "password_encryption is not scram-sha-256", Severity.HIGH, A02_CRYPTO,
                    "password_encryption", f"password_encryption = {value}: new passwords are stored as md5",
                    "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; SELECT pg_reload_conf()",
                    ("ALTER SYSTEM SET password_encryption = 'scram-sha-256';", "SELECT pg_reload_conf();"), True)]


@rule
def hba_rules(ctx: AuditContext) -> list[Finding]:
    try:
        rows = ctx.rows(
            "SELECT line_number, type, database, user_name, address, auth_method, error FROM pg_hba_file_rules"
            " ORDER BY line_number"
        )
    except psycopg.errors.InsufficientPrivilege:
        return [not_checked("SEC005", "pg_hba.conf rules", A07_AUTH, "pg_hba_file_rules needs superuser")]
    out = []
    weak = {
        "trust": (Severity.CRITICAL, "connects without any password"),
        "password": (Severity.HIGH, "sends the password in clear text"),
        "md5": (Severity.MEDIUM, "accepts md5 challenge-response (and md5 hashes)"),
    }
    for line, kind, databases, users, address, method, error in rows:
        where = f"pg_hba.conf line {line}: {kind} {','.join(databases or [])} {','.join(users or [])} "
        where += f"{address or ''} {method}".rstrip()
        subject = f"pg_hba line {line}"
        if error:
            out.append(Finding("SEC005", "pg_hba.conf line in error", Severity.MEDIUM, A05_MISCONFIG, subject,
                               f"{where} — {error}", "fix the line; a reload ignores the whole file otherwise"))
            continue
        if method in weak and (kind != "local" or method == "trust"):
            severity, why = weak[method]
            if kind == "local":  # trust over the Unix socket: any OS user of the host, as any role
                severity = Severity.HIGH
            out.append(Finding("SEC005", f"pg_hba.conf uses {method}", severity, A07_AUTH, subject,
                               f"{where} ({why})", "use scram-sha-256 (or cert) on this line and reload"))
        if kind in ("host", "hostnossl") and ctx.tls_required:
            out.append(Finding("SEC006", "pg_hba.conf accepts connections without TLS", Severity.HIGH, A02_CRYPTO,
                               subject, f"{where} — TLS is required but this line accepts plain TCP",
                               "change the line to hostssl and reload"))
    return out


@rule
def tls_settings(ctx: AuditContext) -> list[Finding]:
    if ctx.settings.get("ssl") != "on":
        exposed = ctx.listens_beyond_loopback or ctx.require_tls
        severity = Severity.HIGH if exposed else Severity.MEDIUM
        where = ("listens on " + ctx.settings.get("listen_addresses", "?")) if ctx.listens_beyond_loopback else (
            "loopback only" + (", but TLS is required" if ctx.require_tls else ""))
        return [Finding("SEC007", "TLS is off", severity, A02_CRYPTO, "ssl",
                        f"ssl = off ({where}): connections and passwords travel unencrypted",
                        "install a certificate and key, set ssl = on and ssl_min_protocol_version = 'TLSv1.2'")]
    version = ctx.settings.get("ssl_min_protocol_version", "")
    if version not in TLS_ORDER or TLS_ORDER.index(version) < TLS_ORDER.index("TLSv1.2"):
        return [Finding("SEC008", "TLS minimum version below TLSv1.2", Severity.HIGH, A02_CRYPTO,
                        "ssl_min_protocol_version", f"ssl_min_protocol_version = {version or '(any)'}",
                        "ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'; SELECT pg_reload_conf()",
                        ("ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2';", "SELECT pg_reload_conf();"),
                        True)]
    return []


# ---- privileges -------------------------------------------------------------------------------------------------
@rule
def public_schema_create(ctx: AuditContext) -> list[Finding]:
    rows = ctx.rows(
        "SELECT n.nspname FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
        " WHERE a.grantee = 0 AND a.privilege_type = 'CREATE' AND n.nspname = ANY(%s) ORDER BY 1", (ctx.schemas,)
    )
    return [
        Finding("SEC009", "PUBLIC may create objects in a schema", Severity.HIGH, A01_ACCESS, f"schema {name}",
                f"CREATE on schema {name} is granted to PUBLIC: any role can plant functions and operators that"
                " others resolve through search_path",
                f"REVOKE CREATE ON SCHEMA {q(name)} FROM PUBLIC", (f"REVOKE CREATE ON SCHEMA {q(name)} FROM PUBLIC;",))
        for (name,) in rows
    ]


OWNED_OBJECTS = """
SELECT pg_get_userbyid(c.relowner), CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'v' THEN 'VIEW'
       WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%' AND pg_get_userbyid(c.relowner) = ANY(%(roles)s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i') AND c.relkind = 'S')
UNION ALL
SELECT pg_get_userbyid(p.proowner), CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE pg_get_userbyid(p.proowner) = ANY(%(roles)s)
UNION ALL
SELECT pg_get_userbyid(n.nspowner), 'SCHEMA', format('%%I', n.nspname)
FROM pg_namespace n WHERE pg_get_userbyid(n.nspowner) = ANY(%(roles)s)
UNION ALL
SELECT pg_get_userbyid(d.datdba), 'DATABASE', format('%%I', d.datname)
FROM pg_database d WHERE d.datname = current_database() AND pg_get_userbyid(d.datdba) = ANY(%(roles)s)
ORDER BY 1, 3
"""

DDL_RIGHTS = """
SELECT r.rolname, 'CREATE ON SCHEMA ' || format('%%I', n.nspname)
FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a JOIN pg_roles r ON r.oid = a.grantee
WHERE a.privilege_type = 'CREATE' AND r.rolname = ANY(%(roles)s) AND a.grantee <> n.nspowner
UNION ALL
SELECT r.rolname, 'CREATE ON DATABASE ' || format('%%I', d.datname)
FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a JOIN pg_roles r ON r.oid = a.grantee
WHERE d.datname = current_database() AND a.privilege_type = 'CREATE' AND r.rolname = ANY(%(roles)s)
  AND a.grantee <> d.datdba
UNION ALL
SELECT rolname, 'CREATEDB' FROM pg_roles WHERE rolcreatedb AND rolname = ANY(%(roles)s)
UNION ALL
SELECT rolname, 'CREATEROLE' FROM pg_roles WHERE rolcreaterole AND rolname = ANY(%(roles)s)
ORDER BY 1, 2
"""


@rule
def application_role_ddl(ctx: AuditContext) -> list[Finding]:
    if ctx.matrix is None:  # which roles are the application's is the matrix's to say
        return []
    roles = sorted(ctx.matrix.application_roles)
    out = []
    owner = next(iter(sorted(ctx.matrix.owner_roles)), None)
    for role, kind, name in ctx.rows(OWNED_OBJECTS, {"roles": roles}):
        fix = f"ALTER {kind} {name} OWNER TO {q(owner)};" if owner else ""
        out.append(Finding("SEC010", "application role owns objects", Severity.HIGH, A01_ACCESS,
                           f"{role}: {kind.lower()} {name}",
                           f"{role} owns {kind.lower()} {name}: owners bypass grants, can ALTER/DROP it and"
                           " disable its row-level security",
                           fix or "give the object to the schema owner role", (fix,) if fix else ()))
    for role, right in ctx.rows(DDL_RIGHTS, {"roles": roles}):
        if right in ("CREATEDB", "CREATEROLE"):
            fix = f"ALTER ROLE {q(role)} NO{right};"
        else:
            fix = f"REVOKE {right} FROM {q(role)};"
        out.append(Finding("SEC011", "application role holds DDL rights", Severity.HIGH, A01_ACCESS,
                           f"{role}: {right}", f"{role} has {right}", fix, (fix,)))
    return out


ACTUAL_GRANTS = """
WITH rels AS (
    SELECT c.oid, c.relowner, c.relacl, format('%%I.%%I', n.nspname, c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
)
SELECT a.grantee, r.name, a.privilege_type
FROM rels r, aclexplode(coalesce(r.relacl, acldefault('r', r.relowner))) a WHERE a.grantee <> r.relowner
UNION ALL
SELECT a.grantee, r.name || '(' || att.attname || ')', a.privilege_type
FROM rels r JOIN pg_attribute att ON att.attrelid = r.oid AND att.attnum > 0 AND NOT att.attisdropped
     , aclexplode(att.attacl) a
WHERE att.attacl IS NOT NULL AND a.grantee <> r.relowner
UNION ALL
SELECT a.grantee, format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       a.privilege_type
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
     aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
WHERE n.nspname = ANY(%(schemas)s) AND a.grantee <> p.proowner
"""


def _unquote_name(name: str) -> str:
    """Matrix names are written unquoted (app.users); catalog names come back from format('%I')."""
    return name.replace('"', "")


@rule
def grants_match_matrix(ctx: AuditContext) -> list[Finding]:
    if ctx.matrix is None:  # compared with the grants baseline instead (dbops.security.grants)
        return []
    role_names = dict(ctx.rows("SELECT oid, rolname FROM pg_roles"))
    role_names[0] = "PUBLIC"
    actual = {
        (role_names.get(grantee, str(grantee)), _unquote_name(obj), priv)
        for grantee, obj, priv in ctx.rows(ACTUAL_GRANTS, {"schemas": sorted(ctx.matrix.schemas)})
    }
    # a whole-table grant covers its columns: do not report the column-level echo
    actual = {g for g in actual if not (_is_column(g) and (g[0], g[1].split("(")[0], g[2]) in actual)}
    declared = set(ctx.matrix.grants)
    out = []
    for role, obj, priv in sorted(actual - declared):
        if _is_column((role, obj, priv)) and (role, obj.split("(")[0], priv) in declared:
            continue
        target = _grant_target(obj, priv)
        grantee = "PUBLIC" if role == "PUBLIC" else q(role)
        fix = f"REVOKE {target} FROM {grantee};"
        out.append(Finding("SEC012", "grant not in the access-control matrix", Severity.HIGH, A01_ACCESS,
                           f"{role}: {priv} on {obj}", f"{role} holds {priv} on {obj}, which the matrix does not"
                           " declare", fix, (fix,)))
    for role, obj, priv in sorted(declared - actual):
        target = _grant_target(obj, priv)
        fix = f"GRANT {target} TO {q(role)};"
        out.append(Finding("SEC013", "declared grant missing", Severity.LOW, A01_ACCESS, f"{role}: {priv} on {obj}",
                           f"the matrix grants {priv} on {obj} to {role}, the database does not",
                           fix, (fix,)))
    return out


def _is_column(grant: tuple[str, str, str]) -> bool:
    return grant[2] != "EXECUTE" and grant[1].endswith(")")


def _grant_target(obj: str, priv: str) -> str:
    if priv == "EXECUTE":
        return f"EXECUTE ON FUNCTION {q_qualified(obj.split('(')[0])}({obj.split('(', 1)[1]}"
    if obj.endswith(")"):
        table, column = obj[:-1].split("(", 1)
        return f"{priv} ({q(column)}) ON {q_qualified(table)}"
    return f"{priv} ON {q_qualified(obj)}"


TENANT_TABLES = """
SELECT format('%%I.%%I', n.nspname, c.relname), c.relrowsecurity, c.relforcerowsecurity,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
ORDER BY 1
"""


@rule
def tenant_row_security(ctx: AuditContext) -> list[Finding]:
    out = []
    cross_tenant = ctx.matrix.cross_tenant if ctx.matrix else set()
    for name, enabled, forced, policies in ctx.rows(TENANT_TABLES, {"schemas": ctx.schemas}):
        if _unquote_name(name) in cross_tenant:
            continue
        if not enabled:
            fix = f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;"
            out.append(Finding("SEC014", "tenant table without row-level security", Severity.HIGH, A01_ACCESS,
                               name, f"{name} has tenant_id but row-level security is off (policies: {policies}):"
                               " any role with SELECT reads every tenant", fix + " (and a tenant policy)", (fix,)))
        elif not forced:
            fix = f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY;"
            out.append(Finding("SEC015", "row-level security not forced", Severity.MEDIUM, A01_ACCESS, name,
                               f"{name} has row-level security enabled but not forced: its owner sees every tenant",
                               fix, (fix,)))
    return out


DEFINERS = """
SELECT format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, n.nspname, pg_get_userbyid(p.proowner),
       p.prosrc, (SELECT substr(c, 13) FROM unnest(coalesce(p.proconfig, '{}')) c WHERE c LIKE 'search\\_path=%%')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prosecdef AND n.nspname = ANY(%(schemas)s)
  -- an extension's functions are fixed by the extension (and reported by SEC018), not by ALTER FUNCTION
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
ORDER BY 1
"""
# schemas (other than pg_catalog) holding a table, view, sequence, type or function of one of these names
NAMED_IN = """
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname = ANY(%(schemas)s) AND (
    EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = ANY(%(names)s))
    OR EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = n.oid AND p.proname = ANY(%(names)s))
    OR EXISTS (SELECT 1 FROM pg_type t WHERE t.typnamespace = n.oid AND t.typname = ANY(%(names)s)))
"""
DATABASE_SEARCH_PATH = """
SELECT substr(c, 13) FROM pg_db_role_setting s, unnest(s.setconfig) c
WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.setrole = 0
  AND c LIKE 'search\\_path=%'
"""
IDENTIFIER = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)')


def parse_search_path(value: str) -> list[str]:
    """``"$user", lending, "Odd Name"`` -> ['$user', 'lending', 'Odd Name'] (as PostgreSQL stores the setting)."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if part.startswith('"') and part.endswith('"') and len(part) >= 2:
            part = part[1:-1].replace('""', '"')
        if part:
            out.append(part)
    return out


def unqualified_names(body: str) -> set[str]:
    """Every identifier of a function body not written after a dot (``members``, ``open_loans``), as PostgreSQL
    would fold it: what the body may resolve through its search_path."""
    names = set()
    for match in IDENTIFIER.finditer(body or ""):
        if match.start() > 0 and body[match.start() - 1] == ".":
            continue
        names.add(match.group(1).replace('""', '"') if match.group(1) else match.group(2).lower())
    return names


def definer_search_path(ctx: AuditContext, schema: str, owner: str, body: str, current: list[str] | None,
                        caller_path: list[str]) -> tuple[list[str], list[str]]:
    """The search_path that keeps a SECURITY DEFINER function resolving what it resolves today, with ``pg_temp``
    last: ``pg_catalog`` first (where PostgreSQL searches it when the path does not name it), the schemas the
    function already lists, its own schema, and the schemas holding the names its body uses unqualified (ordered as
    the callers' search_path orders them). Returns (path, the schemas added for names in the body)."""
    order = {name: i for i, name in enumerate(owner if s == "$user" else s for s in caller_path)}
    found = [name for (name,) in ctx.rows(NAMED_IN, {"schemas": ctx.user_schemas,
                                                        "names": sorted(unqualified_names(body))})]
    found.sort(key=lambda name: (order.get(name, len(order)), name))
    path: list[str] = []
    for name in [*(current or []), schema, *found]:
        name = owner if name == "$user" else name
        if name != "pg_temp" and name not in path and (name in ctx.user_schemas or name == "pg_catalog"):
            path.append(name)
    if "pg_catalog" not in path:
        path.insert(0, "pg_catalog")
    return [*path, "pg_temp"], [name for name in found if name != schema and name not in (current or [])]


def render_search_path(path: list[str]) -> str:
    return ", ".join(name if name in ("pg_catalog", "pg_temp") else q(name) for name in path)


@rule
def security_definer_search_path(ctx: AuditContext) -> list[Finding]:
    rows = ctx.rows(DEFINERS, {"schemas": ctx.schemas})
    if not rows:
        return []
    database_path = ctx.rows(DATABASE_SEARCH_PATH)
    caller_path = parse_search_path(database_path[0][0] if database_path else '"$user", public')
    out = []
    for signature, kind, schema, owner, body, setting in rows:
        current = parse_search_path(setting) if setting is not None else None
        if current and current[-1] == "pg_temp":
            continue
        if current is None:
            why = "resolves names through the caller's search_path"
        elif "pg_temp" in current:
            after = ", ".join(current[current.index("pg_temp") + 1:])
            why = f"has search_path = {setting}, with pg_temp searched before {after}"
        else:
            why = (f"has search_path = {setting} without pg_temp, which PostgreSQL then searches first for tables and"
                   " types: a caller's temporary table shadows the function's own")
        path, added = definer_search_path(ctx, schema, owner, body, current, caller_path)
        name, args = signature.split("(", 1)
        fix = f"ALTER {kind} {name}({args} SET search_path = {render_search_path(path)};"
        kept = f"; keeps {', '.join(added)} for the names its body uses unqualified" if added else ""
        out.append(Finding("SEC016", "SECURITY DEFINER function without a safe search_path", Severity.HIGH,
                           A01_ACCESS, signature, f"{signature} runs with its owner's ({owner}) rights and {why}",
                           fix + f" (its own schema{kept}, pg_temp last)", (fix,)))
    return out


@rule
def untrusted_languages_and_extensions(ctx: AuditContext) -> list[Finding]:
    out = []
    for (name,) in ctx.rows(
        "SELECT lanname FROM pg_language WHERE NOT lanpltrusted AND lanname NOT IN ('c', 'internal') ORDER BY 1"
    ):
        fix = f"DROP LANGUAGE {q(name)};"
        out.append(Finding("SEC017", "untrusted procedural language installed", Severity.HIGH, A05_MISCONFIG,
                           f"language {name}", f"language {name} is untrusted: its functions run arbitrary code as"
                           " the server's OS user", fix + " (after dropping its functions)", (fix,)))
    for name, version in ctx.rows("SELECT extname, extversion FROM pg_extension ORDER BY 1"):
        if name in RISKY_EXTENSIONS:
            fix = f"DROP EXTENSION {q(name)};"
            out.append(Finding("SEC018", "risky extension installed", Severity.MEDIUM, A05_MISCONFIG,
                               f"extension {name}", f"extension {name} {version}: {RISKY_EXTENSIONS[name]}",
                               fix + " (unless the application needs it)", (fix,)))
    return out


@rule
def server_file_roles(ctx: AuditContext) -> list[Finding]:
    rows = ctx.rows(
        "SELECT g.rolname, m.rolname FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid"
        " JOIN pg_roles m ON m.oid = am.member"
        " WHERE g.rolname IN ('pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program')"
        " ORDER BY 1, 2"
    )
    out = []
    for group, member in rows:
        severity = Severity.CRITICAL if group == "pg_execute_server_program" else Severity.HIGH
        fix = f"REVOKE {q(group)} FROM {q(member)};"
        out.append(Finding("SEC019", f"member of {group}", severity, A01_ACCESS, f"{member} in {group}",
                           f"{member} is a member of {group}: it can "
                           + {"pg_execute_server_program": "run programs on the server as its OS user",
                              "pg_read_server_files": "read any file the server can",
                              "pg_write_server_files": "write any file the server can"}[group], fix, (fix,)))
    return out


# ---- logging and audit trail --------------------------------------------------------------------------------------
@rule
def connection_logging(ctx: AuditContext) -> list[Finding]:
    out = []
    for name in ("log_connections", "log_disconnections"):
        value = ctx.settings.get(name, "")
        if value in ("off", "", "false"):
            out.append(Finding("SEC020", f"{name} is off", Severity.MEDIUM, A09_LOGGING, name,
                               f"{name} = {value or '(empty)'}: who connected, from where and when is not logged",
                               f"ALTER SYSTEM SET {name} = 'on'; SELECT pg_reload_conf()",
                               (f"ALTER SYSTEM SET {name} = 'on';", "SELECT pg_reload_conf();"), True))
    return out


AUDIT_TRIGGERS = """
SELECT format('%%I.%%I', pn.nspname, p.proname), t.tgtype, t.tgenabled
FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE t.tgrelid = %(table)s::regclass AND NOT t.tgisinternal
"""
ROW, BEFORE, INSERT, DELETE, UPDATE = 1, 2, 4, 8, 16


@rule
def audit_trail(ctx: AuditContext) -> list[Finding]:
    if ctx.matrix is None:  # sensitive tables are declared in the matrix
        return []
    out = []
    for table in sorted(ctx.matrix.sensitive):
        exists = ctx.rows("SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]
        if not exists:
            out.append(Finding("SEC021", "sensitive table missing", Severity.LOW, A09_LOGGING, table,
                               f"the matrix declares {table} sensitive but it does not exist",
                               "fix the matrix or apply the migrations"))
            continue
        covered = 0
        disabled = False
        for function, tgtype, enabled in ctx.rows(AUDIT_TRIGGERS, {"table": table}):
            if _unquote_name(function) not in ctx.matrix.audit_functions or not tgtype & ROW or tgtype & BEFORE:
                continue
            if enabled == "D":
                disabled = True
                continue
            covered |= tgtype & (INSERT | UPDATE | DELETE)
        if covered != INSERT | UPDATE | DELETE:
            name = table.split(".")[-1] + "_audit"
            if disabled:
                fix = f"ALTER TABLE {q_qualified(table)} ENABLE TRIGGER {q(name)};"
            elif ctx.matrix.audit_functions:
                function = sorted(ctx.matrix.audit_functions)[0]
                fix = (f"CREATE TRIGGER {q(name)} AFTER INSERT OR UPDATE OR DELETE ON {q_qualified(table)}"
                       f" FOR EACH ROW EXECUTE FUNCTION {q_qualified(function)}();")
            else:  # the matrix names no audit function: nothing to attach
                fix = ""
            missing = [op for op, bit in (("INSERT", INSERT), ("UPDATE", UPDATE), ("DELETE", DELETE))
                       if not covered & bit]
            out.append(Finding("SEC022", "no audit trail on a sensitive table", Severity.HIGH, A09_LOGGING, table,
                               f"{table} is declared sensitive but {', '.join(missing)} are not audited"
                               f"{' (its audit trigger is disabled)' if disabled else ''}",
                               fix or "declare the audit function in the matrix (audit_functions) and attach it"
                               " as an AFTER INSERT OR UPDATE OR DELETE row trigger, or audit the table with pgaudit",
                               (fix,) if fix else ()))
    return out

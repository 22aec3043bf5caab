"""The grants baseline: for a target without an access-control matrix, the grants as they were accepted.

The first audit records the current grants in ``$DBOPS_HOME/security/<target>/grants-baseline.yml``: role attributes,
role memberships, privileges on the database, its schemas (the target's, ``public`` included), their tables, views,
sequences, columns and functions, and default privileges. Later audits compare the live grants with it: anything new
is a finding naming it (a grant to PUBLIC graded high), anything gone is ``info``.
``dbops security audit --accept-baseline`` records it again after a reviewed change.

Every entry is one line of text, so the file reads (and diffs) like a list of grants. A partition's grants are
recorded only where they differ from its parent's (new partitions made with the parent's grants are not changes).
Roles are the cluster's (a role of any database can connect to this one), predefined ``pg_*`` roles excepted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from dbops.errors import DbopsError
from dbops.private import write_private
from dbops.security.catalog import A01, control
from dbops.security.findings import A01_ACCESS, Finding, Severity

BASELINE_FILE = "grants-baseline.yml"
ROLE_ATTRIBUTES = {"rolsuper": "SUPERUSER", "rolinherit": "INHERIT", "rolcreaterole": "CREATEROLE",
                   "rolcreatedb": "CREATEDB", "rolcanlogin": "LOGIN", "rolreplication": "REPLICATION",
                   "rolbypassrls": "BYPASSRLS"}
DANGEROUS_ATTRIBUTES = {"SUPERUSER", "CREATEROLE", "BYPASSRLS", "REPLICATION"}
KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence"}
DEFAULT_KINDS = {"r": "tables", "S": "sequences", "f": "functions", "T": "types", "n": "schemas"}

# Without a matrix: the grants as the first audit recorded them, and every change since
control("SEC040", "the grants are compared with a matrix or a recorded baseline", A01)
control("SEC041", "no role created or role attribute gained since the baseline", A01)
control("SEC042", "no role membership granted since the baseline", A01)
control("SEC043", "no privilege granted since the baseline", A01)
control("SEC044", "no default privilege added since the baseline", A01)
control("SEC045", "no role or role attribute dropped since the baseline", A01)
control("SEC046", "new objects carry only their default privileges", A01)


class BaselineError(DbopsError):
    """The grants baseline is unreadable or belongs to another database."""


def baseline_path(home: Path, target: str) -> Path:
    """Where target ``target``'s grants baseline lives under the dbops home."""
    return Path(home) / "security" / target / BASELINE_FILE


@dataclass(frozen=True)
class Grant:
    """One privilege, one membership or one default privilege, with the SQL that takes it back."""

    kind: str  # privilege | membership | default
    text: str  # as the baseline file spells it: "<grantee>: <privilege><rest>"
    grantee: str
    revoke: str  # the SQL that takes it back, with @@PRIV@@ where the privilege goes
    privilege: str = ""
    rest: str = ""  # " on table public.t", " (col) on table public.t", " on new tables in schema s to r"
    # the object's ACL is PostgreSQL's built-in default (EXECUTE on a function, CONNECT/TEMP on the database)
    builtin: bool = False
    # the default-privilege lines that would have granted it on a new object
    defaults: tuple[str, ...] = ()

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.kind, self.grantee, self.rest)


@dataclass
class GrantSnapshot:
    roles: dict[str, list[str]] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)  # text -> grant

    def entries(self, kind: str) -> list[str]:
        return sorted(t for t, g in self.grants.items() if g.kind == kind)

    @property
    def size(self) -> int:
        return len(self.roles) + len(self.grants)


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _grantee_sql(name: str) -> str:
    return "PUBLIC" if name == "PUBLIC" else _ident(name)


RELATION_ACL = """
SELECT c.oid, c.relkind, format('%%I.%%I', n.nspname, c.relname), c.relispartition,
       (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid LIMIT 1),
       coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable, c.relacl IS NULL,
       pg_get_userbyid(c.relowner), format('%%I', n.nspname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
     LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND a.grantee <> c.relowner
"""
COLUMN_ACL = """
SELECT format('%%I.%%I', n.nspname, c.relname), att.attname, coalesce(r.rolname, 'PUBLIC'), a.privilege_type,
       a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_attribute att ON att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped
          AND att.attacl IS NOT NULL,
     aclexplode(att.attacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE n.nspname = ANY(%(schemas)s) AND NOT c.relispartition AND a.grantee <> c.relowner
"""
FUNCTION_ACL = """
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
       format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable, p.proacl IS NULL,
       pg_get_userbyid(p.proowner), format('%%I', n.nspname)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
     aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE n.nspname = ANY(%(schemas)s) AND a.grantee <> p.proowner
"""
SCHEMA_ACL = """
SELECT format('%%I', n.nspname), coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable,
       n.nspacl IS NULL, pg_get_userbyid(n.nspowner)
FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
     LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE n.nspname = ANY(%(schemas)s) AND a.grantee <> n.nspowner
"""
DATABASE_ACL = """
SELECT format('%I', d.datname), coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable,
       d.datacl IS NULL
FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
     LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE d.datname = current_database() AND a.grantee <> d.datdba
"""
DEFAULT_ACL = """
SELECT pg_get_userbyid(d.defaclrole), CASE WHEN d.defaclnamespace = 0 THEN NULL ELSE format('%%I', n.nspname) END,
       d.defaclobjtype, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
     aclexplode(d.defaclacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE d.defaclnamespace = 0 OR n.nspname = ANY(%(schemas)s)
"""
ROLES = ("SELECT rolname, " + ", ".join(ROLE_ATTRIBUTES)  # noqa: S608 (column names of this module)
         + " FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")
MEMBERSHIPS = """
SELECT g.rolname, m.rolname, am.admin_option
FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
"""


def _option(grantable: bool) -> str:
    return " with grant option" if grantable else ""


def take_snapshot(conn: psycopg.Connection[Any], schemas: Sequence[str],
                  as_database: str | None = None) -> GrantSnapshot:
    """The grants of the connected database over ``schemas`` (resolved names), and the cluster's roles; the
    database's own privileges are named ``as_database`` when given (a copy standing for the target)."""
    snap = GrantSnapshot()
    params = {"schemas": list(schemas)}
    for row in conn.execute(ROLES):
        snap.roles[row[0]] = sorted(attr for attr, on in zip(ROLE_ATTRIBUTES.values(), row[1:], strict=True) if on)

    def add(kind: str, text: str, grantee: str, revoke: str) -> None:
        snap.grants[text] = Grant(kind, text, grantee, revoke)

    def privilege(kind: str, grantee: str, priv: str, rest: str, revoke: str, builtin: bool = False,
                  owner: str = "", schema: str | None = None, new: str = "") -> None:
        text = f"{grantee}: {priv}{rest}"
        defaults = tuple(f"{owner}: {priv} on new {new}{where} to {grantee}{option}"
                         for where in ([f" in schema {schema}", ""] if schema else [""])
                         for option in ("", " with grant option")) if owner and new else ()
        snap.grants[text] = Grant(kind, text, grantee, revoke, priv, rest, builtin, defaults)

    for group, member, admin in conn.execute(MEMBERSHIPS).fetchall():
        add("membership", f"{member} in {group}{' with admin option' if admin else ''}", member,
            f"REVOKE {_ident(group)} FROM {_ident(member)};")
    alias = conn.execute("SELECT quote_ident(%s)", (as_database,)).fetchone()[0] if as_database else None
    for db, grantee, priv, grantable, builtin in conn.execute(DATABASE_ACL).fetchall():
        db = alias or db
        privilege("privilege", grantee, priv, f" on database {db}{_option(grantable)}",
                  f"REVOKE @@PRIV@@ ON DATABASE {db} FROM {_grantee_sql(grantee)};", builtin)
    for schema, grantee, priv, grantable, builtin, owner in conn.execute(SCHEMA_ACL, params).fetchall():
        privilege("privilege", grantee, priv, f" on schema {schema}{_option(grantable)}",
                  f"REVOKE @@PRIV@@ ON SCHEMA {schema} FROM {_grantee_sql(grantee)};", builtin, owner, None,
                  "schemas")
    rels = conn.execute(RELATION_ACL, params).fetchall()
    by_oid: dict[int, set[tuple[str, str]]] = {}
    whole_table: set[tuple[str, str, str]] = set()
    for oid, _kind, name, _part, _parent, grantee, priv, *_ in rels:
        by_oid.setdefault(oid, set()).add((grantee, priv))
        whole_table.add((name, grantee, priv))
    for _oid, relkind, name, is_partition, parent, grantee, priv, grantable, builtin, owner, schema in rels:
        if is_partition and (grantee, priv) in by_oid.get(parent, set()):
            continue  # the partition holds its parent's grant: not a grant of its own
        kind = KINDS[relkind]
        target = "SEQUENCE" if relkind == "S" else "TABLE"
        privilege("privilege", grantee, priv, f" on {kind} {name}{_option(grantable)}",
                  f"REVOKE @@PRIV@@ ON {target} {name} FROM {_grantee_sql(grantee)};", builtin, owner, schema,
                  "sequences" if relkind == "S" else "tables")
    for table, column, grantee, priv, grantable in conn.execute(COLUMN_ACL, params).fetchall():
        if (table, grantee, priv) in whole_table:
            continue  # a whole-table grant covers its columns
        privilege("privilege", grantee, priv, f" ({column}) on table {table}{_option(grantable)}",
                  f"REVOKE @@PRIV@@ ({_ident(column)}) ON TABLE {table} FROM {_grantee_sql(grantee)};")
    for kind, signature, grantee, priv, grantable, builtin, owner, schema in conn.execute(FUNCTION_ACL,
                                                                                          params).fetchall():
        privilege("privilege", grantee, priv, f" on {kind} {signature}{_option(grantable)}",
                  f"REVOKE @@PRIV@@ ON {kind.upper()} {signature} FROM {_grantee_sql(grantee)};", builtin, owner,
                  schema, "functions")
    for owner, schema, objtype, grantee, priv, grantable in conn.execute(DEFAULT_ACL, params).fetchall():
        what = DEFAULT_KINDS.get(objtype, objtype)
        where = f" in schema {schema}" if schema else ""
        text = f"{owner}: {priv} on new {what}{where} to {grantee}{_option(grantable)}"
        snap.grants[text] = Grant(
            "default", text, grantee,
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {_ident(owner)}{' IN SCHEMA ' + schema if schema else ''}"
            f" REVOKE @@PRIV@@ ON {what.upper()} FROM {_grantee_sql(grantee)};", priv, f" on new {what}{where} to"
            f" {grantee}{_option(grantable)}")
    return snap


@dataclass(frozen=True)
class Baseline:
    """A recorded snapshot, as read from (or written to) the baseline file."""

    database: str
    scope: tuple[str, ...]  # the target's configured schemas (empty: every user schema)
    recorded_at: str
    roles: dict[str, list[str]]
    memberships: frozenset[str]
    privileges: frozenset[str]
    default_privileges: frozenset[str]

    @property
    def entries(self) -> dict[str, frozenset[str]]:
        return {"membership": self.memberships, "privilege": self.privileges, "default": self.default_privileges}


HEADER = """\
# Grants baseline of target {target} (database {database}): the grants the security audit compares the live
# database with, since the target has no access-control matrix. Anything granted later is reported as a finding,
# anything revoked as info. Review a change, then record the grants again with
#   dbops security audit --accept-baseline
"""


class BaselineStore:
    """The baseline file of one target; ``read_only`` for an audit of a copy (a scratch database), which compares
    with it but never records, naming the copy's database ``as_database`` (the target's)."""

    def __init__(self, path: Path, target: str = "", *, read_only: bool = False,
                 as_database: str | None = None) -> None:
        self.path = Path(path)
        self.target = target
        self.read_only = read_only
        self.as_database = as_database

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> Baseline:
        try:
            doc = yaml.safe_load(self.path.read_text())
        except yaml.YAMLError as exc:
            raise BaselineError(f"{self.path}: not valid YAML ({str(exc).splitlines()[0]})",
                                "fix it, or record it again: dbops security audit --accept-baseline") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("roles"), dict) or "database" not in doc:
            raise BaselineError(f"{self.path}: not a grants baseline (needs database, roles, privileges)",
                                "record it again: dbops security audit --accept-baseline")

        def strings(key: str) -> frozenset[str]:
            value = doc.get(key) or []
            if not isinstance(value, list):
                raise BaselineError(f"{self.path}: {key} must be a list of lines",
                                    "record it again: dbops security audit --accept-baseline")
            return frozenset(str(v) for v in value)

        roles = {str(k): sorted(str(a) for a in (v or [])) for k, v in doc["roles"].items()}
        return Baseline(str(doc["database"]), tuple(str(s) for s in doc.get("schemas") or ()),
                        str(doc.get("recorded_at", "")), roles, strings("memberships"), strings("privileges"),
                        strings("default_privileges"))

    def save(self, snap: GrantSnapshot, database: str, scope: Sequence[str]) -> Baseline:
        if self.read_only:
            raise BaselineError(f"{self.path} is read here, never recorded", "record it from the target itself")
        recorded_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        doc = {"database": database, "schemas": list(scope), "recorded_at": recorded_at, "roles": snap.roles,
               "memberships": snap.entries("membership"), "privileges": snap.entries("privilege"),
               "default_privileges": snap.entries("default")}
        body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200)
        write_private(self.path, HEADER.format(target=self.target or "?", database=database) + body)
        return self.load()


def compare(baseline: Baseline, snap: GrantSnapshot) -> list[Finding]:
    """Findings for what changed since ``baseline``: new roles, attributes, memberships and privileges (findings),
    and what is gone (info)."""
    out: list[Finding] = []
    accept = "if it was intended: dbops security audit --accept-baseline"
    for role in sorted(snap.roles.keys() - baseline.roles.keys()):
        attrs = snap.roles[role]
        severity = Severity.HIGH if DANGEROUS_ATTRIBUTES & set(attrs) else Severity.MEDIUM
        out.append(Finding("SEC041", "role created since the baseline", severity, A01_ACCESS, f"role {role}",
                           f"role {role} ({', '.join(attrs) or 'no attributes'}) is not in the grants baseline"
                           f" of {baseline.recorded_at}", f"drop it if nobody asked for it; {accept}"))
    for role in sorted(snap.roles.keys() & baseline.roles.keys()):
        for attr in sorted(set(snap.roles[role]) - set(baseline.roles[role])):
            severity = Severity.HIGH if attr in DANGEROUS_ATTRIBUTES else Severity.MEDIUM
            fix = f"ALTER ROLE {_ident(role)} NO{attr};"
            out.append(Finding("SEC041", "role attribute gained since the baseline", severity, A01_ACCESS,
                               f"role {role}: {attr}", f"role {role} has {attr}, which the baseline of"
                               f" {baseline.recorded_at} does not record", f"{fix} ({accept})", (fix,)))
        for attr in sorted(set(baseline.roles[role]) - set(snap.roles[role])):
            out.append(Finding("SEC045", "role attribute dropped since the baseline", Severity.INFO, A01_ACCESS,
                               f"role {role}: {attr}", f"role {role} no longer has {attr}", accept))
    for role in sorted(baseline.roles.keys() - snap.roles.keys()):
        out.append(Finding("SEC045", "role dropped since the baseline", Severity.INFO, A01_ACCESS, f"role {role}",
                           f"role {role} of the baseline no longer exists", accept))
    rule = {"membership": ("SEC042", "role membership granted since the baseline"),
            "privilege": ("SEC043", "privilege granted since the baseline"),
            "default": ("SEC044", "default privilege added since the baseline")}
    for kind, recorded in baseline.entries.items():
        live = {t: g for t, g in snap.grants.items() if g.kind == kind}
        rule_id, title = rule[kind]
        groups: dict[tuple[str, str, str], list[Grant]] = {}
        expected: dict[tuple[str, str, str], list[Grant]] = {}
        for text in sorted(live.keys() - recorded):
            grant = live[text]
            by_default = grant.builtin or bool(set(grant.defaults) & baseline.default_privileges)
            (expected if by_default else groups).setdefault(
                grant.group if grant.privilege else (kind, text, ""), []).append(grant)
        for same in expected.values():  # a new object holding what the defaults give it
            privs = ", ".join(sorted(g.privilege for g in same))
            text = f"{same[0].grantee}: {privs}{same[0].rest}"
            source = "PostgreSQL's default" if same[0].builtin else "the default privileges of the baseline"
            out.append(Finding("SEC046", "new object with its default privileges", Severity.INFO, A01_ACCESS, text,
                               f"{text}: granted by {source} (not by a GRANT since the baseline)", accept))
        for same in groups.values():  # GRANT ALL ON t TO r: one finding naming every privilege
            first = same[0]
            privs = ", ".join(sorted(g.privilege for g in same))
            text = f"{first.text.split(':', 1)[0]}: {privs}{first.rest}" if first.privilege else first.text
            revoke = first.revoke.replace("@@PRIV@@", privs) if first.privilege else first.revoke
            public = first.grantee == "PUBLIC"
            out.append(Finding(rule_id, title, Severity.HIGH if public else Severity.MEDIUM, A01_ACCESS, text,
                               f"{text}: not in the grants baseline of {baseline.recorded_at}"
                               + (" (every role, present and future, holds it)" if public else ""),
                               f"{revoke} ({accept})", (revoke,)))
        for text in sorted(recorded - live.keys()):
            out.append(Finding("SEC045", f"{kind} gone since the baseline", Severity.INFO, A01_ACCESS, text,
                               f"{text}: recorded in the baseline, no longer granted", accept))
    return out


def baseline_summary(baseline: Baseline) -> str:
    return (f"{len(baseline.roles)} roles, {len(baseline.memberships)} memberships, {len(baseline.privileges)}"
            f" privileges, {len(baseline.default_privileges)} default privileges")

"""`harden --plan` tried on a scratch copy before it is shown: apply, re-audit, call the functions a step touches,
and compute and check each step's undo.

The copy is a clone of the target on its own server (:func:`dbops.profile.verify.scratch_copy`: a template copy, or
pg_dump/pg_restore through a private staging directory when the target is in use), dropped afterwards; only the
database dbops created is ever dropped. The target's per-database settings (``ALTER DATABASE ... SET search_path``,
``ALTER ROLE ... IN DATABASE``) are copied onto it, so a function resolves names on the copy as it does on the
target.

Everything runs in ONE transaction on the copy that is always rolled back, never committed: so a step that changes
what the whole server shares (roles, role attributes, memberships, the database's grants, renamed to the copy) is
tried too, and no other session ever sees it (it holds the row locks of what it changed for the few seconds of the
check: another ALTER ROLE of the same role waits). What cannot run in a transaction is not tried: ``ALTER SYSTEM``
(a setting a session may take is set with ``SET LOCAL`` instead, so the audit sees it; a reload or restart setting
is "not tried"), CREATE/DROP DATABASE and the like.

Each step, in plan order, in its own savepoint: the catalog before it (:func:`catalog_state`), the step, the catalog
after it; the functions it touches are called before and after it (rolled back) with sample arguments (1, '1', true,
now(), an enum's first label...) or NULLs, whichever works before: the functions it alters, and the SECURITY DEFINER
functions owned by a role whose attributes, memberships or grants it changes (or by its members; any non-superuser's
when it revokes from PUBLIC). A step that fails, or after which a call that worked fails, is rolled back and left out
("broken"). Its undo is computed from the two states (:func:`undo_statements`) and checked: applied after the step
(rolled back) the catalog digests equal those before the step; otherwise the undo is marked not computed, with what
differs. ALTER SYSTEM undo comes from postgresql.auto.conf (pg_file_settings). Then, with every step in place, the copy
is audited in the same transaction: a step is verified when its finding is gone and nothing it touched broke,
"unresolved" when the audit still reports it (offered, marked); and the whole undo, last step first, is checked to
bring the catalog back to the state before the plan.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import dbops.security.audit  # noqa: F401 - imports every rule module, so RULES holds them all
from dbops.errors import DbopsError
from dbops.pg.connect import connection, database_name, with_database
from dbops.profile.verify import scratch_copy
from dbops.redact import redact
from dbops.security.findings import AuditReport, Finding, Severity
from dbops.security.grants import BaselineStore, Grant, compare, take_snapshot
from dbops.security.harden import UNDO_CHECKED, UNDO_COMPUTED, UNDO_MISSING, HardeningPlan, PlanStep, StepCheck, Undo
from dbops.security.matrix import AccessMatrix, load_matrix
from dbops.security.rules import RULES, USER_SCHEMAS, AuditContext, parse_search_path, q

CALL_TIMEOUT = "10s"
ALTER_SYSTEM = re.compile(r"^\s*ALTER\s+SYSTEM\s+(?:SET\s+(?P<set>\"[^\"]+\"|[\w.]+)\s*(?:=|\s+TO\s)\s*(?P<value>.+?)"
                          r"|RESET\s+(?P<reset>\"[^\"]+\"|[\w.]+))\s*;?\s*$", re.IGNORECASE | re.DOTALL)
DATABASE_NAME = re.compile(r'(\bDATABASE\s+)("(?:[^"]|"")+"|[A-Za-z_][\w$]*)', re.IGNORECASE)
SESSION_CONTEXTS = ("user", "superuser")  # what SET LOCAL can take
# every entry ALTER SYSTEM wrote, also one pending a restart (its ``error`` says so): the last of a name counts
AUTO_CONF = "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY seqno"
LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"}


@dataclass
class Call:
    signature: str
    sql: str | None = None  # the call that worked before the plan (None: none did, or not callable)
    before_error: str | None = None
    after_error: str | None = None
    skipped: str | None = None  # why it cannot be called (a trigger function...)

    @property
    def broken(self) -> bool:
        return self.sql is not None and self.after_error is not None

    def describe(self) -> str:
        if self.skipped:
            return f"{self.signature} not called ({self.skipped})"
        if self.sql is None:
            return f"{self.signature} could not be called on the copy before the plan either ({self.before_error})"
        if self.after_error:
            return f"`{self.sql}` worked before the plan and fails after it: {self.after_error}"
        return f"`{self.sql}` works before and after"


@dataclass
class Verification:
    method: str  # template | pg_dump
    after: AuditReport
    calls: dict[str, Call] = field(default_factory=dict)
    new_findings: list[str] = field(default_factory=list)
    # the whole undo, applied on the copy after the plan: the catalogs that are not back as before (empty: all are)
    undo_differs: list[str] = field(default_factory=list)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


DATABASE_GRANTS = """
SELECT r.rolname, a.privilege_type, a.is_grantable
FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
     LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE d.datname = current_database() AND a.grantee <> d.datdba
"""


def copy_database_settings(target_url: str, scratch_url: str) -> int:
    """``ALTER DATABASE <target> SET ...``, ``ALTER ROLE r IN DATABASE <target> SET ...`` and the database's grants
    onto the scratch database (all per-database: the target is untouched). Returns how many settings were copied."""
    scratch = database_name(scratch_url)
    with connection(target_url) as conn:
        rows = conn.execute(
            "SELECT s.setrole = 0, r.rolname, s.setconfig FROM pg_db_role_setting s"
            " LEFT JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()
    with connection(target_url) as conn:  # a copy made from a template has the default database ACL
        grants = conn.execute(DATABASE_GRANTS).fetchall()
    copied = 0
    with connection(with_database(scratch_url, "postgres")) as conn:
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(scratch)))
        for grantee, privilege, grantable in grants:
            conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), sql.Identifier(scratch),
                sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else "")))
        for whole_database, role, config in rows:
            if not whole_database and role is None:
                continue  # a setting of a role that no longer exists
            for entry in config or []:
                name, value = entry.split("=", 1)
                items = parse_search_path(value) if name in LIST_SETTINGS else []
                rendered = (sql.SQL(", ").join(sql.Identifier(i) for i in items) if items  # "$user", lending
                            else sql.Literal("" if name in LIST_SETTINGS else value))
                where = (sql.SQL("ROLE {} IN DATABASE {}").format(sql.Identifier(role), sql.Identifier(scratch))
                         if not whole_database else sql.SQL("DATABASE {}").format(sql.Identifier(scratch)))
                conn.execute(sql.SQL("ALTER {} SET {} = {}").format(where, sql.Identifier(name), rendered))
                copied += 1
    return copied


ROUTINE = """
SELECT p.oid, format('%%I.%%I', n.nspname, p.proname), p.prokind, p.prorettype::regtype::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) = %(signature)s
"""
ARGUMENTS = """
SELECT format_type(a.t, NULL), coalesce(b.typcategory, t.typcategory), t.typtype,
       (SELECT format('%%L', e.enumlabel) FROM pg_enum e WHERE e.enumtypid = a.t ORDER BY e.enumsortorder LIMIT 1)
FROM pg_proc p, unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, ord) JOIN pg_type t ON t.oid = a.t
     LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
WHERE p.oid = %(oid)s ORDER BY a.ord
"""
SAMPLES = {"N": "1", "S": "'1'", "B": "true", "D": "now()", "T": "'1 day'", "A": "'{}'"}


def call_statements(conn: psycopg.Connection[Any], signature: str) -> tuple[list[str], str | None]:
    """The calls to try (sample arguments first, then NULLs), or a reason it cannot be called."""
    found = conn.execute(ROUTINE, {"signature": signature}).fetchone()
    if found is None:
        return [], "not found on the copy"
    oid, name, kind, returns = found
    if kind in ("a", "w"):
        return [], "an aggregate"
    if returns in ("trigger", "event_trigger"):
        return [], "a trigger function: it runs when its trigger fires"
    args = conn.execute(ARGUMENTS, {"oid": oid}).fetchall()
    if any(typtype == "p" for _, _, typtype, _ in args):
        return [], "polymorphic arguments"
    sample = ", ".join(f"({label or SAMPLES.get(category, 'NULL')})::{typ}" for typ, category, _, label in args)
    nulls = ", ".join(f"NULL::{typ}" for typ, _, _, _ in args)
    verb = "CALL" if kind == "p" else "SELECT"
    calls = [f"{verb} {name}({sample})"]
    if nulls != sample:
        calls.append(f"{verb} {name}({nulls})")
    return calls, None


def try_call(conn: psycopg.Connection[Any], statement: str) -> str | None:
    """Run ``statement`` in a transaction that is rolled back; its error's first line, or None."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(CALL_TIMEOUT)))
            cur = conn.execute(statement)
            if cur.description:
                cur.fetchmany(10)
    except psycopg.Error as exc:
        return _first_line(exc)
    return None


# ---- the catalog as the undo sees it ------------------------------------------------------------------------------
# Every catalog a fix may change, each as one digest: equal digests = the same state (two snapshots compare).
# ACLs are expanded (NULL = the built-in default) and sorted, so a REVOKE taken back by a GRANT compares equal.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
ACL = sql.SQL(
    "(SELECT coalesce(string_agg(e, ',' ORDER BY e), '') FROM (SELECT DISTINCT format('%s=%s%s', a.grantee,"
    " a.privilege_type, CASE WHEN a.is_grantable THEN '*' END) AS e FROM aclexplode(coalesce({column},"
    " acldefault({kind}, {owner}))) a) acl)")
DIGEST = sql.SQL("SELECT md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) FROM ({}) d(x)")
NOT_TEMP = sql.SQL("n.nspname !~ '^pg_(toast|temp_|toast_temp_)'")
SYSTEM = sql.SQL("n.nspname IN ('pg_catalog', 'information_schema')")
USER = sql.SQL("n.nspname NOT IN ('pg_catalog', 'information_schema')")


def _acl(column: str, kind: str, owner: str) -> sql.Composed:
    return ACL.format(column=sql.SQL(column), kind=sql.Literal(kind), owner=sql.SQL(owner))


def _digest(select: str, **parts: sql.Composable) -> sql.Composed:
    return DIGEST.format(sql.SQL(select).format(**parts))


FUNCTION_ROWS = (
    "SELECT concat_ws(' ', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),"
    " pg_get_userbyid(p.proowner), p.prosecdef, p.proleakproof, p.proconfig::text, md5(p.prosrc), {acl})"
    " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {not_temp} AND {which}")
RELATION_ROWS = (
    "SELECT concat_ws(' ', n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relrowsecurity,"
    " c.relforcerowsecurity, c.reloptions::text, CASE WHEN c.relkind = 'S' THEN {sequence_acl} ELSE {acl} END,"
    " (SELECT string_agg(concat(att.attname, ':', e.x), ',' ORDER BY att.attname, e.x)"
    "  FROM pg_attribute att, LATERAL (SELECT format('%s=%s%s', a.grantee, a.privilege_type,"
    "  CASE WHEN a.is_grantable THEN '*' END) FROM aclexplode(att.attacl) a) e(x)"
    "  WHERE att.attrelid = c.oid AND att.attacl IS NOT NULL))"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {not_temp} AND {which}")
_RELATION_PARTS = {"sequence_acl": _acl("c.relacl", "s", "c.relowner"), "acl": _acl("c.relacl", "r", "c.relowner"),
                   "not_temp": NOT_TEMP}
FINGERPRINT = {
    "functions": _digest(FUNCTION_ROWS, acl=_acl("p.proacl", "f", "p.proowner"), not_temp=NOT_TEMP, which=USER),
    "system functions": _digest(FUNCTION_ROWS, acl=_acl("p.proacl", "f", "p.proowner"), not_temp=NOT_TEMP,
                                which=SYSTEM),
    "relations": _digest(RELATION_ROWS, **_RELATION_PARTS, which=USER),
    "system relations": _digest(RELATION_ROWS, **_RELATION_PARTS, which=SYSTEM),
    "schemas": _digest("SELECT concat_ws(' ', n.nspname, pg_get_userbyid(n.nspowner), {acl}) FROM pg_namespace n"
                       " WHERE {not_temp}", acl=_acl("n.nspacl", "n", "n.nspowner"), not_temp=NOT_TEMP),
    "database": _digest("SELECT concat_ws(' ', pg_get_userbyid(d.datdba), {acl}) FROM pg_database d"
                        " WHERE d.datname = current_database()", acl=_acl("d.datacl", "d", "d.datdba")),
    "types": _digest("SELECT concat_ws(' ', t.oid::regtype::text, pg_get_userbyid(t.typowner), {acl}) FROM pg_type t"
                     " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {not_temp}",
                     acl=_acl("t.typacl", "T", "t.typowner"), not_temp=NOT_TEMP),
    "languages": _digest("SELECT concat_ws(' ', l.lanname, pg_get_userbyid(l.lanowner), {acl}) FROM pg_language l",
                         acl=_acl("l.lanacl", "l", "l.lanowner")),
    "foreign data": _digest(
        "SELECT concat_ws(' ', 'wrapper', w.fdwname, pg_get_userbyid(w.fdwowner), {fdw}) FROM pg_foreign_data_wrapper w"
        " UNION ALL SELECT concat_ws(' ', 'server', s.srvname, pg_get_userbyid(s.srvowner), {srv})"
        " FROM pg_foreign_server s", fdw=_acl("w.fdwacl", "F", "w.fdwowner"), srv=_acl("s.srvacl", "S", "s.srvowner")),
    "tablespaces": _digest("SELECT concat_ws(' ', t.spcname, pg_get_userbyid(t.spcowner), {acl}) FROM pg_tablespace t",
                           acl=_acl("t.spcacl", "t", "t.spcowner")),
    "parameters": _digest("SELECT concat_ws(' ', p.parname, {acl}) FROM pg_parameter_acl p",
                          acl=_acl("p.paracl", "p", "10")),
    "default privileges": _digest(
        "SELECT concat_ws(' ', pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace::text, d.defaclobjtype,"
        " (SELECT string_agg(e, ',' ORDER BY e) FROM (SELECT DISTINCT format('%s=%s%s', a.grantee, a.privilege_type,"
        " CASE WHEN a.is_grantable THEN '*' END) FROM aclexplode(d.defaclacl) a) acl(e))) FROM pg_default_acl d"),
    "roles": _digest("SELECT concat_ws(' ', rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,"
                     " rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil) FROM pg_roles"),
    "role settings": _digest(
        "SELECT concat_ws(' ', CASE s.setdatabase WHEN 0 THEN 'all' ELSE 'this' END, coalesce(r.rolname, 'all'),"
        " (SELECT string_agg(c, ',' ORDER BY c) FROM unnest(s.setconfig) c)) FROM pg_db_role_setting s"
        " LEFT JOIN pg_roles r ON r.oid = s.setrole"
        " WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))"),
    "memberships": _digest("SELECT concat_ws(' ', g.rolname, m.rolname,"
                           " (to_jsonb(am) - ARRAY['oid', 'grantor', 'roleid', 'member'])::text)"
                           " FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid"
                           " JOIN pg_roles m ON m.oid = am.member"),
    "triggers": _digest("SELECT concat_ws(' ', t.tgrelid::regclass::text, t.tgname, t.tgenabled,"
                        " pg_get_triggerdef(t.oid)) FROM pg_trigger t WHERE NOT t.tgisinternal"),
    "policies": _digest("SELECT concat_ws(' ', schemaname, tablename, policyname, permissive, roles::text, cmd, qual,"
                        " with_check) FROM pg_policies"),
    "extensions": _digest("SELECT concat_ws(' ', e.extname, e.extversion, e.extnamespace::regnamespace::text,"
                          " pg_get_userbyid(e.extowner)) FROM pg_extension e"),
    "user mappings": _digest("SELECT concat_ws(' ', s.srvname, coalesce(r.rolname, 'PUBLIC'), u.umoptions::text)"
                             " FROM pg_user_mapping u JOIN pg_foreign_server s ON s.oid = u.umserver"
                             " LEFT JOIN pg_roles r ON r.oid = u.umuser"),
    "large objects": _digest("SELECT concat_ws(' ', l.oid, pg_get_userbyid(l.lomowner), {acl})"
                             " FROM pg_largeobject_metadata l", acl=_acl("l.lomacl", "L", "l.lomowner")),
    "event triggers": _digest("SELECT concat_ws(' ', evtname, evtevent, evtenabled, pg_get_userbyid(evtowner),"
                              " evtfoid::regproc::text, evttags::text) FROM pg_event_trigger"),
}
PASSWORDS = _digest("SELECT concat_ws(' ', rolname, md5(coalesce(rolpassword, ''))) FROM pg_authid")


def fingerprint(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """One digest per catalog a fix may change (passwords too, when the role may read them)."""
    out = {name: conn.execute(query).fetchone()[0] for name, query in FINGERPRINT.items()}
    try:
        with conn.transaction():
            out["passwords"] = conn.execute(PASSWORDS).fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        pass
    return out


FUNCTIONS = """
SELECT format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), p.prokind,
       pg_get_userbyid(p.proowner), p.prosecdef, p.proleakproof, coalesce(p.proconfig, '{}'), md5(p.prosrc),
       CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END, coalesce(o.rolsuper, false)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace LEFT JOIN pg_roles o ON o.oid = p.proowner
WHERE n.nspname = ANY(%(schemas)s) AND NOT EXISTS (  -- an extension's own functions go with its version
      SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
"""
RELATIONS = """
SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind, pg_get_userbyid(c.relowner), c.relrowsecurity,
       c.relforcerowsecurity, coalesce(c.reloptions, '{}')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I') AND NOT EXISTS (
      SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
SCHEMAS = "SELECT format('%%I', nspname), pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = ANY(%(schemas)s)"
TRIGGERS = """
SELECT format('%%I.%%I', n.nspname, c.relname), format('%%I', t.tgname), t.tgenabled, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND n.nspname = ANY(%(schemas)s)
"""
POLICIES = """
SELECT format('%%I.%%I', schemaname, tablename), format('%%I', policyname), permissive, roles::text[], cmd, qual,
       with_check
FROM pg_policies WHERE schemaname = ANY(%(schemas)s)
"""
ROLE_STATE = """
SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls,
       rolconnlimit, rolvaliduntil::text FROM pg_roles WHERE rolname !~ '^pg_'
"""
ROLE_SETTINGS = """
SELECT s.setdatabase <> 0, r.rolname, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
  AND (s.setrole = 0 OR r.rolname IS NOT NULL)
"""
EXTENSIONS = "SELECT format('%I', extname), extversion FROM pg_extension"
# the grants on what grants.take_snapshot leaves out: (SQL keyword, object, grantee, privilege, grant option)
OTHER_ACL = """
SELECT o.keyword, o.name, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable
FROM (SELECT 'FOREIGN SERVER', format('%%I', srvname), srvacl, 'S', srvowner FROM pg_foreign_server
      UNION ALL SELECT 'FOREIGN DATA WRAPPER', format('%%I', fdwname), fdwacl, 'F', fdwowner
                FROM pg_foreign_data_wrapper
      UNION ALL SELECT 'LANGUAGE', format('%%I', lanname), lanacl, 'l', lanowner FROM pg_language
      UNION ALL SELECT 'TABLESPACE', format('%%I', spcname), spcacl, 't', spcowner FROM pg_tablespace
      UNION ALL SELECT 'PARAMETER', parname, paracl, 'p', 10 FROM pg_parameter_acl
      UNION ALL SELECT 'LARGE OBJECT', oid::text, lomacl, 'L', lomowner FROM pg_largeobject_metadata
      UNION ALL SELECT 'TYPE', format('%%I.%%I', n.nspname, t.typname), t.typacl, 'T', t.typowner
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = ANY(%(schemas)s) AND t.typrelid = 0 AND t.typcategory <> 'A')
     AS o(keyword, name, acl, kind, owner),
     aclexplode(coalesce(o.acl, acldefault(o.kind::"char", o.owner))) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE a.grantee <> o.owner
"""
ROLE_FLAGS = ("SUPERUSER", "INHERIT", "CREATEROLE", "CREATEDB", "LOGIN", "REPLICATION", "BYPASSRLS")
RELATION_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE",
                  "f": "FOREIGN TABLE", "i": "INDEX", "I": "INDEX"}
TRIGGER_STATES = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}
OPTION = re.compile(r" with (grant|admin) option$")


@dataclass(frozen=True)
class Function:
    kind: str
    owner: str
    definer: bool
    leakproof: bool
    config: tuple[str, ...]
    body: str
    definition: str | None
    owner_is_superuser: bool


@dataclass
class CatalogState:
    """What the undo compares and restores, by name: grants (as grants.take_snapshot sees them, each with its grant
    or admin option), role attributes, role and database settings, functions, relations, schemas, triggers,
    policies and extensions of ``schemas``; ``digests`` covers every catalog (see FINGERPRINT)."""

    digests: dict[str, str]
    grants: dict[str, tuple[Grant, bool]] = field(default_factory=dict)
    roles: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    role_settings: dict[tuple[bool, str | None], dict[str, str]] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    relations: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # kind, owner, rls, force, options
    schemas: dict[str, str] = field(default_factory=dict)
    triggers: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    policies: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)  # name -> version

    def changed(self, other: CatalogState) -> list[str]:
        """The catalogs (digest names) that differ between the two states."""
        return sorted(k for k in self.digests.keys() | other.digests.keys()
                      if self.digests.get(k) != other.digests.get(k))


def catalog_state(conn: psycopg.Connection[Any], schemas: Sequence[str], database: str) -> CatalogState:
    """The catalog of the connected database (``schemas`` in detail, every catalog as digests); the database's own
    grants and settings are named ``database`` (the target the copy stands for)."""
    state = CatalogState(fingerprint(conn))
    params = {"schemas": list(schemas)}
    for text, grant in take_snapshot(conn, schemas, database).grants.items():
        state.grants[OPTION.sub("", text)] = (grant, bool(OPTION.search(text)))
    for keyword, name, grantee, privilege, grantable in conn.execute(OTHER_ACL, params).fetchall():
        who = "PUBLIC" if grantee == "PUBLIC" else q(grantee)
        text = f"{grantee}: {privilege} on {keyword.lower()} {name}"
        state.grants[text] = (Grant("privilege", text, grantee, f"REVOKE @@PRIV@@ ON {keyword} {name} FROM {who};",
                                    privilege), grantable)
    state.roles = {row[0]: row[1:] for row in conn.execute(ROLE_STATE).fetchall()}
    for per_database, role, config in conn.execute(ROLE_SETTINGS).fetchall():
        state.role_settings[(per_database, role)] = dict(entry.split("=", 1) for entry in config or [])
    for signature, *rest in conn.execute(FUNCTIONS, params).fetchall():
        kind, owner, definer, leakproof, config, body, definition, superuser = rest
        state.functions[signature] = Function(kind, owner, definer, leakproof, tuple(config), body, definition,
                                              superuser)
    state.relations = {name: tuple(rest) for name, *rest in conn.execute(RELATIONS, params).fetchall()}
    state.schemas = dict(conn.execute(SCHEMAS, params).fetchall())
    state.triggers = {(t, n): (enabled, d) for t, n, enabled, d in conn.execute(TRIGGERS, params).fetchall()}
    state.policies = {(t, n): tuple(rest) for t, n, *rest in conn.execute(POLICIES, params).fetchall()}
    state.extensions = dict(conn.execute(EXTENSIONS).fetchall())
    return state


def _grant_sql(grant: Grant, option: bool) -> str:
    """The GRANT that gives ``grant`` back (the revoke text of grants.take_snapshot, turned around)."""
    if grant.kind == "membership":
        group, _, member = grant.revoke.removeprefix("REVOKE ").removesuffix(";").rpartition(" FROM ")
        return f"GRANT {group} TO {member}{' WITH ADMIN OPTION' if option else ''};"
    head, _, tail = grant.revoke.removesuffix(";").partition("REVOKE @@PRIV@@ ")
    on, _, grantee = tail.rpartition(" FROM ")
    return f"{head}GRANT {grant.privilege} {on} TO {grantee}{' WITH GRANT OPTION' if option else ''};"


def _revoke_sql(grant: Grant, option_only: bool = False) -> str:
    if grant.kind == "membership":
        return grant.revoke.replace("REVOKE ", "REVOKE ADMIN OPTION FOR ", 1) if option_only else grant.revoke
    what = f"GRANT OPTION FOR {grant.privilege}" if option_only else grant.privilege
    return grant.revoke.replace("@@PRIV@@", what)


def _value(name: str, value: str) -> str:
    items = parse_search_path(value) if name in LIST_SETTINGS else []
    rendered = (sql.SQL(", ").join(sql.Identifier(i) for i in items) if items
                else sql.Literal("" if name in LIST_SETTINGS else value))
    return rendered.as_string(None)


def _setting_undo(where: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    out = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            out.append(f"ALTER {where} RESET {q(name)};")
        elif before[name] != after.get(name):
            out.append(f"ALTER {where} SET {q(name)} = {_value(name, before[name])};")
    return out


def _policy_sql(table: str, name: str, policy: tuple[Any, ...]) -> str:
    permissive, roles, cmd, qual, check = policy
    to = ", ".join("PUBLIC" if r == "public" else q(r) for r in roles)
    return (f"CREATE POLICY {name} ON {table} AS {permissive} FOR {cmd} TO {to}"
            f"{f' USING ({qual})' if qual else ''}{f' WITH CHECK ({check})' if check else ''};")


def undo_statements(before: CatalogState, after: CatalogState, database: str) -> tuple[list[str], list[str]]:
    """The SQL that turns ``after`` back into ``before`` (what was dropped first, then attributes and settings, then
    grants, then what was created is dropped), and what it cannot restore."""
    recreate: list[str] = []
    alter: list[str] = []
    grants: list[str] = []
    drop: list[str] = []
    missing: list[str] = []
    # roles and their attributes
    for role in sorted(before.roles.keys() - after.roles.keys()):
        flags = " ".join(f if on else f"NO{f}" for f, on in zip(ROLE_FLAGS, before.roles[role], strict=False))
        recreate.append(f"CREATE ROLE {q(role)} {flags};")
        missing.append(f"role {role} was dropped: recreated without its password")
    for role in sorted(after.roles.keys() - before.roles.keys()):
        drop.append(f"DROP ROLE {q(role)};")
    for role in sorted(before.roles.keys() & after.roles.keys()):
        old, new = before.roles[role], after.roles[role]
        changes = [f if was else f"NO{f}" for f, was, now in zip(ROLE_FLAGS, old, new, strict=False) if was != now]
        if old[7] != new[7]:
            changes.append(f"CONNECTION LIMIT {int(old[7])}")
        if old[8] != new[8]:
            changes.append(f"VALID UNTIL {sql.Literal(old[8] or 'infinity').as_string(None)}")
        if changes:
            alter.append(f"ALTER ROLE {q(role)} {' '.join(changes)};")
    if before.digests.get("passwords") != after.digests.get("passwords"):
        missing.append("a password changed: the old one is a secret the undo does not write")
    # role and database settings (ALTER ROLE ... SET, ALTER DATABASE ... SET)
    for key in sorted(before.role_settings.keys() | after.role_settings.keys(), key=str):
        per_database, role = key
        target = "ROLE ALL" if role is None else f"ROLE {q(role)}"
        where = ("DATABASE " + q(database) if role is None else f"{target} IN DATABASE {q(database)}") \
            if per_database else target
        alter += _setting_undo(where, before.role_settings.get(key, {}), after.role_settings.get(key, {}))
    # functions
    for signature in sorted(before.functions.keys() | after.functions.keys()):
        old, new = before.functions.get(signature), after.functions.get(signature)
        if new is None or (old is not None and old.body != new.body):
            if old is not None and old.definition:
                recreate.append(old.definition.strip().rstrip(";") + ";")
            else:
                missing.append(f"function {signature} was dropped or rewritten")
            if new is None:
                continue
        if old is None:
            drop.append(f"DROP {'PROCEDURE' if new.kind == 'p' else 'FUNCTION'} {signature};")
            continue
        if new is None:
            continue
        word = {"p": "PROCEDURE", "a": "AGGREGATE"}.get(old.kind, "FUNCTION")
        if old.owner != new.owner:
            alter.append(f"ALTER {word} {signature} OWNER TO {q(old.owner)};")
        if old.definer != new.definer:
            alter.append(f"ALTER {word} {signature} SECURITY {'DEFINER' if old.definer else 'INVOKER'};")
        if old.leakproof != new.leakproof:
            alter.append(f"ALTER {word} {signature} {'LEAKPROOF' if old.leakproof else 'NOT LEAKPROOF'};")
        if old.config != new.config:
            alter += _setting_undo(f"{word} {signature}", dict(c.split("=", 1) for c in old.config),
                                   dict(c.split("=", 1) for c in new.config))
    # schemas, relations, row-level security
    for schema in sorted(after.schemas.keys() - before.schemas.keys()):
        drop.append(f"DROP SCHEMA {schema};")
    for schema in sorted(before.schemas.keys() - after.schemas.keys()):
        missing.append(f"schema {schema} was dropped")
    for schema in sorted(before.schemas.keys() & after.schemas.keys()):
        if before.schemas[schema] != after.schemas[schema]:
            alter.append(f"ALTER SCHEMA {schema} OWNER TO {q(before.schemas[schema])};")
    for name in sorted(before.relations.keys() - after.relations.keys()):
        missing.append(f"{RELATION_KINDS[before.relations[name][0]].lower()} {name} was dropped")
    for name in sorted(after.relations.keys() - before.relations.keys()):
        if after.relations[name][0] not in ("i", "I"):  # an index goes with its table
            drop.append(f"DROP {RELATION_KINDS[after.relations[name][0]]} IF EXISTS {name};")
        else:
            drop.insert(0, f"DROP INDEX IF EXISTS {name};")
    for name in sorted(before.relations.keys() & after.relations.keys()):
        (kind, owner, rls, force, options), (_, new_owner, new_rls, new_force, new_options) = (
            before.relations[name], after.relations[name])
        if options != new_options:  # ALTER VIEW v SET (security_invoker = true), a table's storage parameters
            old_opts = dict(o.split("=", 1) for o in options)
            new_opts = dict(o.split("=", 1) for o in new_options)
            if gone := sorted(new_opts.keys() - old_opts.keys()):
                alter.append(f"ALTER {RELATION_KINDS[kind]} {name} RESET ({', '.join(gone)});")
            if back := [f"{k} = {sql.Literal(v).as_string(None)}" for k, v in sorted(old_opts.items())
                        if new_opts.get(k) != v]:
                alter.append(f"ALTER {RELATION_KINDS[kind]} {name} SET ({', '.join(back)});")
        if owner != new_owner and kind not in ("i", "I"):
            alter.append(f"ALTER {RELATION_KINDS[kind]} {name} OWNER TO {q(owner)};")
        if rls != new_rls:
            alter.append(f"ALTER TABLE {name} {'ENABLE' if rls else 'DISABLE'} ROW LEVEL SECURITY;")
        if force != new_force:
            alter.append(f"ALTER TABLE {name} {'FORCE' if force else 'NO FORCE'} ROW LEVEL SECURITY;")
    # triggers and policies
    for key in sorted(before.triggers.keys() | after.triggers.keys()):
        (table, name), old, new = key, before.triggers.get(key), after.triggers.get(key)
        if old == new:
            continue
        if new is not None and (old is None or old[1] != new[1]):
            drop.insert(0, f"DROP TRIGGER {name} ON {table};")
        if old is not None and (new is None or old[1] != new[1]):
            recreate.append(old[1] + ";")
            if old[0] != "O":
                alter.append(f"ALTER TABLE {table} {TRIGGER_STATES[old[0]]} TRIGGER {name};")
        elif old is not None:
            alter.append(f"ALTER TABLE {table} {TRIGGER_STATES[old[0]]} TRIGGER {name};")
    for key in sorted(before.policies.keys() | after.policies.keys()):
        (table, name), old, new = key, before.policies.get(key), after.policies.get(key)
        if old == new:
            continue
        if new is not None:
            drop.insert(0, f"DROP POLICY {name} ON {table};")
        if old is not None:
            recreate.append(_policy_sql(table, name, old))
    for name in sorted(after.extensions.keys() - before.extensions.keys()):
        drop.append(f"DROP EXTENSION IF EXISTS {name};")
    for name in sorted(before.extensions.keys() - after.extensions.keys()):
        missing.append(f"extension {name} was dropped")
    for name in sorted(before.extensions.keys() & after.extensions.keys()):
        if before.extensions[name] != after.extensions[name]:  # works where the extension ships a way back
            recreate.append(f"ALTER EXTENSION {name} UPDATE TO {sql.Literal(before.extensions[name]).as_string(None)};")
    # grants: what the step revoked is granted again, what it granted is revoked
    for key in sorted(before.grants.keys() | after.grants.keys()):
        old, new = before.grants.get(key), after.grants.get(key)
        if old is None and new is not None:
            grants.insert(0, _revoke_sql(new[0]))
        elif old is not None and new is None:
            grants.append(_grant_sql(*old))
        elif old is not None and new is not None and old[1] != new[1]:
            grants.append(_grant_sql(*old) if old[1] else _revoke_sql(new[0], option_only=True))
    return [*recreate, *alter, *grants, *drop], missing


# ---- the audit inside the copy's transaction --------------------------------------------------------------------
def audit_in_transaction(conn: psycopg.Connection[Any], matrix: AccessMatrix | None, *, require_tls: bool | None,
                         schemas: Sequence[str], baseline: BaselineStore | None,
                         names: tuple[str, str] = ("", "")) -> AuditReport:
    """Every rule on ``conn`` as it is (uncommitted changes included), subjects redacted as the audit does; a
    finding naming the copy's database (``names``: the copy's name, the target's) names the target instead."""
    report = AuditReport(target="scratch copy")
    ctx = AuditContext(conn, matrix, require_tls, tuple(schemas)).load()
    report.schemas = list(ctx.schemas)
    found: list[Finding] = [f for rule in RULES for f in rule(ctx)]
    if matrix is None and baseline is not None and baseline.exists():
        found += compare(baseline.load(), take_snapshot(conn, ctx.schemas, baseline.as_database))
    copy, target = names

    def named(text: str) -> str:
        return redact(text.replace(copy, target) if copy else text)

    report.findings = [replace(f, subject=named(f.subject), evidence=named(f.evidence)) for f in found]
    return report


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


@dataclass
class Tried:
    step: PlanStep
    calls: list[Call]
    direct: set[str]  # signatures the step itself alters
    session: bool = False  # an ALTER SYSTEM tried as SET LOCAL


@dataclass
class Trial:
    """The plan's steps, one after the other, on the copy (inside its one rolled-back transaction)."""

    conn: psycopg.Connection[Any]
    target: str  # the target database's name (what the plan's statements say)
    scratch: str  # the copy's
    schemas: list[str]
    auto_conf: dict[str, str] | None  # postgresql.auto.conf as SQL values; None: not readable
    calls: dict[str, Call] = field(default_factory=dict)

    def state(self, system: bool = False) -> CatalogState:
        return catalog_state(self.conn, [*self.schemas, *SYSTEM_SCHEMAS] if system else self.schemas, self.target)

    def on_copy(self, statement: str) -> str:
        """The statement aimed at the copy: ``DATABASE <target>`` becomes ``DATABASE <copy>``."""
        return DATABASE_NAME.sub(lambda m: m.group(1) + q(self.scratch) if _unquote(m.group(2)) == self.target
                                 else m.group(0), statement)

    def execute(self, statements: Sequence[str]) -> None:
        for statement in statements:
            self.conn.execute(self.on_copy(statement))

    def affected(self, before: CatalogState, after: CatalogState) -> tuple[list[str], set[str]]:
        """The functions to call around a step: those it alters, and the definers of the roles it changes."""
        direct = {s for s in before.functions.keys() & after.functions.keys()
                  if before.functions[s] != after.functions[s]}
        roles = {r for r in before.roles.keys() & after.roles.keys() if before.roles[r] != after.roles[r]}
        for key, (grant, option) in before.grants.items():
            now = after.grants.get(key)
            if now is None or (option and not now[1]):
                roles.add(grant.grantee)
        named = sorted(roles - {"PUBLIC"})
        if named:
            roles |= {r for (r,) in self.conn.execute(
                "SELECT m.rolname FROM pg_roles m, unnest(%s::text[]) AS g(name)"
                " WHERE pg_has_role(m.oid, g.name, 'MEMBER')", (named,)).fetchall()}
        definers = {s for s, f in before.functions.items() if f.definer and s in after.functions and (
            f.owner in roles or ("PUBLIC" in roles and not f.owner_is_superuser))}
        return sorted(direct | definers), direct

    def call_before(self, signatures: Sequence[str]) -> list[Call]:
        out = []
        for signature in signatures:
            statements, skipped = call_statements(self.conn, signature)
            call = Call(signature, skipped=skipped)
            for statement in statements:
                error = try_call(self.conn, statement)
                if error is None:
                    call.sql, call.before_error = statement, None
                    break
                call.before_error = call.before_error or error
            out.append(call)
            self.calls[signature] = call
        return out

    def run(self, step: PlanStep) -> Tried | None:
        if not step.statements:
            step.check = StepCheck("not tried", "only a statement to review first (left commented out)")
            return None
        if any(s.lstrip().upper().startswith("ALTER SYSTEM") for s in step.statements):
            return self.run_settings(step)
        before = self.state()
        try:
            with self.conn.transaction():
                self.execute(step.statements)
                trial = self.state()
                raise psycopg.Rollback
        except psycopg.errors.ActiveSqlTransaction as exc:
            step.check = StepCheck("not tried", "cannot run inside a transaction, so not on the copy:"
                                   f" {_first_line(exc)}")
            step.undo = Undo((), UNDO_MISSING, "not computed: the step could not be tried on the copy")
            return None
        except psycopg.Error as exc:
            step.check = StepCheck("broken", f"fails on the copy: {_first_line(exc)}")
            return None
        system = any(name.startswith("system ") for name in before.changed(trial))
        if system:
            before = self.state(system=True)
        signatures, direct = self.affected(before, trial)
        calls = self.call_before(signatures)
        with self.conn.transaction():
            self.execute(step.statements)
            after = self.state(system)
            for call in calls:
                if call.sql is not None:
                    call.after_error = try_call(self.conn, call.sql)
            broken = [c for c in calls if c.broken]
            if broken:
                step.check = StepCheck("broken", "; ".join(c.describe() for c in broken))
                raise psycopg.Rollback
        if step.check is not None:
            return None
        step.undo = self.check_undo(before, after)
        return Tried(step, calls, direct)

    def check_undo(self, before: CatalogState, after: CatalogState) -> Undo:
        """The undo of one step (just applied), applied on the copy and rolled back: the catalog is as before."""
        statements, missing = undo_statements(before, after, self.target)
        changed = before.changed(after)
        if not changed:  # a fix that changes nothing the undo compares: never claim there is nothing to undo
            return Undo((), UNDO_MISSING, "the step changes nothing in the catalogs the undo compares, so what it"
                        " changes is not known here")
        try:
            with self.conn.transaction():
                self.execute(statements)
                back = fingerprint(self.conn)
                raise psycopg.Rollback
        except psycopg.Error as exc:
            return Undo(tuple(statements), UNDO_MISSING, f"the undo fails on the copy: {_first_line(exc)}")
        differs = [k for k in changed if back.get(k) != before.digests.get(k)]
        if differs:
            missing.append(f"after it, not as before: {', '.join(differs)}")
        if missing:
            return Undo(tuple(statements), UNDO_MISSING, "; ".join(missing))
        return Undo(tuple(statements), UNDO_CHECKED)

    def run_settings(self, step: PlanStep) -> Tried | None:
        parsed = [ALTER_SYSTEM.match(s) for s in step.statements]
        if not all(parsed):
            step.check = StepCheck("not tried", "mixes ALTER SYSTEM with other statements")
            step.undo = Undo((), UNDO_MISSING, "not an ALTER SYSTEM SET/RESET the undo can read")
            return None
        matches = [m for m in parsed if m is not None]
        step.undo = self.settings_undo(matches)
        sets = [(_unquote(m["set"]), m["value"].strip()) for m in matches if m["set"]]
        contexts = dict(self.conn.execute("SELECT name, context FROM pg_settings WHERE name = ANY(%s)",
                                          ([n for n, _ in sets],)).fetchall())
        late = [f"{n} is a {contexts.get(n, 'unknown')} setting" for n, _ in sets
                if contexts.get(n) not in SESSION_CONTEXTS]
        if len(sets) < len(matches) or late:
            why = "; ".join(late) or "ALTER SYSTEM RESET"
            step.check = StepCheck("not tried", f"ALTER SYSTEM cannot run on a copy, and a session cannot take it"
                                   f" ({why}); its undo comes from postgresql.auto.conf")
            return None
        try:
            with self.conn.transaction():
                for name, value in sets:
                    self.conn.execute(sql.SQL("SET LOCAL {} = ").format(sql.Identifier(name)) + sql.SQL(value))
        except psycopg.Error as exc:
            step.check = StepCheck("broken", f"fails on the copy: {_first_line(exc)}")
            return None
        return Tried(step, [], set(), session=True)

    def settings_undo(self, matches: Sequence[re.Match[str]]) -> Undo:
        if self.auto_conf is None:
            return Undo((), UNDO_MISSING, "postgresql.auto.conf is not readable by this role (pg_file_settings):"
                        " the values to restore are unknown")
        undo: list[str] = []
        for m in matches:
            names = [_unquote(m["set"] or m["reset"])]
            if m["reset"] and names == ["all"]:
                names = sorted(self.auto_conf)
            for name in names:
                old = self.auto_conf.get(name)
                undo.insert(0, f"ALTER SYSTEM SET {q(name)} = {old};" if old is not None
                            else f"ALTER SYSTEM RESET {q(name)};")
                if m["set"]:
                    self.auto_conf[name] = m["value"].strip()
                else:
                    self.auto_conf.pop(name, None)
        return Undo(tuple(undo), UNDO_COMPUTED, "from postgresql.auto.conf as it is (ALTER SYSTEM cannot run on a"
                    " copy)")


def read_auto_conf(conn: psycopg.Connection[Any]) -> dict[str, str] | None:
    """postgresql.auto.conf (what ALTER SYSTEM wrote) as SQL values, or None when the role may not read it."""
    try:
        with conn.transaction():
            rows = conn.execute(AUTO_CONF).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        return None
    return {name: _value(name, setting) for name, setting in rows}


def verify_plan(
    url: str,
    hardening: HardeningPlan,
    before: AuditReport,
    matrix: AccessMatrix | Path | None,
    *,
    schemas: Sequence[str] = (),
    baseline: BaselineStore | None = None,
    require_tls: bool | None = None,
    bin_dir: Path | None = None,
    staging_root: Path | None = None,
) -> Verification:
    """Try ``hardening`` on a scratch copy of the database at ``url``; sets each step's ``check`` and ``undo`` and
    the plan's notes, and returns what the copy said."""
    if matrix is not None and not isinstance(matrix, AccessMatrix):
        matrix = load_matrix(matrix)
    read_only = BaselineStore(baseline.path, baseline.target, read_only=True, as_database=database_name(url)) \
        if baseline is not None else None
    target = database_name(url)
    tried: list[Tried] = []
    with scratch_copy(url, bin_dir, staging_root) as (scratch, method):
        if database_name(scratch) == target or not database_name(scratch).startswith("dbops_scratch_"):
            raise DbopsError(f"the scratch copy {database_name(scratch)} is not a scratch database",
                             "report this: harden --plan never applies anything to the target")
        copy_database_settings(url, scratch)
        with connection(scratch) as conn, conn.transaction(force_rollback=True):  # never committed
            conn.execute("SET LOCAL statement_timeout = '60s'")
            user_schemas = [name for (name,) in conn.execute(USER_SCHEMAS).fetchall()]
            trial = Trial(conn, target, database_name(scratch), user_schemas, read_auto_conf(conn))
            start = fingerprint(conn)
            for step in hardening.steps:
                step.check, step.undo = None, None
                if (done := trial.run(step)) is not None:
                    tried.append(done)
            after = audit_in_transaction(conn, matrix, require_tls=require_tls, schemas=schemas, baseline=read_only,
                                         names=(database_name(scratch), target))
            undo_all = [s for t in reversed(tried) if not t.session and t.step.undo for s in t.step.undo.statements]
            try:
                with conn.transaction():
                    trial.execute(undo_all)
                    back = fingerprint(conn)
                    raise psycopg.Rollback
            except psycopg.Error as exc:
                undo_differs = [f"the undo fails: {_first_line(exc)}"]
            else:
                undo_differs = [k for k in start if back.get(k) != start[k]]
    still = {(f.rule, f.subject) for f in after.findings}
    for t in tried:
        session = " (set for the copy's session: SET LOCAL)" if t.session else ""
        undirect = [c for c in t.calls if c.signature in t.direct and c.sql is None]
        if (t.step.finding.rule, t.step.finding.subject) in still:
            t.step.check = StepCheck("unresolved", f"applied on the copy{session}, but the audit still reports it")
        elif undirect:
            t.step.check = StepCheck("unresolved", "finding gone on the copy, but "
                                     + "; ".join(c.describe() for c in undirect))
        else:
            done = "; ".join(c.describe() for c in t.calls)
            t.step.check = StepCheck("verified", f"finding gone after applying it{session}"
                                     + (f"; {done}" if done else ""))
    known = {(f.rule, f.subject) for f in before.findings}
    new = [f"{f.rule} {f.severity.value} {f.subject}: {f.title}" for f in after.sorted()
           if (f.rule, f.subject) not in known and f.severity is not Severity.INFO]
    counts = {status: sum(1 for s in hardening.steps if s.check and s.check.status == status)
              for status in ("verified", "broken", "unresolved", "not tried")}
    hardening.notes = [
        f"tried on a scratch copy ({method} clone, in one transaction rolled back, dropped afterwards):"
        f" {counts['verified']} steps verified, {counts['unresolved']} unresolved (offered, marked),"
        f" {counts['broken']} left out (broken), {counts['not tried']} not tried; {len(trial.calls)} functions called",
        "the undo of every step tried on the copy, applied after the plan, "
        + ("brings the catalog back as it was" if not undo_differs else
           f"does NOT bring back: {', '.join(undo_differs)}"),
        *(f"new after the plan on the copy: {line}" for line in new),
    ]
    return Verification(method, after, trial.calls, new, undo_differs)

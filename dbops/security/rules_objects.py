"""Objects: privileges on every object of every audited schema (public included), default privileges, RLS
coverage of tenant-keyed tables, SECURITY DEFINER hygiene, dangerous functions, database-level PUBLIC privileges."""

from __future__ import annotations

import re
from collections import defaultdict

from dbops.security.catalog import A01, A02, control
from dbops.security.findings import A01_ACCESS, A05_MISCONFIG, Finding, Severity
from dbops.security.rules import AuditContext, not_checked, parse_search_path, q, rule

# CIS PostgreSQL 17/18 Benchmark numbering: 4.3 administrative privileges, 4.5 function privileges (SECURITY
# DEFINER), 4.6 DML privileges, 4.7 row-level security.
control("SEC060", "no privilege on a table or sequence granted to PUBLIC", A01, cis="4.6")
control("SEC061", "tenant-keyed tables and partitions readable beyond their owner have row-level security", A01,
        cis="4.7")
control("SEC062", "row-level security policies of tenant-keyed tables filter by the tenant key", A01, cis="4.7")
control("SEC063", "no default privilege granted to PUBLIC", A01, cis="4.6")
control("SEC064", "default privileges go only to roles the matrix declares", A01, cis="4.6")
control("SEC065", "no SECURITY DEFINER search_path through a schema others can create in", A01, cis="4.5")
control("SEC066", "no SECURITY DEFINER function owned by a superuser", A01, cis="4.5")
control("SEC067", "SECURITY DEFINER functions are not executable by PUBLIC", A01, cis="4.5")
control("SEC068", "no file, program or server-control function executable beyond superusers", A01, cis="4.3")
control("SEC069", "no database privilege granted to PUBLIC", A01)
control("SEC070", "views over row-level secured tables do not run as a role that bypasses it", A01, cis="4.7")
control("SEC071", "foreign servers and user mappings do not hand credentials to everyone", A02)
control("SEC072", "large objects are not readable or writable by everyone", A01)
control("SEC073", "no USAGE granted to PUBLIC on an application schema", A01)

WRITE_PRIVILEGES = {"INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER"}
# column names that key a row to a tenant besides tenant_id (which SEC014 covers on whole tables)
TENANT_KEY = re.compile(r"^(tenant_id|tenant|tenantid|tenant_(key|uuid|code|ref|no)|org_id|organi[sz]ation_id)$")


def _grantee(oid: int, names: dict[int, str]) -> str:
    return "PUBLIC" if oid == 0 else names.get(oid, str(oid))


def _who(grantee: str) -> str:
    return "PUBLIC" if grantee == "PUBLIC" else q(grantee)


def _role_names(ctx: AuditContext) -> dict[int, str]:
    return dict(ctx.rows("SELECT oid, rolname FROM pg_roles"))


def _superusers(ctx: AuditContext) -> set[str]:
    return {name for (name,) in ctx.rows("SELECT rolname FROM pg_roles WHERE rolsuper")}


def _cross_tenant(ctx: AuditContext) -> set[str]:
    return set(ctx.matrix.cross_tenant) if ctx.matrix else set()


def _tenant_key(ctx: AuditContext) -> re.Pattern[str]:
    extra = getattr(ctx.matrix, "tenant_key", None) if ctx.matrix else None
    if extra:
        return re.compile(TENANT_KEY.pattern[:-2] + "|" + re.escape(str(extra)) + ")$")
    return TENANT_KEY


# ---- SEC060: PUBLIC privileges on tables, views, sequences --------------------------------------------------------
PUBLIC_RELATION_GRANTS = """
SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind, n.nspname, c.relispartition, NULL::name, a.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND a.grantee = 0
UNION ALL
SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind, n.nspname, c.relispartition, att.attname, a.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_attribute att ON att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped,
     aclexplode(att.attacl) a
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.grantee = 0
ORDER BY 1, 5 NULLS FIRST, 6
"""
RELKIND = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence"}


@rule
def public_relation_privileges(ctx: AuditContext) -> list[Finding]:
    governed = set(ctx.matrix.schemas) if ctx.matrix else set()
    found: dict[str, dict] = {}
    for name, kind, schema, partition, column, privilege in ctx.rows(PUBLIC_RELATION_GRANTS,
                                                                       {"schemas": ctx.schemas}):
        # SEC012 compares the matrix's schemas' tables, views and columns (partitions and sequences it leaves out)
        if schema in governed and kind != "S" and not partition:
            continue
        entry = found.setdefault(name, {"kind": kind, "table": set(), "columns": defaultdict(set)})
        if column is None:
            entry["table"].add(privilege)
        else:
            entry["columns"][privilege].add(column)
    out = []
    for name, entry in found.items():
        privileges = entry["table"] | set(entry["columns"])
        kind = RELKIND[entry["kind"]]
        if entry["kind"] == "S":
            severity = Severity.MEDIUM if "UPDATE" in privileges else Severity.LOW
            why = "anyone can setval() it" if "UPDATE" in privileges else "anyone can read or advance it"
        elif privileges & WRITE_PRIVILEGES:
            severity, why = Severity.HIGH, "every role can change its rows (or plant triggers that run as others)"
        else:
            severity, why = Severity.MEDIUM, "every role that can connect reads it"
        held = sorted(entry["table"])
        held += [f"{p} ({', '.join(sorted(cols))})" for p, cols in sorted(entry["columns"].items())
                 if p not in entry["table"]]
        target = "SEQUENCE" if entry["kind"] == "S" else "TABLE"
        fix = f"REVOKE ALL ON {target} {name} FROM PUBLIC;"
        out.append(Finding("SEC060", f"privileges on a {kind} granted to PUBLIC", severity, A01_ACCESS,
                           f"PUBLIC on {kind} {name}", f"PUBLIC holds {', '.join(held)} on {kind} {name}: {why}",
                           fix + " (then grant the roles that need it)", (fix,)))
    return out


# ---- SEC061 / SEC062: tenant-keyed tables ---------------------------------------------------------------------------
TENANT_KEYED = """
SELECT c.oid, format('%%I.%%I', n.nspname, c.relname), c.relispartition, c.relrowsecurity,
       pg_get_userbyid(c.relowner), att.attname,
       (SELECT format('%%I.%%I', rn.nspname, r.relname) FROM pg_partition_root(c.oid) AS root(oid)
        JOIN pg_class r ON r.oid = root.oid JOIN pg_namespace rn ON rn.oid = r.relnamespace)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_attribute att ON att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p') AND att.attname ~ %(key)s
ORDER BY 2, 6
"""
RELATION_READERS = """
SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %(oid)s AND a.grantee <> c.relowner
UNION
SELECT DISTINCT a.grantee FROM pg_class c JOIN pg_attribute att ON att.attrelid = c.oid, aclexplode(att.attacl) a
WHERE c.oid = %(oid)s AND a.grantee <> c.relowner
"""


def _tenant_tables(ctx: AuditContext) -> dict[int, dict]:
    key = _tenant_key(ctx)
    tables: dict[int, dict] = {}
    for oid, name, partition, rls, owner, column, root in ctx.rows(TENANT_KEYED, {"schemas": ctx.schemas,
                                                                                   "key": key.pattern}):
        if not key.match(column):
            continue
        entry = tables.setdefault(oid, {"name": name, "partition": partition, "rls": rls, "owner": owner,
                                        "keys": [], "root": root})
        entry["keys"].append(column)
    cross = _cross_tenant(ctx)
    return {oid: t for oid, t in tables.items()
            if t["name"].replace('"', "") not in cross and (t["root"] or "").replace('"', "") not in cross}


@rule
def tenant_keyed_without_rls(ctx: AuditContext) -> list[Finding]:
    names = _role_names(ctx)
    out = []
    for oid, table in _tenant_tables(ctx).items():
        if table["rls"] or ("tenant_id" in table["keys"] and not table["partition"]):
            continue  # RLS on: SEC062 judges its policies; a whole table with tenant_id is SEC014's
        readers = sorted(_grantee(g, names) for (g,) in ctx.rows(RELATION_READERS, {"oid": oid}))
        if not readers:
            continue
        name, keys = table["name"], ", ".join(table["keys"])
        if table["partition"]:
            fix = tuple(f"REVOKE ALL ON TABLE {name} FROM {_who(r)};" for r in readers)
            evidence = (f"{name} is a partition of {table['root']} (tenant key {keys}) without row-level security of"
                        f" its own and {', '.join(readers)} hold privileges on it: queried directly, the parent's"
                        " policies do not apply and every tenant's rows are read")
            remediation = " ".join(fix) + " (read it through the parent, whose policies apply)"
        else:
            fix = (f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;", f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")
            evidence = (f"{name} is keyed by {keys} but row-level security is off and {', '.join(readers)} hold"
                        " privileges on it: every tenant's rows are read")
            remediation = " ".join(fix) + f" (and a policy USING ({table['keys'][0]} = <the session's tenant>))"
        out.append(Finding("SEC061", "tenant-keyed table without row-level security", Severity.HIGH, A01_ACCESS,
                           name, evidence, remediation, fix))
    return out


POLICIES = """
SELECT p.polrelid, p.polname, p.polpermissive, pg_get_expr(p.polqual, p.polrelid),
       pg_get_expr(p.polwithcheck, p.polrelid),
       CASE WHEN 0 = ANY(p.polroles) THEN 'PUBLIC' ELSE
            (SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) FROM pg_roles r WHERE r.oid = ANY(p.polroles)) END,
       p.polcmd::text
FROM pg_policy p WHERE p.polrelid = ANY(%(tables)s) ORDER BY p.polrelid, p.polname
"""
# the tenant predicates the database's policies already use: `(tenant_id = ( SELECT app.current_tenant_id() ...))`
KEY_PREDICATES = """
SELECT DISTINCT pg_get_expr(p.polqual, p.polrelid) FROM pg_policy p WHERE p.polpermissive AND p.polqual IS NOT NULL
ORDER BY 1
"""


def _mentions(expression: str | None, columns: list[str]) -> bool:
    return bool(expression) and any(re.search(rf'(?<![\w"]){re.escape(c)}(?![\w"])|"{re.escape(c)}"', expression)
                                    for c in columns)


def _policy_fix(ctx: AuditContext, table: str, policy: str, command: str, key: str) -> tuple[str, ...]:
    """ALTER POLICY with the tenant predicate the database's other policies use on the same key, if exactly one."""
    # `key = <a call>`, nothing ORed or ANDed: the session's tenant as this database computes it
    simple = re.compile(rf"^\({re.escape(key)} = (?!.*\b(OR|AND)\b)(?=.*\w\().*\)$")
    predicates = [expr for (expr,) in ctx.rows(KEY_PREDICATES) if simple.match(expr)]
    if len(predicates) != 1:
        return ()
    predicate = predicates[0]
    using = f" USING {predicate}" if command != "a" else ""
    check = f" WITH CHECK {predicate}" if command in ("a", "w", "*") else ""
    return (f"ALTER POLICY {q(policy)} ON {table}{using}{check};",)


@rule
def tenant_policies_ignore_the_key(ctx: AuditContext) -> list[Finding]:
    tables = {oid: t for oid, t in _tenant_tables(ctx).items() if t["rls"]}
    if not tables:
        return []
    policies: dict[int, list[tuple]] = defaultdict(list)
    for relid, name, permissive, using, check, roles, command in ctx.rows(POLICIES, {"tables": list(tables)}):
        policies[relid].append((name, permissive, using, check, roles, command))
    out = []
    for oid, table in sorted(tables.items(), key=lambda item: item[1]["name"]):
        keys = table["keys"]
        if any(not permissive and (_mentions(using, keys) or _mentions(check, keys))
               for _, permissive, using, check, _, _ in policies[oid]):
            continue  # a restrictive policy filters by the key: permissive ones are ANDed with it
        for name, permissive, using, check, roles, command in policies[oid]:
            if not permissive or _mentions(using, keys) or _mentions(check, keys):
                continue
            shown = " ".join(part for part in (f"USING ({using})" if using else "",
                                                f"WITH CHECK ({check})" if check else "") if part)
            fix = _policy_fix(ctx, table["name"], name, command, keys[0])
            out.append(Finding(
                "SEC062", "row-level security policy ignores the tenant key", Severity.HIGH, A01_ACCESS,
                f"{table['name']}: policy {name}",
                f"policy {name} on {table['name']} (for {roles}) is permissive and its {shown} never compares"
                f" {', '.join(keys)}: the rows of every tenant pass it",
                " ".join(fix) + " (the tenant predicate the other policies use)" if fix else
                f"ALTER POLICY {q(name)} ON {table['name']} USING ({keys[0]} = <the session's tenant>), or add a"
                f" RESTRICTIVE policy on {keys[0]}", fix))
    return out


# ---- SEC063 / SEC064: default privileges ----------------------------------------------------------------------------
DEFAULT_ACL = """
SELECT pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype::text, a.grantee, a.privilege_type
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a
WHERE a.grantee <> d.defaclrole AND (d.defaclnamespace = 0 OR n.nspname = ANY(%(schemas)s))
ORDER BY 1, 2 NULLS FIRST, 3, 4, 5
"""
DEFAULT_KINDS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS",
                 "L": "LARGE OBJECTS"}


def _default_acl(ctx: AuditContext) -> dict[tuple[str, str | None, str, str], list[str]]:
    names = _role_names(ctx)
    grouped: dict[tuple[str, str | None, str, str], list[str]] = defaultdict(list)
    for role, schema, kind, grantee, privilege in ctx.rows(DEFAULT_ACL, {"schemas": ctx.schemas}):
        grouped[(role, schema, kind, _grantee(grantee, names))].append(privilege)
    return grouped


def _default_fix(role: str, schema: str | None, kind: str, grantee: str) -> str:
    where = f" IN SCHEMA {q(schema)}" if schema else ""
    return (f"ALTER DEFAULT PRIVILEGES FOR ROLE {q(role)}{where} REVOKE ALL ON {DEFAULT_KINDS[kind]}"
            f" FROM {_who(grantee)};")


def _default_subject(role: str, schema: str | None, kind: str, grantee: str) -> str:
    where = f" in schema {schema}" if schema else ""
    return f"default privileges of {role}{where} on {DEFAULT_KINDS[kind].lower()} to {grantee}"


@rule
def default_privileges_to_public(ctx: AuditContext) -> list[Finding]:
    out = []
    for (role, schema, kind, grantee), privileges in _default_acl(ctx).items():
        if grantee != "PUBLIC" or kind not in DEFAULT_KINDS:
            continue
        held = set(privileges)
        if kind in ("f", "T"):
            if schema is None:
                continue  # EXECUTE / USAGE for PUBLIC is PostgreSQL's own default, kept by a global entry
            severity = Severity.LOW
        elif kind == "r":
            severity = Severity.HIGH if held & WRITE_PRIVILEGES else Severity.MEDIUM
        elif kind == "n":
            severity = Severity.HIGH if "CREATE" in held else Severity.LOW
        elif kind == "L":
            severity = Severity.HIGH if "UPDATE" in held else Severity.MEDIUM
        else:
            severity = Severity.MEDIUM if "UPDATE" in held else Severity.LOW
        fix = _default_fix(role, schema, kind, grantee)
        where = f"in schema {schema}" if schema else "anywhere"
        out.append(Finding("SEC063", "default privileges grant to PUBLIC", severity, A01_ACCESS,
                           _default_subject(role, schema, kind, grantee),
                           f"every {DEFAULT_KINDS[kind].lower()[:-1]} {role} creates {where} gives PUBLIC"
                           f" {', '.join(sorted(held))}", fix, (fix,)))
    return out


@rule
def default_privileges_to_undeclared_roles(ctx: AuditContext) -> list[Finding]:
    if ctx.matrix is None:  # without a matrix the grants baseline reports new default privileges (SEC044)
        return []
    declared = set(ctx.matrix.roles)
    out = []
    for (role, schema, kind, grantee), privileges in _default_acl(ctx).items():
        if grantee == "PUBLIC" or grantee in declared or kind not in DEFAULT_KINDS:
            continue
        fix = _default_fix(role, schema, kind, grantee)
        where = f"in schema {schema}" if schema else "anywhere"
        out.append(Finding("SEC064", "default privileges grant to a role the matrix does not declare",
                           Severity.MEDIUM, A01_ACCESS, _default_subject(role, schema, kind, grantee),
                           f"every {DEFAULT_KINDS[kind].lower()[:-1]} {role} creates {where} gives {grantee}"
                           f" {', '.join(sorted(set(privileges)))}; {grantee} is not in the access-control matrix",
                           fix, (fix,)))
    return out


# ---- SEC065 - SEC067: SECURITY DEFINER hygiene ------------------------------------------------------------------
DEFINER_FUNCTIONS = """
SELECT p.oid, format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, o.rolname, o.rolsuper, o.rolbypassrls,
       (SELECT substr(c, 13) FROM unnest(coalesce(p.proconfig, '{}')) c WHERE c LIKE 'search\\_path=%%'),
       p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype),
       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles o ON o.oid = p.proowner
WHERE p.prosecdef AND n.nspname = ANY(%(schemas)s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
ORDER BY 2
"""
SCHEMA_CREATORS = """
SELECT n.nspname, a.grantee, CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                  WHEN a.grantee = 'pg_database_owner'::regrole THEN pg_get_userbyid(d.datdba)
                                  ELSE pg_get_userbyid(a.grantee) END,
       a.grantee = n.nspowner
FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a,
     pg_database d
WHERE d.datname = current_database() AND a.privilege_type = 'CREATE' AND n.nspname = ANY(%(schemas)s)
"""


def _definers(ctx: AuditContext) -> list[tuple]:
    return ctx.rows(DEFINER_FUNCTIONS, {"schemas": ctx.schemas})


@rule
def definer_search_path_writable(ctx: AuditContext) -> list[Finding]:
    definers = [d for d in _definers(ctx) if d[6] is not None]
    if not definers:
        return []
    superusers = _superusers(ctx)
    creators: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for schema, _oid, who, owns in ctx.rows(SCHEMA_CREATORS, {"schemas": ctx.user_schemas}):
        creators[schema].append((who, owns))
    out = []
    for _oid, signature, _kind, owner, _super, _bypass, setting, _trigger, _public in definers:
        writable: dict[str, list[tuple[str, bool]]] = {}
        for schema in parse_search_path(setting):
            if schema in ("$user", "pg_catalog", "pg_temp"):
                continue
            others = [(who, owns) for who, owns in creators.get(schema, []) if who != owner and who not in superusers]
            if others:
                writable[schema] = sorted(set(others))
        if not writable:
            continue
        fix = tuple(f"REVOKE CREATE ON SCHEMA {q(schema)} FROM {_who(who)};"
                    for schema, whos in writable.items() for who, owns in whos if not owns)
        owners = [f"{who} owns {schema}" for schema, whos in writable.items() for who, owns in whos if owns]
        detail = "; ".join(f"{schema}: {', '.join(who for who, _ in whos)} can CREATE" for schema, whos in
                           writable.items())
        remediation = " ".join(fix) or "qualify the names the body uses and drop those schemas from its search_path"
        if owners:
            remediation += f" ({', '.join(owners)}: give the schema to {owner} or drop it from the search_path)"
        out.append(Finding("SEC065", "SECURITY DEFINER search_path through a schema others can create in",
                           Severity.HIGH, A01_ACCESS, signature,
                           f"{signature} runs as {owner} with search_path = {setting}; {detail}: they can plant a"
                           f" function or table it resolves, which then runs with {owner}'s rights",
                           remediation, fix if not owners else ()))
    return out


@rule
def definer_owned_by_superuser(ctx: AuditContext) -> list[Finding]:
    owner_role = next(iter(sorted(ctx.matrix.owner_roles)), None) if ctx.matrix else None
    out = []
    for _oid, signature, kind, owner, superuser, _bypass, _setting, _trigger, _public in _definers(ctx):
        if not superuser:
            continue
        name, args = signature.split("(", 1)
        fix = f"ALTER {kind} {name}({args} OWNER TO {q(owner_role)};" if owner_role else ""
        out.append(Finding("SEC066", "SECURITY DEFINER function owned by a superuser", Severity.HIGH, A01_ACCESS,
                           signature, f"{signature} is SECURITY DEFINER and owned by superuser {owner}: whoever may"
                           " call it runs its body as a superuser (any flaw in it is a full takeover)",
                           fix or "give it to a role holding only the rights the function needs: ALTER"
                           f" {kind} {signature} OWNER TO <that role>", (fix,) if fix else ()))
    return out


CALLERS = """
SELECT string_agg(DISTINCT pg_get_userbyid(a.grantee), ', ')
FROM pg_proc p, aclexplode(p.proacl) a WHERE p.oid = %(oid)s AND a.grantee NOT IN (0, p.proowner)
"""


@rule
def definer_executable_by_public(ctx: AuditContext) -> list[Finding]:
    out = []
    for oid, signature, kind, owner, superuser, bypass, _setting, trigger, public in _definers(ctx):
        if not public or trigger:  # a trigger function cannot be called directly
            continue
        severity = Severity.HIGH if superuser or bypass else Severity.MEDIUM
        (callers,) = ctx.rows(CALLERS, {"oid": oid})[0]
        name, args = signature.split("(", 1)
        fix = f"REVOKE EXECUTE ON {kind} {name}({args} FROM PUBLIC;"
        rights = "a superuser's" if superuser else ("rights that bypass row-level security" if bypass else "its")
        out.append(Finding(
            "SEC067", "SECURITY DEFINER function executable by PUBLIC", severity, A01_ACCESS, signature,
            f"{signature} runs as {owner} ({rights}) and PUBLIC may EXECUTE it (PostgreSQL's default for a new"
            f" function); roles granted EXECUTE of their own: {callers or 'none'}",
            f"GRANT EXECUTE to the roles that call it, then {fix}", (fix,)))
    return out


# ---- SEC068: dangerous functions -----------------------------------------------------------------------------------
DANGEROUS = {
    "lo_export": (Severity.CRITICAL, "writes any file the server's OS user can (its configuration included)"),
    "pg_file_write": (Severity.CRITICAL, "writes any file the server's OS user can"),
    "pg_file_rename": (Severity.CRITICAL, "renames server files"),
    "pg_file_unlink": (Severity.CRITICAL, "deletes server files"),
    "lo_import": (Severity.HIGH, "reads any file the server can into a large object"),
    "pg_read_file": (Severity.HIGH, "reads any file the server can"),
    "pg_read_binary_file": (Severity.HIGH, "reads any file the server can"),
    "pg_ls_dir": (Severity.HIGH, "lists any directory of the server"),
    "pg_stat_file": (Severity.MEDIUM, "tells which server files exist, their size and times"),
    "dblink_connect_u": (Severity.HIGH, "connects as the server's OS user, with no password where peer/trust allow"),
    "dblink_u": (Severity.HIGH, "connects as the server's OS user"),
    "pg_promote": (Severity.HIGH, "promotes a standby"),
    "pg_terminate_backend": (Severity.MEDIUM, "terminates other sessions"),
    "pg_reload_conf": (Severity.MEDIUM, "reloads the server configuration"),
    "pg_backup_start": (Severity.MEDIUM, "starts a base backup"),
    "pg_start_backup": (Severity.MEDIUM, "starts a base backup"),
    "pg_backup_stop": (Severity.MEDIUM, "stops a base backup"),
    "pg_stop_backup": (Severity.MEDIUM, "stops a base backup"),
    "pg_rotate_logfile": (Severity.LOW, "rotates the server log"),
    "pg_switch_wal": (Severity.LOW, "forces a WAL switch"),
    "pg_create_restore_point": (Severity.LOW, "creates restore points"),
}
DANGEROUS_GRANTS = """
SELECT format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), p.proname,
       a.grantee, coalesce(r.rolsuper, false), coalesce(r.rolname, '')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
     LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE p.proname = ANY(%(names)s) AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
  -- what initdb or the extension's script granted (pg_init_privs) is by design: only later grants count
  AND NOT EXISTS (SELECT 1 FROM aclexplode(coalesce(
          (SELECT ip.initprivs FROM pg_init_privs ip WHERE ip.objoid = p.oid AND ip.classoid = 'pg_proc'::regclass
           AND ip.objsubid = 0), acldefault('f', p.proowner))) i
      WHERE i.grantee = a.grantee AND i.privilege_type = 'EXECUTE')
  AND (n.nspname = 'pg_catalog' OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                           AND d.objid = p.oid AND d.deptype = 'e'))
ORDER BY 1, 5
"""


@rule
def dangerous_functions(ctx: AuditContext) -> list[Finding]:
    out = []
    for signature, proname, grantee, superuser, rolname in ctx.rows(DANGEROUS_GRANTS, {"names": sorted(DANGEROUS)}):
        if superuser:
            continue
        who = "PUBLIC" if grantee == 0 else rolname
        severity, why = DANGEROUS[proname]
        fix = f"REVOKE EXECUTE ON FUNCTION {signature} FROM {_who(who)};"
        out.append(Finding("SEC068", f"{proname} executable beyond superusers", severity, A01_ACCESS,
                           f"{who}: EXECUTE on {signature}",
                           f"{'every role' if who == 'PUBLIC' else who} may EXECUTE {signature}, which {why}",
                           fix, (fix,)))
    return out


# ---- SEC069: the database -----------------------------------------------------------------------------------------
DATABASE_PUBLIC = """
SELECT d.datname, array_agg(a.privilege_type ORDER BY a.privilege_type), d.datacl IS NULL
FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
WHERE d.datname = current_database() AND a.grantee = 0 GROUP BY d.datname, d.datacl IS NULL
"""
# login roles that use this database (USAGE on one of its schemas beyond public) but hold no CONNECT of their own
NEED_CONNECT = """
SELECT r.rolname FROM pg_roles r
WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname !~ '^pg_'
  AND NOT EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a
                  WHERE d.datname = current_database() AND a.grantee = r.oid AND a.privilege_type = 'CONNECT')
  AND EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = ANY(%(schemas)s) AND n.nspname <> 'public'
              AND has_schema_privilege(r.oid, n.oid, 'USAGE'))
ORDER BY 1
"""


@rule
def database_public_privileges(ctx: AuditContext) -> list[Finding]:
    rows = ctx.rows(DATABASE_PUBLIC)
    if not rows:
        return []
    database, privileges, default = rows[0]
    severity = Severity.HIGH if "CREATE" in privileges else Severity.MEDIUM
    keep = [name for (name,) in ctx.rows(NEED_CONNECT, {"schemas": ctx.schemas})]
    revoke = f"REVOKE ALL ON DATABASE {q(database)} FROM PUBLIC;"
    origin = " (PostgreSQL's default for a new database)" if default else ""
    what = {"CONNECT": "connect", "TEMPORARY": "create temporary tables", "CREATE": "create schemas"}
    evidence = (f"PUBLIC holds {', '.join(privileges)} on database {database}{origin}: every role of the cluster may"
                f" {', '.join(what.get(p, p) for p in privileges)} there (pg_hba.conf is then the only gate)")
    if keep:  # a decision for the operator: which roles connect (the revoke alone would lock these out)
        grant = f"GRANT CONNECT ON DATABASE {q(database)} TO {', '.join(q(r) for r in keep)};"
        evidence += f"; {', '.join(keep)} use it and connect only through PUBLIC today"
        return [Finding("SEC069", "database privileges granted to PUBLIC", severity, A01_ACCESS,
                        "PUBLIC on the database", evidence, f"{grant} {revoke} (grant CONNECT to every role that"
                        " connects first)")]
    return [Finding("SEC069", "database privileges granted to PUBLIC", severity, A01_ACCESS, "PUBLIC on the database",
                    evidence, revoke, (revoke,))]


# ---- SEC070: views over RLS tables -------------------------------------------------------------------------------
RLS_VIEWS = """
SELECT DISTINCT v.oid, format('%%I.%%I', vn.nspname, v.relname), pg_get_userbyid(v.relowner),
       format('%%I.%%I', tn.nspname, t.relname),
       CASE WHEN o.rolsuper THEN 'is a superuser' WHEN o.rolbypassrls THEN 'has BYPASSRLS'
            ELSE 'owns the table, whose row-level security is not forced' END
FROM pg_class v JOIN pg_namespace vn ON vn.oid = v.relnamespace JOIN pg_roles o ON o.oid = v.relowner
     JOIN pg_rewrite rw ON rw.ev_class = v.oid
     JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> v.oid
     JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE v.relkind = 'v' AND vn.nspname = ANY(%(schemas)s) AND t.relrowsecurity
  AND NOT coalesce((SELECT lower(split_part(opt, '=', 2)) IN ('true', 'on', '1', 'yes')
                    FROM unnest(v.reloptions) opt WHERE opt LIKE 'security\\_invoker=%%'), false)
  AND (o.rolsuper OR o.rolbypassrls OR (t.relowner = v.relowner AND NOT t.relforcerowsecurity))
ORDER BY 2, 4
"""


@rule
def views_bypassing_rls(ctx: AuditContext) -> list[Finding]:
    names = _role_names(ctx)
    views: dict[int, dict] = {}
    for oid, view, owner, table, why in ctx.rows(RLS_VIEWS, {"schemas": ctx.schemas}):
        views.setdefault(oid, {"name": view, "owner": owner, "tables": [], "why": why})["tables"].append(table)
    out = []
    for oid, view in views.items():
        readers = sorted(_grantee(g, names) for (g,) in ctx.rows(RELATION_READERS, {"oid": oid}))
        if not readers:
            continue
        fix = f"ALTER VIEW {view['name']} SET (security_invoker = true);"
        out.append(Finding(
            "SEC070", "view over row-level secured tables runs as a role that bypasses it", Severity.HIGH,
            A01_ACCESS, view["name"],
            f"{view['name']} reads {', '.join(view['tables'])} (row-level security on) as its owner {view['owner']},"
            f" who {view['why']}; {', '.join(readers)} may read the view: every tenant's rows",
            fix + " (the readers then need privileges on the tables, and the policies apply to them)", (fix,)))
    return out


# ---- SEC071: foreign servers and user mappings ------------------------------------------------------------------
FOREIGN_SERVERS = """
SELECT s.srvname, w.fdwname, pg_get_userbyid(s.srvowner),
       EXISTS (SELECT 1 FROM aclexplode(s.srvacl) a WHERE a.grantee = 0 AND a.privilege_type = 'USAGE'),
       (SELECT string_agg(DISTINCT pg_get_userbyid(a.grantee), ', ') FROM aclexplode(s.srvacl) a
        WHERE a.grantee NOT IN (0, s.srvowner) AND a.privilege_type = 'USAGE')
FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw ORDER BY 1
"""
PUBLIC_MAPPINGS = """
SELECT s.srvname, m.umoptions FROM pg_user_mapping m JOIN pg_foreign_server s ON s.oid = m.umserver
WHERE m.umuser = 0 ORDER BY 1
"""


@rule
def foreign_servers(ctx: AuditContext) -> list[Finding]:
    servers = ctx.rows(FOREIGN_SERVERS)
    if not servers:
        return []
    out = []
    by_name = {name: (fdw, owner, public, users) for name, fdw, owner, public, users in servers}
    for name, (fdw, owner, public, _users) in by_name.items():
        if public:
            fix = f"REVOKE USAGE ON FOREIGN SERVER {q(name)} FROM PUBLIC;"
            out.append(Finding("SEC071", "foreign server usable by PUBLIC", Severity.MEDIUM, A05_MISCONFIG,
                               f"foreign server {name}",
                               f"PUBLIC holds USAGE on foreign server {name} ({fdw}, owner {owner}): every role may"
                               " create foreign tables and user mappings on it and reach the remote host from the"
                               " database server", fix + " (grant USAGE to the roles that need it)", (fix,)))
    if not ctx.is_superuser:
        return out + [not_checked("SEC071", "user mappings for PUBLIC", A05_MISCONFIG,
                                  "user mapping options (pg_user_mapping) are readable by superusers only")]
    for name, options in ctx.rows(PUBLIC_MAPPINGS):
        keys = sorted({option.split("=", 1)[0] for option in options or []})
        if "password" not in keys:
            continue
        fdw, owner, public, users = by_name.get(name, ("?", "?", False, None))
        usable = "every role" if public else (users or "no role but its owner")
        fix = f"ALTER USER MAPPING FOR PUBLIC SERVER {q(name)} OPTIONS (DROP password);"
        out.append(Finding("SEC071", "user mapping for PUBLIC holds a password", Severity.HIGH, A05_MISCONFIG,
                           f"user mapping for PUBLIC on server {name}",
                           f"the user mapping for PUBLIC on server {name} ({fdw}) stores a password (options:"
                           f" {', '.join(keys)}): {usable} connects with it, and the server owner {owner} reads it in"
                           " pg_user_mappings", fix + " (and create a mapping of its own for each role that needs one)",
                           (fix,)))
    return out


# ---- SEC072: large objects ------------------------------------------------------------------------------------------
LARGE_OBJECTS = """
SELECT m.oid::bigint, pg_get_userbyid(m.lomowner), array_agg(DISTINCT a.privilege_type ORDER BY a.privilege_type)
FROM pg_largeobject_metadata m, aclexplode(m.lomacl) a WHERE a.grantee = 0 GROUP BY 1, 2 ORDER BY 1
"""


@rule
def large_objects(ctx: AuditContext) -> list[Finding]:
    out = []
    source = ctx.rows("SELECT setting, source FROM pg_settings WHERE name = 'lo_compat_privileges'")
    if source and source[0][0] == "on":
        if source[0][1] == "database":
            database = ctx.rows("SELECT current_database()")[0][0]
            fix, outside = (f"ALTER DATABASE {q(database)} RESET lo_compat_privileges;",), False
        else:
            fix, outside = ("ALTER SYSTEM SET lo_compat_privileges = 'off';", "SELECT pg_reload_conf();"), True
        out.append(Finding("SEC072", "large object privileges are not checked", Severity.HIGH, A01_ACCESS,
                           "lo_compat_privileges", f"lo_compat_privileges = on (set in {source[0][1]}): every role"
                           " reads and writes every large object, whatever its grants", " ".join(fix), fix, outside))
    for oid, owner, privileges in ctx.rows(LARGE_OBJECTS):
        severity = Severity.HIGH if "UPDATE" in privileges else Severity.MEDIUM
        fix = f"REVOKE ALL ON LARGE OBJECT {oid} FROM PUBLIC;"
        out.append(Finding("SEC072", "large object granted to PUBLIC", severity, A01_ACCESS, f"large object {oid}",
                           f"PUBLIC holds {', '.join(privileges)} on large object {oid} (owner {owner}): large"
                           " objects have no row-level security", fix, (fix,)))
    return out


# ---- SEC073: schema USAGE to PUBLIC ---------------------------------------------------------------------------------
SCHEMA_USAGE = """
SELECT n.nspname FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE n.nspname = ANY(%(schemas)s) AND n.nspname <> 'public' AND a.grantee = 0 AND a.privilege_type = 'USAGE'
ORDER BY 1
"""


@rule
def schema_usage_to_public(ctx: AuditContext) -> list[Finding]:
    out = []
    for (name,) in ctx.rows(SCHEMA_USAGE, {"schemas": ctx.schemas}):
        fix = f"REVOKE USAGE ON SCHEMA {q(name)} FROM PUBLIC;"
        out.append(Finding("SEC073", "PUBLIC may use an application schema", Severity.LOW, A01_ACCESS,
                           f"schema {name}", f"USAGE on schema {name} is granted to PUBLIC: every role resolves its"
                           " objects, and any privilege given to PUBLIC on them (EXECUTE on functions, by default)"
                           " takes effect", fix + " (grant USAGE to the roles that need it)", (fix,)))
    return out

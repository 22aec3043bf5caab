"""Roles: attributes and memberships, followed transitively (who can become whom, and what that role can do).

Memberships are read from ``pg_auth_members`` and followed through every hop. Two relations matter:

* *can become* (``SET ROLE``): on PostgreSQL 16+ through grants with ``set_option``; on 15 through any membership
  (``rolinherit`` only decides inheritance there);
* *inherits* (the privileges apply without ``SET ROLE``): on 16+ through grants with ``inherit_option``; on 15
  through memberships whose member has ``rolinherit``.

Role attributes (SUPERUSER, CREATEROLE, BYPASSRLS, ...) are never inherited: they take effect after ``SET ROLE``.
Ownership is inherited (a role inheriting a table's owner is that owner for privilege checks, row-level security
included) and also taken by ``SET ROLE``.

"Application roles" are the login roles the access-control matrix grants privileges to, plus, with or without a
matrix, every non-superuser login role holding (itself or through a role it inherits) a privilege on an object of
the audited schemas: the roles clients connect as. A migrator, which only becomes the owner, is not one.

The matrix declares a role's attributes and predefined-role memberships by naming them in the role's ``purpose``
(``dbops_owner: {purpose: "...; BYPASSRLS; ..."}``, ``dbops_auditor: {purpose: "... (pg_read_all_stats) ..."}``).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dbops.security.catalog import A01, control
from dbops.security.findings import A01_ACCESS, Finding, Severity
from dbops.security.rules import AuditContext, q, rule

control("SEC050", "application roles cannot become the owner of application objects", A01, cis="4.7")
control("SEC051", "no CREATEROLE beyond the matrix", A01, cis="4.3")
control("SEC052", "no CREATEDB beyond the matrix", A01, cis="4.3")
control("SEC053", "no BYPASSRLS beyond the matrix", A01, cis="4.7")
control("SEC054", "REPLICATION only on a replication-only role", A01, cis="7.1")
control("SEC055", "no undeclared membership in a predefined role", A01, cis="4.9")
control("SEC056", "no login role can become a superuser", A01, cis="4.8")
control("SEC057", "no ADMIN OPTION on roles outside role management", A01, cis="4.3")
control("SEC058", "a login role cannot become another login role", A01)
control("SEC059", "application roles cannot become a role with administrative attributes", A01, cis="4.3")

ROLES = """
SELECT oid, rolname, rolsuper, rolcanlogin, rolinherit, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
FROM pg_roles
"""
MEMBERSHIPS_16 = """
SELECT am.roleid, am.member, am.grantor, am.admin_option, am.inherit_option, am.set_option FROM pg_auth_members am
"""
MEMBERSHIPS_15 = """
SELECT am.roleid, am.member, am.grantor, am.admin_option, m.rolinherit, true
FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member
"""
# every role named in an ACL entry of a table, view, sequence, function or schema of the audited schemas (not the
# object's owner, not PUBLIC): who clients are
GRANTEES = """
SELECT DISTINCT a.grantee FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
       aclexplode(c.relacl) a
WHERE n.nspname = ANY(%(schemas)s) AND c.relacl IS NOT NULL AND a.grantee NOT IN (0, c.relowner)
UNION
SELECT a.grantee FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(att.attacl) a
WHERE n.nspname = ANY(%(schemas)s) AND att.attacl IS NOT NULL AND a.grantee NOT IN (0, c.relowner)
UNION
SELECT a.grantee FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
WHERE n.nspname = ANY(%(schemas)s) AND p.proacl IS NOT NULL AND a.grantee NOT IN (0, p.proowner)
"""
# who owns the tables and views of the audited schemas (and how many, a few names for the evidence)
TABLE_OWNERS = """
SELECT c.relowner, count(*), (array_agg(format('%%I.%%I', n.nspname, c.relname) ORDER BY n.nspname, c.relname))[1:3]
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
GROUP BY c.relowner
"""
OWNS_SOMETHING = """
SELECT DISTINCT relowner FROM pg_class WHERE relnamespace <> 'pg_catalog'::regnamespace
UNION SELECT proowner FROM pg_proc WHERE pronamespace <> 'pg_catalog'::regnamespace
UNION SELECT nspowner FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema'
"""

ATTRIBUTES = ("CREATEROLE", "CREATEDB", "BYPASSRLS", "REPLICATION")
# predefined roles by what membership gives (the server file and program roles are SEC019's)
PREDEFINED: dict[str, tuple[Severity, str]] = {
    "pg_read_all_data": (Severity.HIGH, "reads every table, view and sequence of every database (USAGE on every"
                                        " schema, SELECT everywhere, column grants and matrix ignored)"),
    "pg_write_all_data": (Severity.HIGH, "writes every table of every database (INSERT, UPDATE, DELETE everywhere)"),
    "pg_signal_backend": (Severity.MEDIUM, "cancels and terminates other roles' sessions (the application's)"),
    "pg_signal_autovacuum_worker": (Severity.MEDIUM, "cancels and terminates autovacuum workers"),
    "pg_create_subscription": (Severity.MEDIUM, "creates subscriptions: the server connects out to any host"),
    "pg_maintain": (Severity.MEDIUM, "runs VACUUM, ANALYZE, CLUSTER, REINDEX, REFRESH and LOCK TABLE on every"
                                     " table (locks out the application)"),
    "pg_checkpoint": (Severity.LOW, "forces checkpoints (I/O storms on demand)"),
    "pg_use_reserved_connections": (Severity.LOW, "takes the connection slots reserved for administrators"),
    "pg_monitor": (Severity.LOW, "sees every session's query text (other tenants' literals), settings and"
                                 " statistics"),
    "pg_read_all_stats": (Severity.LOW, "sees every session's query text (other tenants' literals) and statistics"),
    "pg_read_all_settings": (Severity.LOW, "reads every setting, file paths and library lists included"),
    "pg_stat_scan_tables": (Severity.LOW, "runs monitoring functions that take ACCESS SHARE locks on any table"),
}
SEC019_ROLES = {"pg_execute_server_program", "pg_read_server_files", "pg_write_server_files"}
NOT_GRANTABLE = {"pg_database_owner"}


@dataclass(frozen=True)
class Role:
    oid: int
    name: str
    superuser: bool
    login: bool
    inherit: bool
    createrole: bool
    createdb: bool
    replication: bool
    bypassrls: bool

    @property
    def predefined(self) -> bool:
        return self.name.startswith("pg_")

    @property
    def attributes(self) -> list[str]:
        flags = (self.createrole, self.createdb, self.bypassrls, self.replication)
        return [name for name, on in zip(ATTRIBUTES, flags, strict=True) if on]


@dataclass(frozen=True)
class Grant:
    """One row of pg_auth_members: ``member`` is a member of ``role``."""

    role: str
    member: str
    grantor: str
    admin: bool
    inherit: bool
    set: bool


@dataclass
class RoleGraph:
    roles: dict[str, Role]
    grants: list[Grant]

    @classmethod
    def load(cls, ctx: AuditContext) -> RoleGraph:
        rows = ctx.rows(ROLES)
        roles = {r[1]: Role(*r) for r in rows}
        by_oid = {r[0]: r[1] for r in rows}
        version = int(ctx.settings.get("server_version_num", "0") or 0)
        grants = [
            Grant(by_oid[role], by_oid[member], by_oid.get(grantor, str(grantor)), admin, inherit, set_)
            for role, member, grantor, admin, inherit, set_ in ctx.rows(
                MEMBERSHIPS_16 if version >= 160000 else MEMBERSHIPS_15)
            if role in by_oid and member in by_oid
        ]
        return cls(roles, grants)

    def paths(self, start: str, follow: Callable[[Grant], bool]) -> dict[str, list[str]]:
        """Every role reachable from ``start`` through grants ``follow`` accepts, with the shortest chain
        (``[start, ..., role]``)."""
        out: dict[str, list[str]] = {start: [start]}
        todo = deque([start])
        while todo:
            current = todo.popleft()
            for grant in self.grants:
                if grant.member == current and follow(grant) and grant.role not in out:
                    out[grant.role] = [*out[current], grant.role]
                    todo.append(grant.role)
        del out[start]
        return out

    def becomes(self, start: str) -> dict[str, list[str]]:
        return self.paths(start, lambda g: g.set)

    def inherits(self, start: str) -> dict[str, list[str]]:
        return self.paths(start, lambda g: g.inherit)

    def first_hops(self, start: str, target: str, follow: Callable[[Grant], bool]) -> list[Grant]:
        """The grants of ``start`` through which it reaches ``target``: revoking them all cuts every such path."""
        return [g for g in self.grants if g.member == start and follow(g)
                and (g.role == target or target in self.paths(g.role, follow))]


def chain(path: list[str]) -> str:
    return " -> ".join(path)


def revoke(grant: Grant) -> str:
    return f"REVOKE {q(grant.role)} FROM {q(grant.member)} GRANTED BY {q(grant.grantor)};"


def declared(ctx: AuditContext, role: str, what: str) -> bool:
    """Whether the matrix declares ``what`` (an attribute or a predefined role) for ``role``, by naming it in the
    role's purpose."""
    if ctx.matrix is None or role not in ctx.matrix.roles:
        return False
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", ctx.matrix.roles[role].purpose)
    return what in words if what.startswith("pg_") else what in {w.upper() for w in words}


def application_roles(ctx: AuditContext, graph: RoleGraph) -> list[str]:
    grantees = {oid for (oid,) in ctx.rows(GRANTEES, {"schemas": ctx.schemas})}
    holders = {r.name for r in graph.roles.values() if r.oid in grantees}
    declared_apps = ctx.matrix.application_roles if ctx.matrix else set()
    out = []
    for role in graph.roles.values():
        if not role.login or role.superuser or role.oid == 10 or role.predefined:
            continue
        if role.name in declared_apps or role.name in holders or holders & set(graph.inherits(role.name)):
            out.append(role.name)
    return sorted(out)


def table_owners(ctx: AuditContext, graph: RoleGraph) -> dict[str, tuple[int, list[str]]]:
    by_oid = {r.oid: r.name for r in graph.roles.values()}
    return {by_oid[oid]: (count, names) for oid, count, names in ctx.rows(TABLE_OWNERS, {"schemas": ctx.schemas})
            if oid in by_oid}


def how(graph: RoleGraph, start: str, target: str) -> tuple[str, list[Grant]]:
    """How ``start`` gets ``target``'s rights: by SET ROLE and/or inheritance, with the chains and the grants to
    revoke (both ways cut)."""
    ways, hops = [], []
    become = graph.becomes(start).get(target)
    inherit = graph.inherits(start).get(target)
    if inherit:
        ways.append(f"inherits {target}'s rights without SET ROLE ({chain(inherit)})")
        hops += graph.first_hops(start, target, lambda g: g.inherit)
    if become and become != inherit:
        ways.append(f"can SET ROLE {target} ({chain(become)})")
    elif become:
        ways.append(f"can also SET ROLE {target}")
    if become:
        hops += [g for g in graph.first_hops(start, target, lambda g: g.set) if g not in hops]
    return " and ".join(ways), hops


# ---- who can become whom -------------------------------------------------------------------------------------
@rule
def escalation_paths(ctx: AuditContext) -> list[Finding]:
    """SEC050 (application role -> owner), SEC056 (login role -> superuser), SEC059 (application role -> a role with
    administrative attributes), SEC058 (login role -> another login role): one finding per (role, role reached)."""
    graph = RoleGraph.load(ctx)
    apps = set(application_roles(ctx, graph))
    owners = table_owners(ctx, graph)
    out = []
    for start in sorted(graph.roles):
        source = graph.roles[start]
        if not source.login or source.superuser or source.predefined:
            continue
        reached = sorted(set(graph.becomes(start)) | set(graph.inherits(start)))
        for target in reached:
            role = graph.roles[target]
            if role.predefined:
                continue  # SEC055 / SEC019
            ways, hops = how(graph, start, target)
            fixes = tuple(revoke(g) for g in hops)
            fix = " ".join(fixes) or f"REVOKE {q(target)} FROM {q(start)};"
            subject = f"{start} can become {target}"
            can_set = target in graph.becomes(start)
            if role.superuser:
                if not can_set:
                    continue  # superuser is an attribute: inheriting from a superuser gives nothing
                out.append(Finding(
                    "SEC056", "login role can become a superuser", Severity.CRITICAL, A01_ACCESS, subject,
                    f"{start} (LOGIN, not a superuser) {ways}; {target} is a SUPERUSER: after SET ROLE it can do"
                    " anything, run programs on the server included", fix + " (or make the target NOSUPERUSER)",
                    fixes))
            elif start in apps and target in owners:
                count, names = owners[target]
                rls = (f"; {target} has BYPASSRLS, so even FORCE ROW LEVEL SECURITY does not stop it" if role.bypassrls
                       else "; row-level security does not apply to a table's owner unless forced")
                out.append(Finding(
                    "SEC050", "application role can become the owner of application objects", Severity.CRITICAL,
                    A01_ACCESS, subject,
                    f"application role {start} {ways}; {target} owns {count} table(s)/view(s) of the audited schemas"
                    f" ({', '.join(names)}{', ...' if count > len(names) else ''}): it reads every tenant's rows,"
                    f" alters, disables row-level security on and drops them{rls}", fix, fixes))
            elif start in apps and can_set and role.attributes:
                attributes = ", ".join(role.attributes)
                out.append(Finding(
                    "SEC059", "application role can become a role with administrative attributes", Severity.HIGH,
                    A01_ACCESS, subject,
                    f"application role {start} {ways}; {target} has {attributes}, which take effect after SET ROLE",
                    fix, fixes))
            elif role.login:
                out.append(Finding(
                    "SEC058", "login role can become another login role", Severity.MEDIUM, A01_ACCESS, subject,
                    f"{start} {ways}, another login role: it acts with {target}'s privileges and the audit trail"
                    f" names {target}", fix, fixes))
    return out


# ---- attributes ----------------------------------------------------------------------------------------------
def replication_only(ctx: AuditContext, graph: RoleGraph, role: Role, owners: set[int], grantees: set[int]) -> str:
    """'' when ``role`` is a replication-only role (what CIS 7.1 asks for), else why it is not."""
    why = []
    if [a for a in role.attributes if a != "REPLICATION"]:
        why.append("also has " + ", ".join(a for a in role.attributes if a != "REPLICATION"))
    groups = sorted({g.role for g in graph.grants if g.member == role.name})
    if groups:
        why.append("is a member of " + ", ".join(groups))
    if role.oid in grantees:
        why.append("holds privileges on objects of the audited schemas")
    if role.oid in owners:
        why.append("owns objects of this database")
    if ctx.matrix is not None and role.name in ctx.matrix.roles:
        why.append(f"the matrix declares it for another job ({ctx.matrix.roles[role.name].purpose or 'no purpose'})")
    return "; ".join(why)


def graded(severity: Severity, usable: bool) -> Severity:
    """``severity`` for a role in use; one grade lower (never below low) for one nobody can use today."""
    return severity if usable else list(Severity)[min(severity.rank + 1, Severity.LOW.rank)]


@rule
def role_attributes(ctx: AuditContext) -> list[Finding]:
    """SEC051-SEC054: CREATEROLE, CREATEDB, BYPASSRLS, REPLICATION on a role other than a superuser (SEC001 says
    those) or the bootstrap role, unless the matrix declares it; CREATEDB and CREATEROLE of the matrix's application
    roles are SEC011's."""
    graph = RoleGraph.load(ctx)
    version = int(ctx.settings.get("server_version_num", "0") or 0)
    sec011 = ctx.matrix.application_roles if ctx.matrix else set()
    owners = {oid for (oid,) in ctx.rows(OWNS_SOMETHING)}
    grantees = {oid for (oid,) in ctx.rows(GRANTEES, {"schemas": ctx.schemas})}
    reach = login_reach(graph, inherited=False)  # attributes apply after SET ROLE only
    out = []
    for name in sorted(graph.roles):
        role = graph.roles[name]
        if role.superuser or role.oid == 10 or role.predefined:
            continue
        who = "it can log in" if role.login else "it cannot log in"
        others = sorted(reach.get(name, set()) - {name})
        if others:
            who += "; " + ", ".join(others) + " can SET ROLE to it"
        elif not role.login:
            who += " and no login role reaches it today"
        # a role nobody can log in as or SET ROLE to is one grant away from mattering: one grade lower
        usable = role.login or bool(others)
        for attribute in role.attributes:
            if declared(ctx, name, attribute):
                continue
            subject = f"{name}: {attribute}"
            fix = f"ALTER ROLE {q(name)} NO{attribute};"
            if attribute == "CREATEROLE" and name not in sec011:
                if version < 160000:
                    severity = Severity.CRITICAL
                    what = ("on PostgreSQL 15 and older it can grant itself any non-superuser role (the owner,"
                            " pg_read_all_data, pg_execute_server_program) and alter any non-superuser role's"
                            " password")
                else:
                    severity = Severity.HIGH
                    what = ("it creates roles and grants, alters and drops those it has ADMIN OPTION on (every role"
                            " it creates)")
                out.append(Finding("SEC051", "CREATEROLE beyond the matrix", graded(severity, usable), A01_ACCESS,
                                   subject,
                                   f"{name} has CREATEROLE ({who}): {what}", fix, (fix,)))
            elif attribute == "CREATEDB" and name not in sec011:
                out.append(Finding("SEC052", "CREATEDB beyond the matrix", graded(Severity.MEDIUM, usable),
                                   A01_ACCESS, subject,
                                   f"{name} has CREATEDB ({who}): it creates databases it owns (disk, connections,"
                                   " trusted extensions of its choosing)", fix, (fix,)))
            elif attribute == "BYPASSRLS":
                out.append(Finding("SEC053", "BYPASSRLS beyond the matrix", graded(Severity.HIGH, usable),
                                   A01_ACCESS, subject,
                                   f"{name} has BYPASSRLS ({who}): row-level security, forced or not, does not"
                                   " apply to it: it reads every tenant's rows of every table it may read", fix,
                                   (fix,)))
            elif attribute == "REPLICATION":
                why = replication_only(ctx, graph, role, owners, grantees)
                if not why and ctx.matrix is None:
                    continue  # a dedicated replication role: what CIS 7.1 asks for
                severity = Severity.HIGH if why else Severity.MEDIUM
                what = (f"it is not a replication-only role: {why}" if why else
                        "a replication-only role the matrix does not declare")
                out.append(Finding("SEC054", "REPLICATION outside a declared replication-only role",
                                   graded(severity, usable), A01_ACCESS, subject,
                                   f"{name} has REPLICATION ({who}): it streams the whole cluster (every database,"
                                   f" every tenant, pg_authid) and decodes every change; {what}",
                                   fix + " (replicate through a dedicated LOGIN REPLICATION role that holds nothing"
                                   " else)", (fix,)))
    return out


# ---- memberships -----------------------------------------------------------------------------------------------
def login_reach(graph: RoleGraph, *, inherited: bool = True) -> dict[str, set[str]]:
    """For each role, the non-superuser login roles that get its rights: are it, can SET ROLE to it or (with
    ``inherited``) inherit it."""
    out: dict[str, set[str]] = {}
    for name, role in graph.roles.items():
        if role.login and not role.superuser:
            for target in {name} | set(graph.becomes(name)) | (set(graph.inherits(name)) if inherited else set()):
                out.setdefault(target, set()).add(name)
    return out


@rule
def predefined_memberships(ctx: AuditContext) -> list[Finding]:
    """SEC055: a grant of a predefined role to a role (not another predefined role) the matrix does not declare,
    with the login roles that reach it through any chain of memberships."""
    graph = RoleGraph.load(ctx)
    reach = login_reach(graph)
    out = []
    seen: set[tuple[str, str]] = set()
    for grant in sorted(graph.grants, key=lambda g: (g.member, g.role)):
        member = graph.roles[grant.member]
        if not grant.role.startswith("pg_") or grant.role in SEC019_ROLES | NOT_GRANTABLE:
            continue
        if member.predefined or member.superuser or member.oid == 10 or (grant.member, grant.role) in seen:
            continue
        if not (grant.inherit or grant.set) or declared(ctx, grant.member, grant.role):
            continue
        seen.add((grant.member, grant.role))
        severity, what = PREDEFINED.get(grant.role, (Severity.LOW, "holds the rights of a predefined role"))
        reachers = sorted(reach.get(grant.member, ()))
        who = f"login roles that get it: {', '.join(reachers)}" if reachers else "no login role reaches it today"
        evidence = f"{grant.member} is a member of {grant.role}, which {what} ({who})"
        if ctx.matrix is not None:
            evidence += "; the matrix does not declare it"
        fixes = tuple(revoke(g) for g in graph.grants if g.member == grant.member and g.role == grant.role)
        out.append(Finding("SEC055", f"member of {grant.role}", severity, A01_ACCESS,
                           f"{grant.member} in {grant.role}", evidence,
                           " ".join(fixes) + (" (or declare it in the matrix: name the role in its purpose)"
                                              if ctx.matrix is not None else ""), fixes))
    return out


def _administered_weight(role: Role, owners: set[str]) -> str:
    if role.predefined:
        return "a predefined role"
    if role.name in owners:
        return "the owner of tables of the audited schemas"
    if role.attributes:
        return "a role with " + ", ".join(role.attributes)
    return ""


@rule
def admin_options(ctx: AuditContext) -> list[Finding]:
    """SEC057: ADMIN OPTION on a role held by a role that does not manage roles (CREATEROLE, reported by SEC051
    where undeclared): it grants that role to anyone, itself included."""
    graph = RoleGraph.load(ctx)
    owners = set(table_owners(ctx, graph))
    out = []
    for grant in sorted(graph.grants, key=lambda g: (g.member, g.role, g.grantor)):
        member = graph.roles[grant.member]
        if not grant.admin or member.superuser or member.oid == 10 or member.predefined or member.createrole:
            continue
        target = graph.roles[grant.role]
        weight = _administered_weight(target, owners)
        severity = Severity.HIGH if weight else Severity.MEDIUM
        fix = (f"REVOKE ADMIN OPTION FOR {q(grant.role)} FROM {q(grant.member)} GRANTED BY {q(grant.grantor)};")
        out.append(Finding("SEC057", "ADMIN OPTION on a role", severity, A01_ACCESS,
                           f"{grant.member}: ADMIN OPTION on {grant.role}",
                           f"{grant.member} holds ADMIN OPTION on {grant.role} (granted by {grant.grantor})"
                           f"{', ' + weight if weight else ''}: it grants {grant.role} to any role, itself included,"
                           " and revokes it from others", fix, (fix,)))
    return out


"""`harden --plan` tried on a scratch copy before it is shown: apply, re-audit, call every changed function.

The copy is a clone of the target on its own server (:func:`dbops.profile.verify.scratch_copy`: a template copy, or
pg_dump/pg_restore through a private staging directory when the target is in use), dropped afterwards; only the
database dbops created is ever dropped. The target's per-database settings (``ALTER DATABASE ... SET search_path``,
``ALTER ROLE ... IN DATABASE``) are copied onto it, so a function resolves names on the copy as it does on the
target.

Each step of the plan runs in its own savepoint on the copy. Steps that change the whole server (roles, role
memberships, the database object itself, ALTER SYSTEM) are never run: a copy on the same server would change the
real one, so they are "not verified". Every function a step alters is called before and after the plan, in a
transaction that is rolled back, with sample arguments (1, '1', true, now(), an enum's first label...) or NULLs,
whichever works before the plan; a call that worked before and fails after marks its step broken, with the error.
Then the copy is audited again: a step is verified when its finding is gone and nothing it touched broke.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dbops.errors import DbopsError
from dbops.pg.connect import connection, database_name, with_database
from dbops.profile.verify import scratch_copy
from dbops.security.audit import audit_database
from dbops.security.findings import AuditReport, Severity
from dbops.security.grants import BaselineStore
from dbops.security.harden import HardeningPlan, StepCheck
from dbops.security.matrix import AccessMatrix
from dbops.security.rules import parse_search_path

CALL_TIMEOUT = "10s"
SERVER_WIDE = re.compile(
    r"^\s*(ALTER\s+(ROLE|USER|GROUP|SYSTEM|DATABASE|TABLESPACE|SUBSCRIPTION)|(CREATE|DROP)\s+(ROLE|USER|GROUP|"
    r"DATABASE|TABLESPACE|SUBSCRIPTION)|SELECT\s+pg_reload_conf)\b", re.IGNORECASE)
MEMBERSHIP = re.compile(r"^\s*(GRANT|REVOKE)\s+(?!.*\sON\s)", re.IGNORECASE | re.DOTALL)
ALTERED_ROUTINE = re.compile(r"^\s*ALTER\s+(?:FUNCTION|PROCEDURE|ROUTINE)\s+(.+\))\s+(?:SET|RESET|OWNER|SECURITY)\b",
                             re.IGNORECASE | re.DOTALL)
LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"}


def server_wide(statement: str) -> bool:
    """True when the statement changes something every database of the server shares."""
    return bool(SERVER_WIDE.match(statement) or MEMBERSHIP.match(statement)
                or re.search(r"\sON\s+DATABASE\s", statement, re.IGNORECASE))


def altered_routines(statements: Sequence[str]) -> list[str]:
    """Signatures (``schema.f(args)``, as the audit prints them) of the functions these statements alter."""
    return [m.group(1) for s in statements if (m := ALTERED_ROUTINE.match(s))]


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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def copy_database_settings(target_url: str, scratch_url: str) -> int:
    """``ALTER DATABASE <target> SET ...`` and ``ALTER ROLE r IN DATABASE <target> SET ...`` onto the scratch
    database (both are per-database: the target is untouched). Returns how many settings were copied."""
    scratch = database_name(scratch_url)
    with connection(target_url) as conn:
        rows = conn.execute(
            "SELECT s.setrole = 0, r.rolname, s.setconfig FROM pg_db_role_setting s"
            " LEFT JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()
    copied = 0
    with connection(with_database(scratch_url, "postgres")) as conn:
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
    """Try ``hardening`` on a scratch copy of the database at ``url``; sets each step's ``check`` and the plan's
    notes, and returns what the copy said."""
    tried = [s for s in hardening.steps if s.statements and not any(server_wide(x) for x in s.statements)]
    for step in hardening.steps:
        if step not in tried:
            why = ("changes the whole server (roles, memberships, settings): a copy on the same server cannot try it"
                   if step.statements else "only a statement to review first (left commented out)")
            step.check = StepCheck("not tried", why)
    read_only = BaselineStore(baseline.path, baseline.target, read_only=True, as_database=database_name(url)) \
        if baseline is not None else None
    with scratch_copy(url, bin_dir, staging_root) as (scratch, method):
        if database_name(scratch) == database_name(url) or not database_name(scratch).startswith("dbops_scratch_"):
            raise DbopsError(f"the scratch copy {database_name(scratch)} is not a scratch database",
                             "report this: harden --plan never applies anything to the target")
        copy_database_settings(url, scratch)
        calls: dict[str, Call] = {}
        errors: dict[int, str] = {}
        with connection(scratch) as conn:
            for step in tried:
                for signature in altered_routines(step.statements):
                    if signature in calls:
                        continue
                    statements, skipped = call_statements(conn, signature)
                    call = calls[signature] = Call(signature, skipped=skipped)
                    for statement in statements:
                        error = try_call(conn, statement)
                        if error is None:
                            call.sql, call.before_error = statement, None
                            break
                        call.before_error = call.before_error or error
            with conn.transaction():
                for i, step in enumerate(tried):
                    try:
                        with conn.transaction():
                            for statement in step.statements:
                                conn.execute(statement)
                    except psycopg.Error as exc:
                        errors[i] = _first_line(exc)
            for call in calls.values():
                if call.sql is not None:
                    call.after_error = try_call(conn, call.sql)
        after = audit_database(scratch, matrix, require_tls=require_tls, check_backups=False, schemas=schemas,
                               baseline=read_only)
    still = {(f.rule, f.subject) for f in after.findings}
    for i, step in enumerate(tried):
        mine = [calls[s] for s in altered_routines(step.statements) if s in calls]
        broken = [c for c in mine if c.broken]
        if i in errors:
            step.check = StepCheck("broken", f"fails on the copy: {errors[i]}")
        elif broken:
            step.check = StepCheck("broken", "; ".join(c.describe() for c in broken))
        elif (step.finding.rule, step.finding.subject) in still:
            step.check = StepCheck("unresolved", "applied on the copy, but the audit still reports it")
        elif any(c.sql is None for c in mine):
            step.check = StepCheck("unresolved", "finding gone on the copy, but "
                                   + "; ".join(c.describe() for c in mine if c.sql is None))
        else:
            done = "; ".join(c.describe() for c in mine)
            step.check = StepCheck("verified", "finding gone after applying it" + (f"; {done}" if done else ""))
    known = {(f.rule, f.subject) for f in before.findings}
    new = [f"{f.rule} {f.severity.value} {f.subject}: {f.title}" for f in after.sorted()
           if (f.rule, f.subject) not in known and f.severity is not Severity.INFO]
    counts = {status: sum(1 for s in hardening.steps if s.check and s.check.status == status)
              for status in ("verified", "broken", "unresolved", "not tried")}
    hardening.notes = [
        f"tried on a scratch copy ({method} clone, dropped afterwards): {counts['verified']} steps verified,"
        f" {counts['broken']} broken (left out), {counts['unresolved']} not resolved, {counts['not tried']} not tried"
        f" (server-wide or review-first); {len(calls)} changed functions called",
        *(f"new after the plan on the copy: {line}" for line in new),
    ]
    return Verification(method, after, calls, new)

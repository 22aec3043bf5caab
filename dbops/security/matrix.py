"""The declared access-control matrix (``sql/access-control.yml``): what the audit compares the live grants with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbops.errors import DbopsError
from dbops.settings import checkout_dir

TABLE_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
FUNCTION_PRIVILEGES = {"EXECUTE"}


def default_matrix() -> Path:
    """``sql/access-control.yml`` of the checkout; callers pass the target's ``access_control``."""
    return checkout_dir() / "sql" / "access-control.yml"


class MatrixError(DbopsError):
    """The access-control file is missing or malformed."""


@dataclass(frozen=True)
class Role:
    name: str
    login: bool
    purpose: str = ""


@dataclass
class AccessMatrix:
    roles: dict[str, Role]
    # (role, object, privilege); a column grant's object is "schema.table(column)", a function's "schema.f(args)"
    grants: set[tuple[str, str, str]]
    sensitive: dict[str, list[str]]
    # the schemas whose objects the matrix governs (from the objects it names)
    schemas: set[str] = field(default_factory=set)
    # tables with a tenant_id column that are cross-tenant by design (the audit trail): no RLS expected
    cross_tenant: set[str] = field(default_factory=set)
    # functions whose triggers count as the audit trail of a sensitive table
    audit_functions: set[str] = field(default_factory=set)

    @property
    def owner_roles(self) -> set[str]:
        """Roles that own objects by design: declared NOLOGIN (the owner) — they never connect."""
        return {r.name for r in self.roles.values() if not r.login}

    @property
    def application_roles(self) -> set[str]:
        """Login roles the matrix grants privileges to: they must own nothing and hold no DDL rights."""
        granted = {g[0] for g in self.grants}
        return {r.name for r in self.roles.values() if r.login and r.name in granted}


def _fail(path: Path, what: str) -> MatrixError:
    return MatrixError(f"{path}: {what}", "fix the access-control file (see docs/access-control.md)")


def load_matrix(path: Path) -> AccessMatrix:
    """Read and validate the matrix; every mistake is reported with the entry it is in."""
    try:
        doc: Any = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise MatrixError(f"no access-control file at {path}",
                          "create it or pass --matrix (default sql/access-control.yml)") from exc
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("roles"), dict):
        raise _fail(path, "expected a mapping with 'roles', 'grants' and 'sensitive'")
    roles = {}
    for name, spec in doc["roles"].items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise _fail(path, f"role {name}: expected a mapping like {{login: true}}")
        roles[str(name)] = Role(str(name), bool(spec.get("login", False)), str(spec.get("purpose", "")))
    grants: set[tuple[str, str, str]] = set()
    schemas: set[str] = set()
    for i, entry in enumerate(doc.get("grants") or [], 1):
        if not isinstance(entry, dict) or not {"role", "object", "privileges"} <= entry.keys():
            raise _fail(path, f"grant #{i}: needs role, object and privileges")
        role, obj = str(entry["role"]), str(entry["object"])
        if role not in roles:
            raise _fail(path, f"grant #{i}: role {role} is not declared under roles")
        if "." not in obj:
            raise _fail(path, f"grant #{i}: object {obj} must be schema-qualified")
        schemas.add(obj.split(".", 1)[0])
        privileges = {str(p).upper() for p in entry["privileges"]}
        allowed = FUNCTION_PRIVILEGES if obj.endswith(")") else TABLE_PRIVILEGES
        if not privileges <= allowed:
            raise _fail(path, f"grant #{i}: unknown privilege(s) {sorted(privileges - allowed)} on {obj}")
        columns = entry.get("columns")
        targets = [f"{obj}({c})" for c in columns] if columns else [obj]
        grants |= {(role, t, p) for t in targets for p in privileges}
    sensitive: dict[str, list[str]] = {}
    for i, entry in enumerate(doc.get("sensitive") or [], 1):
        if not isinstance(entry, dict) or "table" not in entry:
            raise _fail(path, f"sensitive #{i}: needs table (and columns)")
        sensitive[str(entry["table"])] = [str(c) for c in entry.get("columns") or []]
        schemas.add(str(entry["table"]).split(".", 1)[0])
    cross_tenant = {str(t) for t in doc.get("cross_tenant") or [f"{s}.audit_log" for s in schemas]}
    audit_functions = {str(t) for t in doc.get("audit_functions") or [f"{s}.audit_row" for s in schemas]}
    return AccessMatrix(roles, grants, sensitive, schemas, cross_tenant, audit_functions)

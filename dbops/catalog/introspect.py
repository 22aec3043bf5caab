"""A JSON snapshot of a database's schema, read from pg_catalog.

The snapshot is plain data (dicts, lists, strings) so it can be stored as an asset value, compared with an older
snapshot, and rendered as documentation. Everything that identifies an object is a qualified name
(``schema.table``); anything that varies between two databases built from the same migrations (OIDs, relfilenodes,
sizes, row counts) is kept apart under ``stats`` so a drift comparison can ignore it.
"""

from __future__ import annotations

from typing import Any

import psycopg

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
# Bookkeeping tables that belong to dbops itself, not to the application schema.
IGNORED_TABLES = ("public.flyway_schema_history",)

_RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}

_SCHEMA_FILTER = """
    n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'
    AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
"""

RELATIONS_SQL = """
SELECT n.nspname, c.relname, c.relkind::text, obj_description(c.oid, 'pg_class'),
       c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner),
       c.reltuples::bigint, pg_total_relation_size(c.oid),
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       (SELECT pn.nspname || '.' || p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
          JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid LIMIT 1),
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END,
       c.relacl::text[]
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND @SCHEMA_FILTER@
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 1, 2
"""

COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text, col_description(c.oid, a.attnum)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND @SCHEMA_FILTER@
ORDER BY 1, 2, 3
"""

CONSTRAINTS_SQL = """
SELECT n.nspname, c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid, true),
       CASE WHEN k.contype = 'f' THEN fn.nspname || '.' || f.relname END,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.ord)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class f ON f.oid = k.confrelid LEFT JOIN pg_namespace fn ON fn.oid = f.relnamespace
WHERE k.conparentid = 0 AND k.contype <> 'n' AND @SCHEMA_FILTER@
ORDER BY 1, 2, 3
"""

INDEXES_SQL = """
SELECT n.nspname, c.relname, i.relname, pg_get_indexdef(x.indexrelid), x.indisunique, x.indisprimary,
       x.indisvalid, pg_relation_size(x.indexrelid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition AND @SCHEMA_FILTER@
ORDER BY 1, 2, 3
"""

FUNCTIONS_SQL = """
SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid),
       l.lanname, p.prosecdef, p.provolatile::text, md5(p.prosrc), p.proconfig, obj_description(p.oid, 'pg_proc'),
       p.proacl::text[], p.prokind::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
LEFT JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
WHERE d.objid IS NULL AND @SCHEMA_FILTER@
ORDER BY 1, 2, 3
"""

TRIGGERS_SQL = """
SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid, true), t.tgenabled::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND @SCHEMA_FILTER@
ORDER BY 1, 2, 3
"""

POLICIES_SQL = """
SELECT n.nspname, c.relname, p.polname, p.polcmd::text, p.polpermissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r ORDER BY 1),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE @SCHEMA_FILTER@
ORDER BY 1, 2, 3
"""

SCHEMAS_SQL = """
SELECT n.nspname, pg_get_userbyid(n.nspowner), n.nspacl::text[], obj_description(n.oid, 'pg_namespace')
FROM pg_namespace n
LEFT JOIN pg_depend d ON d.objid = n.oid AND d.deptype = 'e'
WHERE d.objid IS NULL AND @SCHEMA_FILTER@
ORDER BY 1
"""


def _filtered(query: str) -> str:
    """Constant catalog queries share one schema filter (a parameter, never interpolated user input)."""
    return query.replace("@SCHEMA_FILTER@", _SCHEMA_FILTER)


EXTENSIONS_SQL = "SELECT extname, extversion FROM pg_extension ORDER BY 1"

_CONSTRAINT_KINDS = {"p": "primary key", "f": "foreign key", "u": "unique", "c": "check", "x": "exclusion",
                     "n": "not null", "t": "trigger"}
_FUNCTION_KINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}
_VOLATILITY = {"i": "immutable", "s": "stable", "v": "volatile"}


def snapshot(conn: psycopg.Connection[Any], schemas: list[str] | None = None) -> dict[str, Any]:
    """Read every user object of the database (optionally only ``schemas``) into a JSON-ready dict."""
    params = {"schemas": schemas}
    tables: dict[str, dict[str, Any]] = {}
    views: dict[str, dict[str, Any]] = {}
    partitions: dict[str, dict[str, dict[str, Any]]] = {}
    for (schema, name, kind, comment, rls, force_rls, owner, reltuples, size, partkey, parent, bound, viewdef,
         acl) in conn.execute(_filtered(RELATIONS_SQL), params):
        qualified = f"{schema}.{name}"
        if qualified in IGNORED_TABLES:
            continue
        if bound is not None and parent:
            # Partitions come and go with time (a daily job adds them); they are listed under their parent.
            partitions.setdefault(parent, {})[qualified] = {
                "bound": bound, "estimated_rows": max(int(reltuples or 0), 0), "total_bytes": int(size or 0),
            }
            continue
        entry: dict[str, Any] = {
            "schema": schema, "name": name, "kind": _RELKINDS[kind], "comment": comment, "owner": owner,
            "grants": sorted(acl or []), "columns": [],
            "stats": {"estimated_rows": max(int(reltuples), 0) if reltuples is not None else None,
                      "total_bytes": int(size or 0)},
        }
        if kind in ("v", "m"):
            entry["definition"] = (viewdef or "").strip()
            views[qualified] = entry
            if kind == "m":
                entry["indexes"] = {}
            continue
        entry.update(
            row_security=bool(rls), force_row_security=bool(force_rls), partition_key=partkey,
            constraints={}, indexes={}, triggers={}, policies={},
        )
        tables[qualified] = entry
    for parent, children in partitions.items():
        if parent in tables:
            tables[parent]["partitions"] = dict(sorted(children.items()))

    every = {**tables, **views}
    for schema, table, _num, name, type_, notnull, default, identity, generated, comment in conn.execute(
        _filtered(COLUMNS_SQL), params
    ):
        owner_entry = every.get(f"{schema}.{table}")
        if owner_entry is None:
            continue
        owner_entry["columns"].append({
            "name": name, "type": type_, "not_null": bool(notnull),
            "default": None if generated == "s" else default,
            "identity": {"a": "always", "d": "by default"}.get(identity or ""),
            "generated": default if generated == "s" else None,
            "comment": comment,
        })

    for schema, table, name, kind, definition, references, columns in conn.execute(_filtered(CONSTRAINTS_SQL), params):
        entry = tables.get(f"{schema}.{table}")
        if entry is None:
            continue
        entry["constraints"][name] = {
            "type": _CONSTRAINT_KINDS.get(kind, kind), "definition": definition, "columns": list(columns),
            "references": references,
        }

    for schema, table, name, definition, unique, primary, valid, size in conn.execute(_filtered(INDEXES_SQL), params):
        entry = every.get(f"{schema}.{table}")
        if entry is None:
            continue
        entry.setdefault("indexes", {})[name] = {
            "definition": definition, "unique": bool(unique), "primary": bool(primary), "valid": bool(valid),
        }
        entry["stats"].setdefault("index_bytes", {})[name] = int(size or 0)

    for schema, table, name, definition, enabled in conn.execute(_filtered(TRIGGERS_SQL), params):
        entry = tables.get(f"{schema}.{table}")
        if entry is not None:
            entry["triggers"][name] = {"definition": definition, "enabled": enabled != "D"}

    for schema, table, name, cmd, permissive, roles, using, check in conn.execute(_filtered(POLICIES_SQL), params):
        entry = tables.get(f"{schema}.{table}")
        if entry is not None:
            entry["policies"][name] = {
                "command": {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}.get(cmd, cmd),
                "permissive": bool(permissive), "roles": list(roles), "using": using, "with_check": check,
            }

    functions: dict[str, dict[str, Any]] = {}
    for (schema, name, args, result, language, secdef, volatility, body_md5, config, comment, acl,
         kind) in conn.execute(_filtered(FUNCTIONS_SQL), params):
        functions[f"{schema}.{name}({args})"] = {
            "schema": schema, "name": name, "arguments": args, "returns": result, "language": language,
            "kind": _FUNCTION_KINDS.get(kind, kind), "security_definer": bool(secdef),
            "volatility": _VOLATILITY.get(volatility, volatility), "body_md5": body_md5,
            "config": list(config or []), "comment": comment, "grants": sorted(acl or []),
        }

    schemas_out = {
        name: {"owner": owner, "grants": sorted(acl or []), "comment": comment}
        for name, owner, acl, comment in conn.execute(_filtered(SCHEMAS_SQL), params)
    }
    extensions = {name: version for name, version in conn.execute(EXTENSIONS_SQL)}
    info = conn.execute("SELECT current_database(), current_setting('server_version')").fetchone()
    return {
        "format": 1,
        "database": info[0] if info else None,
        "server_version": info[1] if info else None,
        "schemas": schemas_out,
        "extensions": extensions,
        "tables": tables,
        "views": views,
        "functions": functions,
    }


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
# Bookkeeping tables that belong to the migration tooling, not to the application schema (Flyway's default history
# table is left out in every schema; a target's own history table name is passed to snapshot()).
HISTORY_TABLE_NAME = "flyway_schema_history"
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
       c.relacl::text[],
       CASE WHEN c.relispartition THEN (SELECT rn.nspname || '.' || r.relname FROM pg_class r
          JOIN pg_namespace rn ON rn.oid = r.relnamespace WHERE r.oid = pg_partition_root(c.oid)) END
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
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.ord),
       c.relispartition, k.conislocal, k.convalidated,
       CASE WHEN k.conparentid <> 0 THEN (SELECT pk.conname FROM pg_constraint pk WHERE pk.oid = k.conparentid) END
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class f ON f.oid = k.confrelid LEFT JOIN pg_namespace fn ON fn.oid = f.relnamespace
WHERE k.contype <> 'n' AND @SCHEMA_FILTER@
  -- a partition's copies of its parent's constraints are kept (marked inherited); the extra rows PostgreSQL adds for
  -- each partition of a referenced table (same referencing table as their parent constraint) are not
  AND (k.conparentid = 0 OR (c.relispartition AND NOT EXISTS (
       SELECT 1 FROM pg_constraint up WHERE up.oid = k.conparentid AND up.conrelid = k.conrelid)))
ORDER BY 1, 2, 3
"""

INDEXES_SQL = """
SELECT n.nspname, c.relname, i.relname, pg_get_indexdef(x.indexrelid), x.indisunique, x.indisprimary,
       x.indisvalid, pg_relation_size(x.indexrelid), c.relispartition,
       (SELECT pn.nspname || '.' || p.relname FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhparent
          JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE h.inhrelid = x.indexrelid LIMIT 1)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND @SCHEMA_FILTER@
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


TYPES_SQL = """
SELECT n.nspname, t.typname, t.typtype::text, obj_description(t.oid, 'pg_type'), pg_get_userbyid(t.typowner),
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END, t.typnotnull, t.typdefault,
       ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
       ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0
             AND NOT a.attisdropped ORDER BY a.attnum),
       ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = t.typrelid
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid),
       t.typacl::text[]
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE (t.typtype IN ('d', 'e', 'r') OR (t.typtype = 'c' AND c.relkind = 'c')) AND @SCHEMA_FILTER@
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                  AND d.deptype = 'e')
ORDER BY 1, 2
"""

DOMAIN_CHECKS_SQL = """
SELECT n.nspname, t.typname, k.conname, pg_get_constraintdef(k.oid, true), k.convalidated
FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE k.contypid <> 0 AND k.contype = 'c' AND @SCHEMA_FILTER@
ORDER BY 1, 2, 3
"""

SEQUENCES_SQL = """
SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle, o.owned_by, o.deptype, pg_get_userbyid(c.relowner), c.relacl::text[],
       obj_description(c.oid, 'pg_class')
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT dn.nspname || '.' || dc.relname || '.' || a.attname AS owned_by, d.deptype::text AS deptype
    FROM pg_depend d JOIN pg_class dc ON dc.oid = d.refobjid JOIN pg_namespace dn ON dn.oid = dc.relnamespace
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
      AND d.deptype IN ('a', 'i')
    LIMIT 1
) o ON true
WHERE @SCHEMA_FILTER@
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _filtered(query: str) -> str:
    """Constant catalog queries share one schema filter (a parameter, never interpolated user input)."""
    return query.replace("@SCHEMA_FILTER@", _SCHEMA_FILTER)


EXTENSIONS_SQL = "SELECT extname, extversion FROM pg_extension ORDER BY 1"

_CONSTRAINT_KINDS = {"p": "primary key", "f": "foreign key", "u": "unique", "c": "check", "x": "exclusion",
                     "n": "not null", "t": "trigger"}
_FUNCTION_KINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}
_VOLATILITY = {"i": "immutable", "s": "stable", "v": "volatile"}
_TYPE_KINDS = {"d": "domain", "e": "enum", "c": "composite", "r": "range"}


def _is_ignored(qualified: str, ignore: tuple[str, ...]) -> bool:
    """dbops' and Flyway's bookkeeping: the history table (Flyway's default name in any schema, or a named one)."""
    return qualified in ignore or qualified.split(".", 1)[1] == HISTORY_TABLE_NAME


def _type_definition(kind: str, entry: dict[str, Any]) -> str:
    if kind == "domain":
        text = entry["base_type"] + (" NOT NULL" if entry["not_null"] else "")
        text += f" DEFAULT {entry['default']}" if entry.get("default") else ""
        return " ".join([text, *(c["definition"] for c in entry["checks"].values())])
    if kind == "enum":
        return "ENUM (" + ", ".join("'" + label.replace("'", "''") + "'" for label in entry["labels"]) + ")"
    if kind == "composite":
        return "(" + ", ".join(f"{a['name']} {a['type']}" for a in entry["attributes"]) + ")"
    return f"RANGE ({entry.get('subtype')})"


def _sequence_definition(seq: dict[str, Any]) -> str:
    text = (f"{seq['type']} START {seq['start']} INCREMENT {seq['increment']} MINVALUE {seq['min']} MAXVALUE "
            f"{seq['max']} CACHE {seq['cache']}" + (" CYCLE" if seq["cycle"] else ""))
    if seq.get("owned_by"):
        text += (" IDENTITY OF " if seq.get("identity") else " OWNED BY ") + seq["owned_by"]
    return text


def snapshot(conn: psycopg.Connection[Any], schemas: list[str] | None = None,
             ignore: tuple[str, ...] | list[str] = IGNORED_TABLES) -> dict[str, Any]:
    """Read every user object of the database (optionally only ``schemas``) into a JSON-ready dict.

    ``ignore``: tables left out (the migration history; ``flyway_schema_history`` is left out in every schema).
    Partitions are not tables of their own: each is listed under its partitioned root (``partitions``) with its
    bound, its own keys and indexes (those inherited from the parent marked so)."""
    params = {"schemas": schemas}
    ignore = tuple(ignore)
    tables: dict[str, dict[str, Any]] = {}
    views: dict[str, dict[str, Any]] = {}
    partitions: dict[str, dict[str, dict[str, Any]]] = {}
    partition_entries: dict[str, dict[str, Any]] = {}
    for (schema, name, kind, comment, rls, force_rls, owner, reltuples, size, partkey, parent, bound, viewdef,
         acl, root) in conn.execute(_filtered(RELATIONS_SQL), params):
        qualified = f"{schema}.{name}"
        if _is_ignored(qualified, ignore):
            continue
        if bound is not None and parent:
            # Partitions come and go with time (a daily job adds them); they are listed under their root.
            part: dict[str, Any] = {
                "bound": bound, "parent": parent, "estimated_rows": max(int(reltuples or 0), 0),
                "total_bytes": int(size or 0), "constraints": {}, "indexes": {},
            }
            if partkey:
                part["partition_key"] = partkey  # a partition partitioned in turn
            partitions.setdefault(root or parent, {})[qualified] = part
            partition_entries[qualified] = part
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

    for (schema, table, name, kind, definition, references, columns, is_partition, local, _valid,
         parent_constraint) in conn.execute(_filtered(CONSTRAINTS_SQL), params):
        con = {"type": _CONSTRAINT_KINDS.get(kind, kind), "definition": definition, "columns": list(columns),
               "references": references}
        if is_partition:
            part = partition_entries.get(f"{schema}.{table}")
            if part is not None:
                part["constraints"][name] = {**con, "inherited": parent_constraint or (None if local else name)}
            continue
        entry = tables.get(f"{schema}.{table}")
        if entry is None or parent_constraint:
            continue
        entry["constraints"][name] = con

    for (schema, table, name, definition, unique, primary, valid, size, is_partition,
         parent_index) in conn.execute(_filtered(INDEXES_SQL), params):
        idx = {"definition": definition, "unique": bool(unique), "primary": bool(primary), "valid": bool(valid)}
        if is_partition:
            part = partition_entries.get(f"{schema}.{table}")
            if part is not None:
                part["indexes"][name] = {**idx, "inherited": parent_index}
            continue
        entry = every.get(f"{schema}.{table}")
        if entry is None:
            continue
        entry.setdefault("indexes", {})[name] = idx
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

    types: dict[str, dict[str, Any]] = {}
    for (schema, name, typtype, comment, owner, base, notnull, default, labels, attnames, atttypes, subtype,
         acl) in conn.execute(_filtered(TYPES_SQL), params):
        kind = _TYPE_KINDS[typtype]
        entry = {"schema": schema, "name": name, "kind": kind, "owner": owner, "comment": comment,
                 "grants": sorted(acl or [])}
        if kind == "domain":
            entry.update(base_type=base, not_null=bool(notnull), default=default, checks={})
        elif kind == "enum":
            entry["labels"] = list(labels)
        elif kind == "composite":
            entry["attributes"] = [{"name": n, "type": t} for n, t in zip(attnames, atttypes, strict=True)]
        else:
            entry["subtype"] = subtype
        types[f"{schema}.{name}"] = entry
    for schema, name, check, definition, valid in conn.execute(_filtered(DOMAIN_CHECKS_SQL), params):
        domain = types.get(f"{schema}.{name}")
        if domain is not None and domain["kind"] == "domain":
            domain["checks"][check] = {"definition": definition, "validated": bool(valid)}
    for entry in types.values():
        entry["definition"] = _type_definition(entry["kind"], entry)

    sequences: dict[str, dict[str, Any]] = {}
    for (schema, name, type_, start, increment, min_, max_, cache, cycle, owned_by, deptype, owner, acl,
         comment) in conn.execute(_filtered(SEQUENCES_SQL), params):
        seq = {"schema": schema, "name": name, "type": type_, "start": int(start), "increment": int(increment),
               "min": int(min_), "max": int(max_), "cache": int(cache), "cycle": bool(cycle), "owned_by": owned_by,
               "identity": deptype == "i", "owner": owner, "grants": sorted(acl or []), "comment": comment}
        seq["definition"] = _sequence_definition(seq)
        sequences[f"{schema}.{name}"] = seq

    schemas_out = {
        name: {"owner": owner, "grants": sorted(acl or []), "comment": comment}
        for name, owner, acl, comment in conn.execute(_filtered(SCHEMAS_SQL), params)
    }
    extensions = {name: version for name, version in conn.execute(EXTENSIONS_SQL)}
    info = conn.execute("SELECT current_database(), current_setting('server_version')").fetchone()
    return {
        "format": 2,
        "database": info[0] if info else None,
        "server_version": info[1] if info else None,
        "schemas": schemas_out,
        "extensions": extensions,
        "tables": tables,
        "views": views,
        "functions": functions,
        "types": types,
        "sequences": sequences,
    }

"""Documentation rendered from a schema snapshot: a markdown data dictionary, a Mermaid ER diagram and DBML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def _md(text: Any) -> str:
    """A value safe inside a markdown table cell."""
    if text is None or text == "":
        return ""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pk_columns(table: dict[str, Any]) -> set[str]:
    return {c for con in table.get("constraints", {}).values() if con["type"] == "primary key" for c in con["columns"]}


def _fk_columns(table: dict[str, Any]) -> set[str]:
    return {c for con in table.get("constraints", {}).values() if con["type"] == "foreign key" for c in con["columns"]}


def _foreign_keys(snap: dict[str, Any]) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    """(child, parent, child columns, constraint) for every foreign key."""
    out = []
    for name, table in snap["tables"].items():
        for con in table.get("constraints", {}).values():
            if con["type"] == "foreign key" and con.get("references"):
                out.append((name, con["references"], con["columns"], con))
    return out


def data_dictionary(snap: dict[str, Any]) -> str:
    """One section per table and view: purpose (the comment), columns, keys, indexes, policies, partitions."""
    lines = [f"# Data dictionary: {snap.get('database')}", "",
             f"PostgreSQL {snap.get('server_version')}. Generated from the live catalog by `dbops`; do not edit.", ""]
    lines += ["| table | kind | columns | est. rows | comment |", "|---|---|---|---|---|"]
    for name, t in snap["tables"].items():
        lines.append(f"| `{name}` | {t['kind']} | {len(t['columns'])} | {t['stats'].get('estimated_rows') or 0} "
                     f"| {_md(t.get('comment'))} |")
    for name, t in snap["views"].items():
        lines.append(f"| `{name}` | {t['kind']} | {len(t['columns'])} | | {_md(t.get('comment'))} |")
    lines.append("")
    for name, t in snap["tables"].items():
        pks, fks = _pk_columns(t), _fk_columns(t)
        lines += [f"## `{name}`", ""]
        if t.get("comment"):
            lines += [t["comment"], ""]
        facts = [f"kind: {t['kind']}", f"owner: `{t.get('owner')}`"]
        if t.get("partition_key"):
            facts.append(f"partitioned by `{t['partition_key']}` ({len(t.get('partitions', {}))} partitions)")
        if t.get("row_security"):
            facts.append("row-level security" + (" (forced)" if t.get("force_row_security") else ""))
        lines += ["; ".join(facts), ""]
        lines += ["| column | type | null | default | key | comment |", "|---|---|---|---|---|---|"]
        for col in t["columns"]:
            key = "PK" if col["name"] in pks else ""
            key += (" FK" if col["name"] in fks else "")
            default = col.get("default") or (f"identity {col['identity']}" if col.get("identity") else "")
            if col.get("generated"):
                default = f"generated: {col['generated']}"
            lines.append(f"| `{col['name']}` | {_md(col['type'])} | {'' if col['not_null'] else 'yes'} "
                         f"| {_md(default)} | {key.strip()} | {_md(col.get('comment'))} |")
        if t.get("constraints"):
            lines += ["", "Constraints:", ""]
            lines += [f"- `{cname}` ({con['type']}): `{_md(con['definition'])}`"
                      for cname, con in t["constraints"].items()]
        if t.get("indexes"):
            lines += ["", "Indexes:", ""]
            lines += [f"- `{iname}`: `{_md(idx['definition'])}`" for iname, idx in t["indexes"].items()]
        if t.get("policies"):
            lines += ["", "Row-level security policies:", ""]
            lines += [f"- `{pname}` {p['command']} to {', '.join(p['roles'])}: using `{_md(p.get('using'))}`"
                      + (f", check `{_md(p['with_check'])}`" if p.get("with_check") else "")
                      for pname, p in t["policies"].items()]
        if t.get("triggers"):
            lines += ["", "Triggers:", ""]
            lines += [f"- `{tname}`: `{_md(tr['definition'])}`" for tname, tr in t["triggers"].items()]
        lines.append("")
    for name, v in snap["views"].items():
        lines += [f"## `{name}` ({v['kind']})", ""]
        if v.get("comment"):
            lines += [v["comment"], ""]
        lines += ["| column | type |", "|---|---|"]
        lines += [f"| `{c['name']}` | {_md(c['type'])} |" for c in v["columns"]]
        lines += ["", "```sql", v.get("definition", ""), "```", ""]
    if snap.get("functions"):
        lines += ["## Functions", "", "| function | returns | language | security definer | volatility |",
                  "|---|---|---|---|---|"]
        for name, f in snap["functions"].items():
            lines.append(f"| `{_md(name)}` | {_md(f['returns'])} | {f['language']} "
                         f"| {'yes' if f['security_definer'] else ''} | {f['volatility']} |")
        lines.append("")
    return "\n".join(lines)


_MERMAID_NAME = re.compile(r"[^A-Za-z0-9_]")


def _mermaid_entity(name: str) -> str:
    return _MERMAID_NAME.sub("_", name)


_SHORT_TYPES = {"timestamp with time zone": "timestamptz", "timestamp without time zone": "timestamp",
                "character varying": "varchar", "double precision": "float8", "character": "char"}


def _mermaid_type(pg_type: str) -> str:
    """Mermaid attribute types are single words: ``timestamp with time zone`` becomes ``timestamptz``."""
    base = pg_type.split("(")[0].strip()
    array = base.endswith("[]")
    base = _SHORT_TYPES.get(base.removesuffix("[]").strip(), base.removesuffix("[]").strip())
    return (_MERMAID_NAME.sub("_", base) or "unknown") + ("_array" if array else "")


def mermaid_er(snap: dict[str, Any]) -> str:
    """A Mermaid ``erDiagram`` of every table, its columns (PK/FK marked) and every foreign key."""
    lines = ["erDiagram"]
    for name, t in snap["tables"].items():
        pks, fks = _pk_columns(t), _fk_columns(t)
        lines.append(f"    {_mermaid_entity(name)} {{")
        for col in t["columns"]:
            keys = ",".join(k for k, on in (("PK", col["name"] in pks), ("FK", col["name"] in fks)) if on)
            lines.append(f"        {_mermaid_type(col['type'])} {col['name']}" + (f" {keys}" if keys else ""))
        lines.append("    }")
    for child, parent, columns, _con in _foreign_keys(snap):
        if parent not in snap["tables"]:
            continue
        nullable = any(not c["not_null"] for c in snap["tables"][child]["columns"] if c["name"] in columns)
        left = "|o" if nullable else "||"
        lines.append(f'    {_mermaid_entity(parent)} {left}--o{{ {_mermaid_entity(child)} : "{",".join(columns)}"')
    return "\n".join(lines) + "\n"


def dbml(snap: dict[str, Any]) -> str:
    """The schema as DBML (dbdiagram.io and friends): tables, columns, primary keys, notes and references."""
    out = []
    for name, t in snap["tables"].items():
        pks = _pk_columns(t)
        out.append(f'Table "{name}" {{')
        for col in t["columns"]:
            settings = []
            if col["name"] in pks and len(pks) == 1:
                settings.append("pk")
            if col["not_null"]:
                settings.append("not null")
            if col.get("default"):
                settings.append(f"default: `{col['default']}`")
            if col.get("comment"):
                settings.append("note: '" + col["comment"].replace("'", "\\'") + "'")
            suffix = f" [{', '.join(settings)}]" if settings else ""
            out.append(f'  "{col["name"]}" "{col["type"]}"{suffix}')
        if len(pks) > 1:
            out.append("  indexes {")
            out.append(f"    ({', '.join(sorted(pks))}) [pk]")
            out.append("  }")
        if t.get("comment"):
            out.append("  Note: '" + t["comment"].replace("'", "\\'") + "'")
        out.append("}")
        out.append("")
    for child, parent, columns, con in _foreign_keys(snap):
        m = re.search(r"REFERENCES\s+\S+?\(([^)]*)\)", con["definition"])
        parent_cols = [c.strip().strip('"') for c in m.group(1).split(",")] if m else columns
        left = f'"{child}".({", ".join(columns)})' if len(columns) > 1 else f'"{child}".{columns[0]}'
        right = f'"{parent}".({", ".join(parent_cols)})' if len(parent_cols) > 1 else f'"{parent}".{parent_cols[0]}'
        out.append(f"Ref: {left} > {right}")
    return "\n".join(out) + "\n"


def write_docs(snap: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write the dictionary, the ER diagram (inside markdown) and the DBML; each file replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "data_dictionary": (directory / "data-dictionary.md", data_dictionary(snap)),
        "er_diagram": (directory / "er-diagram.md", "# ER diagram\n\n```mermaid\n" + mermaid_er(snap) + "```\n"),
        "dbml": (directory / "schema.dbml", dbml(snap)),
    }
    written = {}
    for key, (path, text) in files.items():
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written[key] = path
    return written

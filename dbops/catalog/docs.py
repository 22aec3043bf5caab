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


def _partition_roots(snap: dict[str, Any]) -> dict[str, str]:
    """Every partition's partitioned table (the one it is listed under)."""
    return {part: name for name, t in snap["tables"].items() for part in t.get("partitions", {})}


def _foreign_keys(snap: dict[str, Any]) -> list[tuple[str, str, list[str], dict[str, Any], str]]:
    """(child, parent, child columns, constraint, note) for every foreign key: a partitioned table's own, those onto
    it, and a partition's own foreign key (drawn from its partitioned table, the note naming the partition; one onto
    a partition is drawn onto its partitioned table)."""
    roots = _partition_roots(snap)
    out = []
    for name, table in snap["tables"].items():
        for con in table.get("constraints", {}).values():
            if con["type"] == "foreign key" and con.get("references"):
                parent = roots.get(con["references"], con["references"])
                note = f"onto partition {con['references']}" if parent != con["references"] else ""
                out.append((name, parent, con["columns"], con, note))
        for part, p in table.get("partitions", {}).items():
            for con in p.get("constraints", {}).values():
                if con["type"] == "foreign key" and con.get("references") and not con.get("inherited"):
                    parent = roots.get(con["references"], con["references"])
                    out.append((name, parent, con["columns"], con, f"partition {part}"))
    return out


def _partition_key_columns(table: dict[str, Any]) -> set[str]:
    """The plain columns of a partition key (``RANGE (loaned_on)`` -> loaned_on; expressions are not columns)."""
    key = table.get("partition_key") or ""
    inside = key[key.find("(") + 1: key.rfind(")")] if "(" in key else ""
    names = {c["name"] for c in table.get("columns", [])}
    return {part.strip().strip('"') for part in inside.split(",")} & names


def _partition_lines(t: dict[str, Any]) -> list[str]:
    """A partitioned table's partitions: bound, rows, and the keys and indexes each has of its own."""
    lines = ["", f"Partitions (partitioned by `{t['partition_key']}`):", ""]
    for part, p in t.get("partitions", {}).items():
        own_keys = [f"`{n}` ({c['type']}: `{_md(c['definition'])}`)" for n, c in p.get("constraints", {}).items()
                    if not c.get("inherited")]
        own_indexes = [f"`{n}` (`{_md(i['definition'])}`)" for n, i in p.get("indexes", {}).items()
                       if not i.get("inherited")]
        inherited = (sum(1 for c in p.get("constraints", {}).values() if c.get("inherited")),
                     sum(1 for i in p.get("indexes", {}).values() if i.get("inherited")))
        text = f"- `{part}`: `{_md(p['bound'])}`, ~{p.get('estimated_rows') or 0} rows"
        if p.get("parent") and p["parent"] != f"{t['schema']}.{t['name']}":
            text += f", a partition of `{p['parent']}`"
        if p.get("partition_key"):
            text += f", partitioned by `{p['partition_key']}`"
        text += f"; {inherited[0]} constraints and {inherited[1]} indexes from the parent"
        if own_keys:
            text += "; own constraints: " + ", ".join(own_keys)
        if own_indexes:
            text += "; own indexes: " + ", ".join(own_indexes)
        lines.append(text)
    return lines


def _types_lines(snap: dict[str, Any]) -> list[str]:
    types = snap.get("types") or {}
    lines: list[str] = []
    domains = {n: t for n, t in types.items() if t["kind"] == "domain"}
    if domains:
        lines += ["## Domains", "", "| domain | base type | not null | default | checks | comment |",
                  "|---|---|---|---|---|---|"]
        for n, d in domains.items():
            checks = "; ".join(f"{c}: {k['definition']}" for c, k in d["checks"].items())
            lines.append(f"| `{n}` | {_md(d['base_type'])} | {'yes' if d['not_null'] else ''} "
                         f"| {_md(d.get('default'))} | {_md(checks)} | {_md(d.get('comment'))} |")
        lines.append("")
    enums = {n: t for n, t in types.items() if t["kind"] == "enum"}
    if enums:
        lines += ["## Enums", "", "| enum | labels, in order | comment |", "|---|---|---|"]
        lines += [f"| `{n}` | {_md(', '.join(e['labels']))} | {_md(e.get('comment'))} |" for n, e in enums.items()]
        lines.append("")
    composites = {n: t for n, t in types.items() if t["kind"] in ("composite", "range")}
    if composites:
        lines += ["## Composite and range types", "", "| type | kind | attributes | comment |", "|---|---|---|---|"]
        lines += [f"| `{n}` | {c['kind']} | "
                  + _md(", ".join(f"{a['name']} {a['type']}" for a in c.get("attributes", []))
                        or f"range of {c.get('subtype')}")
                  + f" | {_md(c.get('comment'))} |" for n, c in composites.items()]
        lines.append("")
    sequences = snap.get("sequences") or {}
    if sequences:
        lines += ["## Sequences", "", "| sequence | type | start | increment | min | max | cycle | owned by |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| `{n}` | {q['type']} | {q['start']} | {q['increment']} | {q['min']} | {q['max']} "
                  f"| {'yes' if q['cycle'] else ''} | "
                  + (f"`{q['owned_by']}`" + (" (identity)" if q.get("identity") else "") if q.get("owned_by") else "")
                  + " |" for n, q in sequences.items()]
        lines.append("")
    return lines


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
    relationships = _foreign_keys(snap)
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
        onto = [(child, cols, con, note) for child, parent, cols, con, note in relationships if parent == name]
        if onto:
            lines += ["", "Referenced by:", ""]
            lines += [f"- `{child}` ({', '.join(cols)})" + (f", {note}" if note else "")
                      + f": `{_md(con['definition'])}`" for child, cols, con, note in onto]
        if t.get("partition_key"):
            lines += _partition_lines(t)
        lines.append("")
    for name, v in snap["views"].items():
        lines += [f"## `{name}` ({v['kind']})", ""]
        if v.get("comment"):
            lines += [v["comment"], ""]
        lines += ["| column | type |", "|---|---|"]
        lines += [f"| `{c['name']}` | {_md(c['type'])} |" for c in v["columns"]]
        lines += ["", "```sql", v.get("definition", ""), "```", ""]
    lines += _types_lines(snap)
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
    """A Mermaid ``erDiagram`` of every table, its columns (PK/FK marked, a partition key column so commented) and
    every foreign key, those from and onto partitioned tables included. Partitions are not entities: a partition's
    own foreign key is drawn from its partitioned table, one onto a partition onto its partitioned table (the label
    names the partition); the data dictionary lists the partitions under their table."""
    lines = ["erDiagram"]
    for name, t in snap["tables"].items():
        pks, fks, part_keys = _pk_columns(t), _fk_columns(t), _partition_key_columns(t)
        lines.append(f"    {_mermaid_entity(name)} {{")
        for col in t["columns"]:
            keys = ",".join(k for k, on in (("PK", col["name"] in pks), ("FK", col["name"] in fks)) if on)
            comment = ' "partition key"' if col["name"] in part_keys else ""
            lines.append(f"        {_mermaid_type(col['type'])} {col['name']}" + (f" {keys}" if keys else "")
                         + comment)
        lines.append("    }")
    for child, parent, columns, _con, note in _foreign_keys(snap):
        if parent not in snap["tables"]:
            continue
        nullable = any(not c["not_null"] for c in snap["tables"][child]["columns"] if c["name"] in columns)
        left = "|o" if nullable else "||"
        label = ",".join(columns) + (f" ({note})" if note else "")
        lines.append(f'    {_mermaid_entity(parent)} {left}--o{{ {_mermaid_entity(child)} : "{label}"')
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
        note = " ".join(filter(None, [t.get("comment"), f"Partitioned by {t['partition_key']} into "
                                      f"{len(t.get('partitions', {}))} partitions." if t.get("partition_key") else ""]))
        if note:
            out.append("  Note: '" + note.replace("'", "\\'") + "'")
        out.append("}")
        out.append("")
    seen = set()
    for child, parent, columns, con, _note in _foreign_keys(snap):
        m = re.search(r"REFERENCES\s+\S+?\(([^)]*)\)", con["definition"])
        parent_cols = [c.strip().strip('"') for c in m.group(1).split(",")] if m else columns
        left = f'"{child}".({", ".join(columns)})' if len(columns) > 1 else f'"{child}".{columns[0]}'
        right = f'"{parent}".({", ".join(parent_cols)})' if len(parent_cols) > 1 else f'"{parent}".{parent_cols[0]}'
        if (left, right) not in seen:  # a partition's own copy of its table's foreign key is one reference
            seen.add((left, right))
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

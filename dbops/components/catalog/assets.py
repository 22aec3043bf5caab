"""``<target>/schema_catalog``: the live schema as a JSON snapshot, its docs, and what changed since the last
snapshot."""

import dagster as dg

from dbops.catalog.diff import diff, summarize
from dbops.catalog.introspect import snapshot
from dbops.catalog.store import CatalogStore
from dbops.components.catalog.resources import CatalogResource
from dbops.components.naming import asset_key, pool
from dbops.components.resources import DatabaseResource, launch_target
from dbops.pg.connect import database_name

_MAX_ROWS_SHOWN = 200


def column_schema(snap: dict) -> dg.TableSchema:
    """Every column of every table and view, named ``schema.table.column``, as Dagster's column schema."""
    columns = []
    for kind in ("tables", "views"):
        for name, rel in snap[kind].items():
            for col in rel["columns"]:
                columns.append(dg.TableColumn(
                    name=f"{name}.{col['name']}", type=col["type"], description=col.get("comment"),
                    constraints=dg.TableColumnConstraints(nullable=not col["not_null"]),
                ))
    return dg.TableSchema(columns=columns)


def build_schema_catalog(target: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(target, "schema_catalog"),
        group_name="catalog",
        deps=[asset_key(target, "schema_migrations")],
        pool=pool(target),
        kinds={"postgres"},
        description="Introspects tables, columns, constraints, indexes, partitions (bounds, their own keys and "
        "indexes), views, functions, triggers, RLS policies, grants, domains, enums, composite types and sequences "
        "into a JSON snapshot; writes a data dictionary, a Mermaid ER diagram and DBML; reports the difference from "
        "the previous snapshot.",
    )
    def schema_catalog(
        context: dg.AssetExecutionContext, database: DatabaseResource, catalog: CatalogResource
    ) -> dg.MaterializeResult:
        database, catalog = database.for_target(target), catalog.for_target(target)
        migrate = launch_target(target).migrate
        with database.connect() as conn:  # the target's own migration history is bookkeeping, not its schema
            snap = snapshot(conn, catalog.schema_filter, ignore=(f"{migrate.default_schema}.{migrate.table}",))
        store = CatalogStore(catalog.root, database_name(database.target_url))
        previous = store.latest()
        changes = diff(previous, snap) if previous is not None else []
        files = store.save(snap)
        counts = summarize(changes)
        context.log.info(f"catalog of {len(snap['tables'])} tables; changes since last snapshot: {counts}")
        rows = "\n".join(
            f"| `{name}` | {t['kind']} | {t['stats'].get('estimated_rows') or 0:,} | {t['stats']['total_bytes']:,} |"
            for name, t in snap["tables"].items()
        )
        change_lines = "\n".join(f"- {c}" for c in changes[:_MAX_ROWS_SHOWN]) or (
            "first snapshot" if previous is None else "no change")
        return dg.MaterializeResult(
            metadata={
                "tables": dg.MetadataValue.int(len(snap["tables"])),
                "views": dg.MetadataValue.int(len(snap["views"])),
                "functions": dg.MetadataValue.int(len(snap["functions"])),
                "partitions": dg.MetadataValue.int(sum(len(t.get("partitions", {})) for t in snap["tables"].values())),
                "types": dg.MetadataValue.int(len(snap["types"])),
                "sequences": dg.MetadataValue.int(len(snap["sequences"])),
                "row_counts": dg.MetadataValue.md("| table | kind | est. rows | bytes |\n|---|---|---|---|\n" + rows),
                "dagster/column_schema": column_schema(snap),
                "changes_added": dg.MetadataValue.int(counts["added"]),
                "changes_removed": dg.MetadataValue.int(counts["removed"]),
                "changes_changed": dg.MetadataValue.int(counts["changed"]),
                "changes": dg.MetadataValue.md(change_lines),
                "er_diagram": dg.MetadataValue.md("```mermaid\n" + files["er_diagram"].read_text().split(
                    "```mermaid\n", 1)[1]),
                "data_dictionary": dg.MetadataValue.path(str(files["data_dictionary"])),
                "dbml": dg.MetadataValue.path(str(files["dbml"])),
                "snapshot": dg.MetadataValue.path(str(files["snapshot"])),
            }
        )

    return schema_catalog

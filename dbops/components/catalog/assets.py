"""``<target>/schema_catalog``: the live schema as a JSON snapshot, its docs, and what changed since the last
snapshot."""

import time

import dagster as dg

from dbops.catalog.diff import diff, summarize
from dbops.catalog.introspect import snapshot
from dbops.catalog.store import CatalogStore
from dbops.components import metadata as mt
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
        began = time.monotonic()
        scope = ", ".join(catalog.schema_filter or ["every schema"])
        context.log.info(f"introspecting {database.display_url} ({scope})")
        with database.connect() as conn:  # the target's own migration history is bookkeeping, not its schema
            snap = snapshot(conn, catalog.schema_filter, ignore=(f"{migrate.default_schema}.{migrate.table}",))
        context.log.info(f"introspected {len(snap['tables'])} tables, {len(snap['views'])} views, "
                         f"{len(snap['functions'])} functions in {time.monotonic() - began:.1f} s")
        store = CatalogStore(catalog.root, database_name(database.target_url))
        previous = store.latest()
        changes = diff(previous, snap) if previous is not None else []
        files = store.save(snap)
        counts = summarize(changes)
        context.log.info(f"wrote the snapshot, data dictionary, ER diagram and DBML to {files['snapshot'].parent}; "
                         f"changes since the last snapshot: {counts}")
        rows = [{"table": name, "kind": t["kind"], "estimated_rows": t["stats"].get("estimated_rows"),
                 "bytes": t["stats"].get("total_bytes")} for name, t in snap["tables"].items()]
        change_lines = "\n".join(f"- {c}" for c in changes[:_MAX_ROWS_SHOWN]) or (
            "first snapshot" if previous is None else "no change")
        return dg.MaterializeResult(
            metadata={
                **mt.figures({
                    "tables": len(snap["tables"]),
                    "views": len(snap["views"]),
                    "functions": len(snap["functions"]),
                    "partitions": sum(len(t.get("partitions", {})) for t in snap["tables"].values()),
                    "types": len(snap["types"]),
                    "sequences": len(snap["sequences"]),
                    "changes_added": counts["added"],
                    "changes_removed": counts["removed"],
                    "changes_changed": counts["changed"],
                }),
                "row_counts": mt.table(rows[:_MAX_ROWS_SHOWN], ["table", "kind", "estimated_rows", "bytes"],
                                       {"estimated_rows": "the planner's estimate (pg_class.reltuples)",
                                        "bytes": "total size with indexes and TOAST"}),
                **({"row_counts_note": dg.MetadataValue.text(f"first {_MAX_ROWS_SHOWN} of {len(rows)} tables")}
                   if len(rows) > _MAX_ROWS_SHOWN else {}),
                "dagster/column_schema": column_schema(snap),
                "changes": dg.MetadataValue.md(change_lines),
                "er_diagram": dg.MetadataValue.md("```mermaid\n" + files["er_diagram"].read_text().split(
                    "```mermaid\n", 1)[1]),
                "data_dictionary": mt.path(files["data_dictionary"]),
                "dbml": mt.path(files["dbml"]),
                "snapshot": mt.path(files["snapshot"]),
            }
        )

    return schema_catalog

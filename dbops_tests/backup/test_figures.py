"""Table figures: the record hash, its text fallback for unhashable column types, and drills of backups whose
manifests were made with the text hash (before the record hash existed)."""

from __future__ import annotations

from dbops.backup.figures import table_figure, table_figures
from dbops.backup.keys import MasterKey
from dbops.backup.logical import logical_backup
from dbops.backup.manifest import save_manifest
from dbops.backup.store import LocalStore
from dbops.pg.connect import connection
from dbops.restore.drill import drill


def test_unhashable_column_falls_back_to_the_text_hash(fresh_db: str) -> None:
    with connection(fresh_db) as conn:
        conn.execute("CREATE TABLE public.places (id int PRIMARY KEY, at point, note text)")
        conn.execute("CREATE TABLE public.plain (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO public.places SELECT g, point(g, g), 'n' || g FROM generate_series(1, 50) g")
        conn.execute("INSERT INTO public.plain SELECT g, 'n' || g FROM generate_series(1, 50) g")
        figures = table_figures(conn)
        assert figures["public.places"]["hash"] == "text" and figures["public.plain"]["hash"] == "record"
        assert figures["public.places"]["rows"] == 50
        before = table_figure(conn, "public", "plain")
        conn.execute("UPDATE public.plain SET note = 'changed' WHERE id = 7")
        assert table_figure(conn, "public", "plain")["checksum"] != before["checksum"]


def test_a_manifest_with_text_checksums_still_drills(seeded_small: str, local_store: LocalStore,
                                                     master_key: MasterKey, server_url: str) -> None:
    manifest = logical_backup(seeded_small, local_store, master_key)
    with connection(seeded_small) as conn:
        text_figures = table_figures(conn, {table: "text" for table in manifest["tables"]})
    assert all(f["checksum"] != manifest["tables"][t]["checksum"] for t, f in text_figures.items() if f["rows"])
    for figure in text_figures.values():
        del figure["hash"]  # as written before the record hash existed
    manifest["tables"] = text_figures
    save_manifest(local_store, master_key, manifest)
    result = drill(server_url, local_store, master_key)
    assert result.data_matches, result.problems

"""Physical base backups (full and incremental) and WAL archiving, on real servers; the restores and drills that prove
them are in dbops_tests/restore."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dbops.backup import wal
from dbops.backup.figures import table_figures
from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.manifest import object_key
from dbops.backup.physical import BASE_OBJECT, base_backup, physical_backups
from dbops.backup.store import LocalStore
from dbops.errors import ConfigError
from dbops.pg.archive import archive_command
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer, free_port
from dbops.restore.drill import physical_drill, remove_scratch, wait_archived
from dbops_tests.backup.metadata_shape import assert_clean, assert_in_order, columns, log_lines, rows
from dbops_tests.conftest import stop_test_server
from dbops_tests.stores import start_archiving_server, wal_segment, write_rows

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def _shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=180, check=False)  # noqa: S602


def test_full_incremental_chain_and_pitr_drill(archiving_server: EmbeddedServer, tmp_path: Path,
                                               master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    url = archiving_server.url("postgres")
    spool = archiving_server.wal_spool
    assert spool is not None
    write_rows(url, "public.ledger", 20_000)

    full = base_backup(url, store, master_key)
    assert full["kind"] == "full" and full["parent"] is None
    assert full["start_lsn"] and full["end_lsn"] and full["start_wal_file"]
    assert {o["name"] for o in full["objects"]} == {BASE_OBJECT, "backup_manifest.zst.enc"}
    assert full["raw_bytes"] > full["stored_bytes"] > 0

    write_rows(url, "public.ledger", 5_000)
    incr = base_backup(url, store, master_key, incremental=True)
    assert incr["kind"] == "incremental" and incr["parent"] == full["id"]
    assert incr["raw_bytes"] < full["raw_bytes"]  # only the changed blocks
    assert [m["id"] for m in physical_backups(store, master_key)] == [full["id"], incr["id"]]

    write_rows(url, "public.ledger", 1_000)  # after the last backup: only the WAL archive has it
    pushed = wal.push_spool(store, master_key, spool)
    assert pushed and wal.list_wal(store)

    with connection(url) as conn:
        source = table_figures(conn)  # nothing writes to the ledger from here on: the restore must equal it
    result = physical_drill(url, store, master_key, spool=spool, scratch_root=tmp_path, keep=True)
    try:
        with connection(result.restored_url) as conn:  # type: ignore[arg-type]
            restored = table_figures(conn)
    finally:
        remove_scratch(result.scratch_server)
    assert restored["public.ledger"] == source["public.ledger"]
    assert restored["public.ledger"]["rows"] == 26_000
    assert result.data_matches, result.problems
    assert result.chain == [full["id"], incr["id"]]
    assert result.wal_files_replayed > 0
    assert {"download_verify", "decrypt_unpack", "combine", "pg_verifybackup", "replay", "verify"} <= set(
        result.phases)
    assert result.indexes_checked > 0
    assert result.rows_checked >= 26_000  # ledger rows from before the target time
    assert not any(p.name.startswith("dbops-drill-") for p in tmp_path.iterdir())  # scratch cluster removed


def test_wal_objects_are_encrypted_and_authenticated(archiving_server: EmbeddedServer, tmp_path: Path,
                                                     master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    segment = tmp_path / "000000010000000000000042"
    wal_segment(segment, os.urandom(1 << 16) + b"secret-wal-content" * 1000)
    assert wal.push_file(store, master_key, segment)
    assert not wal.push_file(store, master_key, segment)  # archived twice: kept once
    stored = (store.root / wal.wal_key(segment.name)).read_bytes()
    assert b"secret-wal-content" not in stored
    assert b"".join(wal.fetch(store, master_key, segment.name)) == segment.read_bytes()
    (store.root / wal.wal_key(segment.name)).write_bytes(stored[:-10] + bytes(10))
    with pytest.raises(BackupIntegrityError, match="000000010000000000000042"):
        b"".join(wal.fetch(store, master_key, segment.name))
    with pytest.raises(Exception, match="not a WAL file name"):
        wal.push_file(store, master_key, tmp_path / "notes.txt")


def test_incremental_without_a_full_backup_is_refused(archiving_server: EmbeddedServer, tmp_path: Path,
                                                      master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ConfigError, match="no earlier base backup"):
        base_backup(archiving_server.url("postgres"), store, master_key, incremental=True)
    assert store.list("backups/") == []


def test_postgresql_15_full_and_wal_only(tmp_path: Path, master_key: MasterKey) -> None:
    server = start_archiving_server(PG15_BIN)
    try:
        store = LocalStore(tmp_path / "store")
        url = server.url("postgres")
        write_rows(url, "public.orders15", 2_000)
        with pytest.raises(ConfigError, match="PostgreSQL 17 or newer"):
            base_backup(url, store, master_key, incremental=True, bin_dir=PG15_BIN)
        full = base_backup(url, store, master_key, bin_dir=PG15_BIN)
        assert full["server_version"].startswith("15")
        write_rows(url, "public.orders15", 500)
        # no bin_dir: the PostgreSQL 15 programs are found from the backup's server version
        result = physical_drill(url, store, master_key, spool=server.wal_spool, scratch_root=tmp_path)
        assert result.data_matches, result.problems
        assert result.wal_files_replayed > 0
    finally:
        stop_test_server(server)


def test_pg_basebackup_killed_mid_way_leaves_nothing_visible(archiving_server: EmbeddedServer, tmp_path: Path,
                                                             master_key: MasterKey,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "store")
    original = subprocess.Popen

    class KilledEarly(original):  # type: ignore[misc, valid-type]
        def __init__(self, args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(args, **kwargs)
            if "pg_basebackup" in str(args[0]):
                self.kill()

    monkeypatch.setattr(subprocess, "Popen", KilledEarly)
    with pytest.raises(Exception, match="pg_basebackup"):
        base_backup(archiving_server.url("postgres"), store, master_key)
    monkeypatch.undo()
    assert physical_backups(store, master_key) == []
    assert not [n for n in store.list("backups/") if not n.endswith(".partial")]


def test_dagster_base_backup_wal_archive_drill_and_retention(archiving_server: EmbeddedServer, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from dbops.backup.keys import generate_key
    from dbops.components import backup
    from dbops.components.naming import asset_key, op_name
    from dbops.components.resources import BackupResource, DatabaseResource
    from dbops.components.restore.assets import build_restore_drill

    target = "dbops"
    step = {a.key: a for a in backup.build(target).assets or [] if isinstance(a, dg.AssetsDefinition)}
    base_backup_asset = step[asset_key(target, "base_backup")]
    wal_archive = step[asset_key(target, "wal_archive")]
    backup_retention = step[asset_key(target, "backup_retention")]
    restore_drill = build_restore_drill(target)
    drill_op, base_op = op_name(target, "restore_drill"), op_name(target, "base_backup")

    monkeypatch.setenv("DBOPS_BACKUP_KEY", generate_key())
    monkeypatch.setenv("DBOPS_WAL_SPOOL", str(archiving_server.wal_spool))
    monkeypatch.setenv("DBOPS_BACKUP_KEEP_LAST", "1")
    url = archiving_server.url("postgres")
    write_rows(url, "public.dagster_ledger", 5_000)
    resources = {"database": DatabaseResource(url=url),
                 "backups": BackupResource(store="local", directory=str(tmp_path / "store"))}
    instance = dg.DagsterInstance.ephemeral()

    def run(assets: list, kind: str = "full") -> dg.ExecuteInProcessResult:  # type: ignore[type-arg]
        config = {"ops": {base_op: {"config": {"kind": kind}}}} if base_backup_asset in assets else None
        result = dg.materialize(assets, instance=instance, resources=resources, run_config=config)
        assert result.success
        return result

    first = run([base_backup_asset, wal_archive])
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in first.get_asset_check_evaluations()}
    assert checks == {("dbops/base_backup", "backup_fresh"): True, ("dbops/wal_archive", "wal_archive_current"): True}
    # issue 18 items 10 and 12: base_backup's and wal_archive's metadata, and base_backup's phases as they happened
    base_meta = first.asset_materializations_for_node(base_op)[0].metadata
    assert_clean(base_meta)
    assert base_meta["kind"].value == "full" and "parent" not in base_meta  # a full backup has none: left out
    assert isinstance(base_meta["manifest"], dg.PathMetadataValue) and Path(base_meta["manifest"].value).is_file()
    assert {r["name"] for r in rows(base_meta["objects"])} == {BASE_OBJECT, "backup_manifest.zst.enc"}
    assert columns(base_meta["objects"])["stored_bytes"] == "int" and base_meta["tar_members"].value > 100
    assert isinstance(base_meta["wal_spool"], dg.PathMetadataValue)
    assert base_meta["wal_files_archived"].value >= 0 and "dagster/row_count" not in base_meta
    backup_id = base_meta["backup_id"].value
    assert_in_order(log_lines(instance, first.run_id, base_op), [
        "pg_basebackup started: full base backup of PostgreSQL", "pg_basebackup finished:",
        f"manifest signed and stored: backup {backup_id}", "moving the WAL spool", f"base backup {backup_id} done"])
    wal_meta = first.asset_materializations_for_node(op_name(target, "wal_archive"))[0].metadata
    assert_clean(wal_meta)
    assert wal_meta["segments_behind"].value >= 0 and isinstance(wal_meta["failing"], dg.BoolMetadataValue)
    assert isinstance(wal_meta["last_archived_age_seconds"], dg.FloatMetadataValue)
    [wal_check] = [e for e in first.get_asset_check_evaluations() if e.check_name == "wal_archive_current"]
    assert_clean(wal_check.metadata)
    assert "reason" not in wal_check.metadata and wal_check.metadata["max_segments_behind"].value == 2

    [sensor] = [s for s in backup.build(target).sensors or [] if s.name == "dbops_wal_archive_sensor"]
    observed = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    [observation] = observed.asset_events  # type: ignore[union-attr]
    assert observation.asset_key == asset_key(target, "wal_archive")
    assert_clean(observation.metadata)
    assert observation.metadata["segments_behind"].value >= 0
    assert isinstance(observation.metadata["wal_spool"], dg.PathMetadataValue)

    incremental = run([base_backup_asset], kind="incremental")
    incremental_meta = incremental.asset_materializations_for_node(base_op)[0].metadata
    assert incremental_meta["kind"].value == "incremental" and incremental_meta["parent"].value == backup_id
    assert_in_order(log_lines(instance, incremental.run_id, base_op), [
        f"pg_basebackup started: incremental base backup on {backup_id}", "pg_basebackup finished:"])
    write_rows(url, "public.dagster_ledger", 1_000)

    drill = dg.materialize([restore_drill], instance=instance, resources=resources,
                           run_config={"ops": {drill_op: {"config": {"logical": False}}}})
    assert drill.success
    checks = {e.check_name: e.passed for e in drill.get_asset_check_evaluations()}
    assert checks == {"drill_data_matches": True, "drill_rto_under_target": True}
    meta = drill.asset_materializations_for_node(drill_op)[0].metadata
    assert_clean(meta)
    assert meta["physical_wal_files_replayed"].value > 0 and meta["physical_rto_seconds"].value > 0
    assert meta["physical_pitr"].value is True and meta["physical_target_time"].value
    assert meta["physical_chain"].value == f"{backup_id} + {incremental_meta['backup_id'].value}"
    phases = {p["phase"]: p["seconds"] for p in rows(meta["phases"])}
    assert list(phases) == ["download_verify", "decrypt_unpack", "combine", "pg_verifybackup", "stage_wal",
                            "replay", "verify"]
    assert abs(sum(phases.values()) - meta["physical_rto_seconds"].value) < 0.01  # type: ignore[arg-type]
    ledger = next(r for r in rows(meta["physical_tables"]) if r["table"] == "public.dagster_ledger")
    assert ledger == {"table": "public.dagster_ledger", "rows_restored": 6_000}  # replayed past the backups
    assert columns(meta["physical_tables"]) == {"table": "string", "rows_restored": "int"}
    assert_in_order(log_lines(instance, drill.run_id, drill_op), [
        "physical drill of", "PITR canaries planted around", "archived", "restore started into a scratch cluster",
        "verifying 4 object(s)", "objects verified in", "unpacking", "pg_combinebackup of 2 backups",
        "pg_verifybackup started", "pg_verifybackup passed", "restored in", "archived WAL file(s) staged",
        "recovered and promoted in", "verify started", "canaries right", "RTO "])

    full_id = first.asset_materializations_for_node(base_op)[0].metadata["backup_id"].value
    chosen = dg.materialize([restore_drill], instance=instance, resources=resources,
                            run_config={"ops": {drill_op: {"config": {"backup_id": full_id, "pitr": False}}}})
    chosen_meta = chosen.asset_materializations_for_node(drill_op)[0].metadata
    assert chosen.success and chosen_meta["physical_backup_id"].value == full_id
    assert "logical_backup_id" not in chosen_meta and "combine" not in {p["phase"] for p in rows(chosen_meta["phases"])}
    assert chosen_meta["physical_pitr"].value is False and "physical_target_time" not in chosen_meta

    run([base_backup_asset])  # a second full chain: keep_last=1 drops the first chain and the WAL before it
    pruned = run([backup_retention]).asset_materializations_for_node(
        op_name(target, "backup_retention"))[0].metadata
    assert_clean(pruned)
    assert pruned["deleted_backups"].value == 2 and pruned["deleted_wal_files"].value > 0
    assert pruned["oldest_deleted_wal"].value <= pruned["newest_deleted_wal"].value
    assert [(r["kind"], r["action"]) for r in rows(pruned["backups"])] == [
        ("full", "deleted"), ("incremental", "deleted"), ("full", "kept")]
    assert rows(pruned["backups"])[1]["parent"] == full_id


def test_base_backup_to_s3_and_drill_from_it(archiving_server: EmbeddedServer, s3_store, tmp_path: Path,  # type: ignore[no-untyped-def]
                                             master_key: MasterKey) -> None:
    url = archiving_server.url("postgres")
    write_rows(url, "public.s3_ledger", 5_000)
    full = base_backup(url, s3_store, master_key)
    assert s3_store.exists(object_key(full["id"], BASE_OBJECT))
    wal.push_spool(s3_store, master_key, archiving_server.wal_spool)  # type: ignore[arg-type]
    result = physical_drill(url, s3_store, master_key, spool=archiving_server.wal_spool, scratch_root=tmp_path)
    assert result.data_matches, result.problems
    assert result.wal_files_replayed > 0


def test_client_programs_match_the_server_version(tmp_path: Path) -> None:
    from dbops.pg.binaries import client_bin_dir, embedded_major_version

    assert client_bin_dir(tmp_path, 15) == tmp_path  # a configured directory always wins
    assert client_bin_dir(None, embedded_major_version()) is None  # the embedded build
    assert client_bin_dir(None, 15) == PG15_BIN  # Debian's, for a PostgreSQL 15 server


def test_wal_push_to_an_unreachable_store_keeps_the_spool(tmp_path: Path, master_key: MasterKey,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dbops.backup.store import S3Store, StoreError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dbops")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    spool = tmp_path / "spool"
    spool.mkdir()
    wal_segment(spool / "000000010000000000000007", b"wal" * 1000)
    dead = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match="000000010000000000000007"):
        wal.push_spool(dead, master_key, spool)
    assert (spool / "000000010000000000000007").exists()  # pushed again on the next run, nothing lost
def test_wal_push_refuses_another_clusters_segment_and_other_content_under_an_archived_name(
        archiving_server: EmbeddedServer, pg_server: EmbeddedServer, tmp_path: Path, master_key: MasterKey) -> None:
    store = LocalStore(tmp_path / "store")
    url = archiving_server.url("postgres")
    base_backup(url, store, master_key)  # the store's history: this cluster, timeline 1
    write_rows(url, "public.foreign_check", 1_000)  # WAL after the backup, so the switch below archives a segment
    with connection(url) as conn:
        last = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT pg_switch_wal()")
    wait_archived(url, last)
    assert wal.push_spool(store, master_key, archiving_server.wal_spool)  # type: ignore[arg-type]
    other = max(p for p in (pg_server.data_dir / "pg_wal").iterdir() if wal.SEGMENT.match(p.name))
    shutil.copy(other, tmp_path / other.name)
    before = {n: b"".join(wal.fetch(store, master_key, n)) for n in wal.list_wal(store)}
    with pytest.raises(wal.ForeignWalError, match=f"{other.name} comes from database system"):
        wal.push_file(store, master_key, tmp_path / other.name)
    assert {n: b"".join(wal.fetch(store, master_key, n)) for n in wal.list_wal(store)} == before

    archived = next(n for n in wal.list_wal(store) if wal.SEGMENT.match(n))
    copy = tmp_path / "same" / archived
    copy.parent.mkdir()
    copy.write_bytes(b"".join(wal.fetch(store, master_key, archived)))
    assert wal.push_file(store, master_key, copy) is False  # archived twice with the same bytes: fine
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(wal.ForeignWalError, match=f"{archived} is already archived .* with other content"):
        wal.push_file(store, master_key, copy)
    assert b"".join(wal.fetch(store, master_key, archived)) != bytes(data)  # the archived file is kept


def test_the_spool_archive_command_never_overwrites_and_syncs_the_directory(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    command = archive_command(spool)
    assert command.removesuffix("; fi").endswith(f"sync {spool}")  # the rename itself is made durable
    segment = tmp_path / "pg_wal" / "000000010000000000000003"
    segment.parent.mkdir()
    segment.write_bytes(os.urandom(4096))

    def archive() -> subprocess.CompletedProcess[str]:
        return _shell(command.replace("%p", str(segment)).replace("%f", segment.name))

    assert archive().returncode == 0
    assert (spool / segment.name).read_bytes() == segment.read_bytes()
    assert archive().returncode == 0  # archived again with the same bytes (after a crash): success
    original = segment.read_bytes()
    segment.write_bytes(os.urandom(4096))
    refused = archive()
    assert refused.returncode != 0 and "refusing to overwrite" in refused.stderr
    assert (spool / segment.name).read_bytes() == original
    assert sorted(p.name for p in spool.iterdir()) == [segment.name]

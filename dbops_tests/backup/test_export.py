"""`dbops backup export ID --output PATH`: the plain pg_dump archive of a logical backup, checked and written
atomically; and docs/backup-format.md proven by an independent decoder (the `cryptography` package, zstandard and the
document, nothing of dbops' crypto code) whose output plain `pg_restore` restores."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from dbops.backup.keys import BackupIntegrityError, MasterKey, generate_key
from dbops.backup.logical import ExportError, export_logical, logical_backup
from dbops.backup.manifest import ManifestRejected
from dbops.backup.physical import base_backup
from dbops.backup.store import LocalStore, S3Store
from dbops.errors import ConfigError
from dbops.pg.binaries import find_program
from dbops.pg.connect import connection, split_password
from dbops.pg.server import EmbeddedServer
from dbops.settings import load_settings
from dbops_tests.conftest import PROJECT_DIR, dbops_env, dbops_step, new_database, run_dbops
from dbops_tests.stores import write_rows

# ---- helpers shared with dbops_tests/restore/test_team_databases.py ---------------------------------------------

USER_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1, 2
"""

PARTITIONS = """
SELECT pn.nspname || '.' || p.relname, cn.nspname || '.' || c.relname, pg_get_expr(c.relpartbound, c.oid),
       c.relkind::text
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace cn ON cn.oid = c.relnamespace JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE p.relkind = 'p' ORDER BY 1, 2
"""


def row_counts(url: str) -> dict[str, int]:
    """Rows of every ordinary table (partitions included), counted with count(*)."""
    with connection(url) as conn:
        tables = conn.execute(USER_TABLES).fetchall()
        return {f"{schema}.{table}": conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(schema, table))).fetchone()[0] for schema, table in tables}  # type: ignore[index]


def partitions(url: str) -> list[tuple[str, str, str, str]]:
    """(partitioned table, partition, its bound, its kind) for every partition."""
    with connection(url) as conn:
        return [tuple(r) for r in conn.execute(PARTITIONS).fetchall()]  # type: ignore[misc]


def plain_pg_restore(archive: Path, target_url: str, *args: str) -> None:
    """PostgreSQL's own pg_restore, nothing of dbops between: a restore as an operator would run it."""
    bare, password = split_password(target_url)
    env = {**os.environ, "PGPASSWORD": password or ""}
    done = subprocess.run([str(find_program("pg_restore")), "--exit-on-error", "--no-password", f"--dbname={bare}",
                           *args, str(archive)], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr


def pg_restore_list(archive: Path) -> list[str]:
    done = subprocess.run([str(find_program("pg_restore")), "--list", str(archive)], capture_output=True, text=True,
                          timeout=120, check=True)
    return [line for line in done.stdout.splitlines() if line.strip() and not line.startswith(";")]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def small_db(fresh_db: str) -> str:
    """A database of three tables and a partitioned one (dbops' reference schema is not needed here); ``blobs`` makes
    the dump several encrypted chunks long (over 1 MiB compressed)."""
    write_rows(fresh_db, "public.items", 3000)
    write_rows(fresh_db, "public.blobs", 150_000)
    write_rows(fresh_db, "public.notes", 700)
    with connection(fresh_db) as conn:
        conn.execute("CREATE TABLE public.events (id bigint, at date NOT NULL) PARTITION BY RANGE (at)")
        conn.execute("CREATE TABLE public.events_a PARTITION OF public.events FOR VALUES FROM ('2020-01-01') "
                     "TO ('2025-01-01')")
        conn.execute("CREATE TABLE public.events_b PARTITION OF public.events DEFAULT")
        conn.execute("INSERT INTO public.events SELECT g, date '2019-06-01' + g FROM generate_series(1, 4000) g")
    return fresh_db


def cli_settings(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> Any:
    env = {"DBOPS_DATABASE_URL": url, "DBOPS_BACKUP_DIR": str(tmp_path / "store"), "DBOPS_BACKUP_KEY": key,
           "DBOPS_HOME": str(tmp_path / "home")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def backup_id_of(out: str) -> str:
    line = next(line for line in out.splitlines() if line.startswith("backup "))
    return line.split()[1]


# ---- export ---------------------------------------------------------------------------------------------------

def test_export_writes_a_checked_archive_that_plain_pg_restore_restores(
        small_db: str, server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = cli_settings(small_db, tmp_path, monkeypatch, generate_key())
    assert dbops_step(["backup", "run"], settings) == 0
    backup_id = backup_id_of(capsys.readouterr().out)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    archive = out_dir / "shop.dump"
    assert dbops_step(["backup", "export", backup_id, "--output", str(archive)], settings) == 0
    printed = capsys.readouterr().out
    assert f"exported {backup_id} to {archive}: pg_dump custom archive" in printed
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert archive.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format, not dbops' encrypted stream
    assert leftovers(out_dir) == []
    entries = pg_restore_list(archive)
    assert f"{len(entries)} entries" in printed and any("TABLE DATA public items" in e for e in entries)

    target = new_database(server_url)
    plain_pg_restore(archive, target, "--single-transaction")
    assert row_counts(target) == row_counts(small_db)
    assert row_counts(target)["public.items"] == 3000
    assert partitions(target) == partitions(small_db) and len(partitions(target)) == 2

    # an existing file is never replaced unasked, and stays as it was
    before = archive.read_bytes()
    archive.write_bytes(b"mine")
    with pytest.raises(ExportError, match=r"already exists — .*--force"):
        dbops_step(["backup", "export", backup_id, "--output", str(archive)], settings)
    assert archive.read_bytes() == b"mine" and leftovers(out_dir) == []
    assert dbops_step(["backup", "export", backup_id, "--output", str(archive), "--force"], settings) == 0
    assert archive.read_bytes() == before and leftovers(out_dir) == []
    with pytest.raises(ExportError, match="does not exist"):
        dbops_step(["backup", "export", backup_id, "--output", str(tmp_path / "nowhere" / "x.dump")], settings)
    with pytest.raises(ExportError, match=r"is a folder: export never replaces it, --force or not"):
        dbops_step(["backup", "export", backup_id, "--output", str(out_dir), "--force"], settings)
    assert sorted(p.name for p in out_dir.iterdir()) == ["shop.dump"]


def test_export_errors_name_the_problem_and_leave_no_file(small_db: str, pg_server: EmbeddedServer, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_key()
    settings = cli_settings(small_db, tmp_path, monkeypatch, key)
    assert dbops_step(["backup", "run"], settings) == 0
    backup_id = backup_id_of(capsys.readouterr().out)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    archive = out_dir / "x.dump"

    with pytest.raises(ManifestRejected, match=r"has no manifest in local directory .* see `dbops backup list`"):
        dbops_step(["backup", "export", "20990101T000000Z-logical-abcdef", "--output", str(archive)], settings)
    other = cli_settings(small_db, tmp_path, monkeypatch, generate_key())
    with pytest.raises(ManifestRejected, match="was encrypted with key .* set DBOPS_BACKUP_KEY to the key"):
        dbops_step(["backup", "export", backup_id, "--output", str(archive)], other)
    monkeypatch.delenv("DBOPS_BACKUP_KEY")
    with pytest.raises(ConfigError, match="no backup encryption key"):
        dbops_step(["backup", "export", backup_id, "--output", str(archive)], load_settings())
    assert list(out_dir.iterdir()) == []
    monkeypatch.setenv("DBOPS_BACKUP_KEY", key)  # the key is read when needed: the right one again

    # one byte flipped in the last chunk of the dump object (the chunks before it are written out first): the
    # checksum is named and the partial file removed
    obj = tmp_path / "store" / "backups" / backup_id / "dump.pgc.zst.enc"
    data = bytearray(obj.read_bytes())
    assert len(data) > 2 * (1 << 20)
    data[-10] ^= 0x01
    obj.write_bytes(bytes(data))
    with pytest.raises(BackupIntegrityError, match="fails its sha256 check"):
        dbops_step(["backup", "export", backup_id, "--output", str(archive)], settings)
    assert list(out_dir.iterdir()) == []

    # as an operator sees it: one line on stderr, exit 1, no file
    env = dbops_env(pg_server, small_db, tmp_path, DBOPS_BACKUP_DIR=str(tmp_path / "store"), DBOPS_BACKUP_KEY=key)
    done = run_dbops(["backup", "export", backup_id, "--output", str(archive)], env)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: object dump.pgc.zst.enc of backup") and "sha256" in lines[0]
    assert list(out_dir.iterdir()) == []
    done = run_dbops(["backup", "export", backup_id], env)
    assert done.returncode == 2 and "--output PATH" in done.stderr


PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def test_an_archive_pg_restore_cannot_read_is_not_left_behind(small_db: str, tmp_path: Path,
                                                              local_store: LocalStore, master_key: MasterKey) -> None:
    """The last check fails after the whole archive was written (PostgreSQL 15's pg_restore cannot read a dump of
    18): the error names pg_restore and the fix, and the written file is removed."""
    manifest = logical_backup(small_db, local_store, master_key)
    assert int(manifest["server_version"].split(".")[0]) > 15
    with pytest.raises(BackupIntegrityError, match=r"does not list with pg_restore .*unsupported version.* — use a "
                                                   r"pg_restore as new as the server"):
        export_logical(local_store, master_key, manifest["id"], tmp_path / "x.dump", bin_dir=PG15_BIN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_export_of_a_directory_format_backup_is_a_pg_dump_directory(small_db: str, server_url: str, tmp_path: Path,
                                                                     local_store: LocalStore,
                                                                     master_key: MasterKey) -> None:
    manifest = logical_backup(small_db, local_store, master_key, jobs=2, staging_root=tmp_path / "staging")
    output = tmp_path / "dumpdir"
    exported = export_logical(local_store, master_key, manifest["id"], output)
    assert exported.dump_format == "directory" and output.is_dir() and (output / "toc.dat").is_file()
    assert stat.S_IMODE(output.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in output.iterdir())
    assert sorted(p.name for p in output.iterdir()) == sorted(o["file"] for o in manifest["objects"])
    assert exported.entries == len(pg_restore_list(output)) and leftovers(tmp_path) == []
    with pytest.raises(ExportError, match="already exists"):
        export_logical(local_store, master_key, manifest["id"], output)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ExportError, match="not a pg_dump directory archive: export never replaces it"):
        export_logical(local_store, master_key, manifest["id"], mine, force=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (output / "extra").write_text("stale")
    export_logical(local_store, master_key, manifest["id"], output, force=True)
    assert not (output / "extra").exists() and leftovers(tmp_path) == []
    target = new_database(server_url)
    plain_pg_restore(output, target, "--jobs=2")
    assert row_counts(target) == row_counts(small_db)


def test_export_from_s3(small_db: str, server_url: str, tmp_path: Path, s3_store: S3Store,
                        master_key: MasterKey) -> None:
    manifest = logical_backup(small_db, s3_store, master_key)
    exported = export_logical(s3_store, master_key, manifest["id"], tmp_path / "from-s3.dump")
    assert exported.bytes == manifest["raw_bytes"] > 0
    target = new_database(server_url)
    plain_pg_restore(exported.path, target)
    assert row_counts(target) == row_counts(small_db)


def test_a_physical_base_backup_is_refused(pg_server: EmbeddedServer, tmp_path: Path, local_store: LocalStore,
                                           master_key: MasterKey) -> None:
    manifest = base_backup(pg_server.url("postgres"), local_store, master_key)
    with pytest.raises(ExportError, match=r"physical full base backup, not a pg_dump archive — .*dbops restore"):
        export_logical(local_store, master_key, manifest["id"], tmp_path / "base.tar")
    assert not (tmp_path / "base.tar").exists() and leftovers(tmp_path) == []


# ---- an independent decoder, written from docs/backup-format.md alone -------------------------------------------

MAGIC = b"DBOPSENC1"


def canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in manifest.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":")).encode()


def decode_object(sealed_stream: bytes, data_key: bytes, context: bytes) -> bytes:
    """One encrypted object: header, then length-prefixed AES-256-GCM chunks; returns the zstd plaintext."""
    assert sealed_stream[:9] == MAGIC, "not an encrypted object"
    header, prefix = sealed_stream[:17], sealed_stream[9:17]
    aead, pos, index, plain = AESGCM(data_key), 17, 0, bytearray()
    while True:
        length = int.from_bytes(sealed_stream[pos:pos + 4], "big")
        record = sealed_stream[pos + 4:pos + 4 + length]
        assert len(record) == length, "truncated"
        pos += 4 + length
        final = pos == len(sealed_stream)  # the last record of the object must be the one marked final
        nonce = prefix + index.to_bytes(4, "big")
        aad = header + context + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")
        plain += aead.decrypt(nonce, record, aad)  # raises InvalidTag on any change
        if final:
            return bytes(plain)
        index += 1


def unwrap(master: bytes, manifest: dict[str, Any]) -> bytes:
    """The backup's data key, unwrapped by the master key (its id checked first)."""
    enc = manifest["encryption"]
    assert enc["key_id"] == hashlib.sha256(b"dbops-key-id:" + master).hexdigest()[:16], "made with another key"
    return AESGCM(master).decrypt(base64.b64decode(enc["nonce"]), base64.b64decode(enc["wrapped_key"]),
                                  b"dbops-data-key:" + manifest["id"].encode())


def decode_backup(backup_dir: Path, master_b64: str, output: Path) -> dict[str, Any]:
    """Verify and decrypt the backup in ``backup_dir`` (a local store's ``backups/<id>``) into ``output``."""
    master = base64.b64decode(master_b64)
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    mac_key = hashlib.sha256(b"dbops-manifest:" + master).digest()
    assert hmac.compare_digest(hmac.new(mac_key, canonical(manifest), hashlib.sha256).hexdigest(),
                               manifest["signature"]), "manifest signature"
    assert manifest["id"] == backup_dir.name
    data_key = unwrap(master, manifest)
    directory = manifest["dump_format"] == "directory"
    if directory:
        output.mkdir()
    for obj in manifest["objects"]:
        sealed = (backup_dir / obj["name"]).read_bytes()
        assert len(sealed) == obj["size"] and hashlib.sha256(sealed).hexdigest() == obj["sha256"]
        compressed = decode_object(sealed, data_key, obj["name"].encode() if directory else b"")
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(compressed)
        assert len(plain) == obj["raw_size"]
        (output / obj["file"] if directory else output).write_bytes(plain)
    return manifest


@pytest.mark.parametrize("jobs", [None, 2], ids=["custom", "directory"])
def test_a_backup_decrypts_without_dbops_per_the_format_document(small_db: str, server_url: str, tmp_path: Path,
                                                                  jobs: int | None) -> None:
    master_b64 = generate_key()
    store = LocalStore(tmp_path / "store")
    made = logical_backup(small_db, store, MasterKey.from_text(master_b64), jobs=jobs,
                          staging_root=tmp_path / "staging")
    assert len(made["objects"]) == 1 if jobs is None else len(made["objects"]) > 1
    assert max(o["size"] for o in made["objects"]) > 2 * made["encryption"]["chunk_bytes"]  # several chunks
    decoded = tmp_path / "decoded"
    manifest = decode_backup(tmp_path / "store" / "backups" / made["id"], master_b64, decoded)
    assert manifest["id"] == made["id"]
    target = new_database(server_url)
    plain_pg_restore(decoded, target, *(["--jobs=2"] if jobs else ["--single-transaction"]))
    counts = row_counts(target)
    assert counts == row_counts(small_db)
    assert {t: f["rows"] for t, f in manifest["tables"].items()} == counts  # the manifest's figures agree

    # the decoder is strict too: a flipped byte of ciphertext fails authentication
    first = manifest["objects"][0]
    sealed = bytearray((tmp_path / "store" / "backups" / made["id"] / first["name"]).read_bytes())
    sealed[30] ^= 0x01
    data_key = unwrap(base64.b64decode(master_b64), manifest)
    context = first["name"].encode() if jobs else b""
    with pytest.raises(InvalidTag):
        decode_object(bytes(sealed), data_key, context)


def test_an_interrupted_export_leaves_nothing(fresh_db: str, pg_server: EmbeddedServer, tmp_path: Path) -> None:
    """SIGTERM while the archive is being written: exit 143, the temporary file removed, no PATH."""
    write_rows(fresh_db, "public.bulk", 1_000_000)
    key = generate_key()
    env = dbops_env(pg_server, fresh_db, tmp_path, DBOPS_BACKUP_DIR=str(tmp_path / "store"), DBOPS_BACKUP_KEY=key)
    done = run_dbops(["backup", "run"], env)
    assert done.returncode == 0, done.stderr
    backup_id = backup_id_of(done.stdout)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "dbops.cli", "backup", "export", backup_id, "--output",
                             str(out_dir / "bulk.dump")], env=env, cwd=PROJECT_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not leftovers(out_dir) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        seen = leftovers(out_dir)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen and seen[0].startswith(".bulk.dump.") and seen[0].endswith(".partial")  # caught mid-way
    assert proc.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stderr
    assert list(out_dir.iterdir()) == []

"""Logical backups: pg_dump in an exported snapshot, streamed through zstd and AES-256-GCM into the store.

Two dump formats:

- **custom** (the default): one ``pg_dump --format=custom`` stream piped straight through compression and encryption
  into one object. Nothing is written to local disk.
- **directory** (``jobs=N``): ``pg_dump --format=directory --jobs=N`` dumps N tables at a time. pg_dump can only write
  this format to a local directory, so **this mode stages the dump files, unencrypted, on this machine**, in a
  private directory under ``staging_root`` (``$DBOPS_HOME/staging/<pid>-<random>``, mode 0700, never the system
  temp dir; pg_dump's own compression off). Each file is compressed, encrypted (its name bound into the
  authenticated data) and uploaded as its own object as soon as pg_dump has closed it, then deleted; the staging
  directory is removed at the end, also on failure, Ctrl-C or SIGTERM, and pg_dump dies with dbops even on SIGKILL
  (the next backup then removes the killed run's staging directory; see :mod:`dbops.staging`). Staging needs at most
  the raw size of the dump in free space (less while uploads keep up).

:func:`export_logical` (``dbops backup export ID --output PATH``) writes a logical backup back out as the plain
pg_dump archive it was made from (a file, or a directory-format folder), checked, for ``pg_restore`` without dbops.

The figures the restore drill compares (rows and content checksum per table) are read in the same snapshot that
pg_dump dumps, on the exporting connection while pg_dump runs, so they describe exactly the data in the backup, even
while the application keeps writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from dbops.backup.figures import table_figures
from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.manifest import discard, load_manifest, new_backup_id, now_iso, object_key, save_manifest
from dbops.backup.objects import object_plaintext
from dbops.backup.progress import ByteMeter, Progress, mib, report
from dbops.backup.store import ObjectMissing, Store
from dbops.backup.stream import CHUNK, ProcessOutput, compress, encrypt, read_file
from dbops.errors import CommandFailed, DbopsError
from dbops.pg.binaries import client_bin_dir, find_program
from dbops.pg.connect import connect, database_name, split_password
from dbops.programs import finish_process, run_command, start_process, stop_process
from dbops.staging import remove_leftovers, staging_dir

DUMP_OBJECT = "dump.pgc.zst.enc"
DIRECTORY_PREFIX = "dump.d/"  # objects of a directory-format dump: dump.d/<pg_dump's file name>.zst.enc
OBJECT_SUFFIX = ".zst.enc"
ZSTD_LEVEL = 3
POLL_SECONDS = 0.2
DUMP_TIMEOUT = 6 * 3600.0


DATABASE_SETTINGS = """
SELECT r.rolname, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY r.rolname NULLS FIRST
"""


def read_database_settings(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """The database's own settings (``ALTER DATABASE d SET``: ``role`` None; ``ALTER ROLE r IN DATABASE d SET``:
    ``role`` r), each ``name=value`` as PostgreSQL stores it: what a pg_dump archive only carries with ``--create``,
    and what a restore into another database must set again (a ``search_path`` an application relies on, say)."""
    return [{"role": role, "settings": list(config or [])}
            for role, config in conn.execute(DATABASE_SETTINGS).fetchall()]


def directory_object_name(file_name: str) -> str:
    return f"{DIRECTORY_PREFIX}{file_name}{OBJECT_SUFFIX}"


def logical_backup(
    url: str,
    store: Store,
    key: MasterKey,
    *,
    bin_dir: Path | None = None,
    progress: Progress | None = None,
    extra_args: list[str] | None = None,
    jobs: int | None = None,
    staging_root: Path | None = None,
) -> dict[str, Any]:
    """Take a logical backup of ``url`` into ``store``; return its manifest (already stored, so now "latest").

    ``jobs`` (≥ 1) selects the directory format dumped by that many pg_dump workers, staged locally under
    ``staging_root`` (see above; :attr:`dbops.settings.Settings.staging_root`), which it then requires. Staging
    directories left by killed runs under ``staging_root`` are removed first.
    """
    if jobs is not None and jobs < 1:
        raise ValueError("jobs must be at least 1")
    if jobs is not None and staging_root is None:
        raise ValueError("a directory-format dump (jobs) stages files locally: pass staging_root "
                         "(Settings.staging_root, $DBOPS_HOME/staging)")
    if staging_root is not None and staging_root.is_dir():
        remove_leftovers(staging_root)
    backup_id = new_backup_id("logical")
    started = time.monotonic()
    data_key = os.urandom(32)
    bare_url, password = split_password(url)
    conn = connect(url, autocommit=False)
    stored: list[str] = []  # object keys written so far: removed again if the backup fails
    figures_future: Future[dict[str, dict[str, Any]]] | None = None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbops-figures")
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET lock_timeout = '5min'")  # an exclusive lock held elsewhere fails the backup, never hangs it
        info = conn.execute(
            "SELECT pg_export_snapshot(), current_setting('server_version'), "
            "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text"
        ).fetchone()
        snapshot_id, server_version, lsn = info  # type: ignore[misc]
        database_settings = read_database_settings(conn)
        started_at = now_iso()
        # --create: the archive also carries the database's own properties (ALTER DATABASE ... SET, its grants and
        # comment), which `pg_restore --create` applies and a restore into another database skips.
        common = ["-Z", "0", "--create", f"--snapshot={snapshot_id}", "--no-password", f"--dbname={bare_url}",
                  *(extra_args or [])]
        pg_dump = find_program("pg_dump", client_bin_dir(bin_dir, int(server_version.split(".")[0])))
        meter = ByteMeter(progress, "pg_dump")
        if jobs is None:
            proc = start_process([pg_dump, "--format=custom", *common], password=password, stdout=subprocess.PIPE)
            report(progress, f"pg_dump started: database {database_name(url)}, custom format, one stream into "
                             f"{store.describe()} (backup {backup_id})")
            figures_future = pool.submit(table_figures, conn)  # the exporting transaction, while pg_dump runs
            objects = [_stream_custom(proc, store, backup_id, data_key, meter, stored)]
            tool = "pg_dump --format=custom -Z 0 --create"
        else:
            assert staging_root is not None
            with staging_dir(staging_root) as staging:
                dump_dir = staging / "dump"
                # --no-sync: each file is read back and uploaded at once; fsyncing the staging area is wasted work
                # (and would race with the files already uploaded and deleted).
                proc = start_process([pg_dump, "--format=directory", f"--jobs={jobs}", "--no-sync",
                                      f"--file={dump_dir}", *common],
                                     password=password, stdout=subprocess.DEVNULL)
                report(progress, f"pg_dump started: database {database_name(url)}, directory format, {jobs} jobs, "
                                 f"staged in {staging} (backup {backup_id})")
                figures_future = pool.submit(table_figures, conn)
                objects = _upload_directory(proc, dump_dir, store, backup_id, data_key, meter, stored)
            tool = f"pg_dump --format=directory --jobs={jobs} --no-sync -Z 0 --create"
        report(progress, f"pg_dump finished: {mib(sum(o['raw_size'] for o in objects))} dumped, "
                         f"{mib(sum(o['size'] for o in objects))} stored in {len(objects)} object(s), "
                         f"{time.monotonic() - started:.1f} s")
        figures = figures_future.result()
        report(progress, f"table figures read in the dump's snapshot: {len(figures)} table(s), "
                         f"{sum(t['rows'] for t in figures.values())} row(s)")
    except BaseException:
        if figures_future is not None and not figures_future.done():
            with contextlib.suppress(Exception):  # stop the figures query; its error is not the one to report
                conn.cancel_safe()
        pool.shutdown(wait=True)
        conn.close()
        for name in stored:
            discard(store, name)
        raise
    pool.shutdown(wait=True)
    conn.close()

    raw_bytes = sum(o["raw_size"] for o in objects)
    stored_bytes = sum(o["size"] for o in objects)
    manifest: dict[str, Any] = {  # "format" is set by save_manifest, the one writer
        "id": backup_id,
        "kind": "logical",
        "dump_format": "custom" if jobs is None else "directory",
        "jobs": jobs or 1,
        "parent": None,
        "database": database_name(url),
        "server_version": server_version,
        "start_lsn": lsn,
        "snapshot": snapshot_id,
        "started_at": started_at,
        "finished_at": now_iso(),
        "duration_seconds": round(time.monotonic() - started, 3),
        "tool": tool,
        "objects": objects,
        "raw_bytes": raw_bytes,
        "stored_bytes": stored_bytes,
        "compression": {"algorithm": "zstd", "level": ZSTD_LEVEL},
        "encryption": {"algorithm": "AES-256-GCM", "chunk_bytes": CHUNK, **key.wrap(data_key, backup_id)},
        "tables": figures,
        "database_settings": database_settings,
    }
    try:
        save_manifest(store, key, manifest)
    except BaseException:
        for name in stored:
            discard(store, name)
        raise
    report(progress, f"manifest signed and stored: backup {backup_id} complete in {manifest['duration_seconds']} s")
    return manifest


def _stream_custom(proc: subprocess.Popen[bytes], store: Store, backup_id: str, data_key: bytes,
                   meter: ByteMeter, stored: list[str]) -> dict[str, Any]:
    """pg_dump's stdout → zstd → AES-GCM → one object; pg_dump's failure fails the upload before it completes."""
    output = ProcessOutput(proc, "pg_dump", DUMP_TIMEOUT)
    stored_key = object_key(backup_id, DUMP_OBJECT)
    stored.append(stored_key)
    try:
        result = store.put(stored_key, encrypt(compress(output, ZSTD_LEVEL), data_key), meter.for_object())
    except BaseException:
        stop_process(proc)
        raise
    return {"name": DUMP_OBJECT, "size": result.size, "sha256": result.sha256, "raw_size": output.bytes}


def _upload_directory(proc: subprocess.Popen[bytes], dump_dir: Path, store: Store, backup_id: str, data_key: bytes,
                      meter: ByteMeter, stored: list[str]) -> list[dict[str, Any]]:
    """Upload each file of pg_dump's directory once pg_dump has closed it; the rest (toc.dat) when it exits."""
    objects: list[dict[str, Any]] = []

    def upload(path: Path) -> None:
        name = directory_object_name(path.name)
        stored_key = object_key(backup_id, name)
        stored.append(stored_key)
        with open(path, "rb") as handle:
            chunks = encrypt(compress(read_file(handle), ZSTD_LEVEL), data_key, name.encode())
            result = store.put(stored_key, chunks, meter.for_object())
        objects.append({"name": name, "file": path.name, "size": result.size, "sha256": result.sha256,
                        "raw_size": path.stat().st_size})
        meter.offset(result.size)
        path.unlink()  # keep the staging area small: it only holds what is not uploaded yet

    deadline = time.monotonic() + DUMP_TIMEOUT
    try:
        while proc.poll() is None:
            for path in _closed_files(dump_dir, proc):
                upload(path)
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        finish_process(proc, "pg_dump", timeout=10)
        for path in sorted(p for p in dump_dir.iterdir() if p.is_file()):
            upload(path)
    except BaseException:
        stop_process(proc)
        raise
    return objects


def _closed_files(dump_dir: Path, proc: subprocess.Popen[bytes]) -> list[Path]:
    """Files pg_dump (leader and workers) created and no longer holds open: complete, as it never reopens one."""
    if not dump_dir.is_dir():
        return []
    present = sorted(p for p in dump_dir.iterdir() if p.is_file())  # listed *before* looking at open files
    if not present:
        return []
    open_now: set[str] = set()
    try:
        leader = psutil.Process(proc.pid)
        for member in [leader, *leader.children(recursive=True)]:
            try:
                open_now.update(f.path for f in member.open_files())
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
    except psutil.NoSuchProcess:
        return []  # pg_dump just exited: its remaining files are uploaded after its exit status is known
    return [p for p in present if str(p) not in open_now and str(p.resolve()) not in open_now]



# ---- export ---------------------------------------------------------------------------------------------------

EXPORT_TIMEOUT = 600.0  # seconds for `pg_restore --list` of an exported archive


class ExportError(DbopsError):
    """A backup cannot be exported to the path given."""


@dataclass(frozen=True)
class Exported:
    backup_id: str
    path: Path
    dump_format: str  # "custom": one file; "directory": a pg_dump directory-format archive (a folder)
    bytes: int  # plain archive bytes written
    entries: int  # entries of the archive's table of contents, as `pg_restore --list` lists them
    database_settings: list[str]  # the database's own settings, which only `pg_restore --create` applies


def export_logical(store: Store, key: MasterKey, backup_id: str, output: Path, *, force: bool = False,
                   bin_dir: Path | None = None) -> Exported:
    """Write the plain pg_dump archive of logical backup ``backup_id`` to ``output``: what ``pg_restore`` reads with
    no dbops around (docs/backup-format.md).

    The manifest is verified (key, signature, folder, prefix), every object is read once, its size and sha256
    compared with the manifest while it is decrypted (every AES-GCM chunk authenticated) and decompressed, and the
    result must list with ``pg_restore --list``. A custom-format backup becomes one file, a directory-format one
    (``backup run --jobs N``) a pg_dump directory archive (a folder, restorable with ``pg_restore --jobs``).

    Written atomically: into a temporary name in ``output``'s folder (a file 0600, a folder 0700 of 0600 files),
    renamed to ``output`` only once checked, and removed on any failure or interruption, so ``output`` is either
    absent, the old file untouched, or the complete archive. An existing ``output`` is refused unless ``force``.
    A physical base backup is refused: it is a cluster, not a pg_dump archive (see the format document).
    """
    manifest = load_manifest(store, backup_id, key)
    if manifest.get("kind") != "logical":
        raise ExportError(
            f"backup {backup_id} is a physical {manifest.get('kind')} base backup, not a pg_dump archive",
            f"restore it into a data directory with `dbops restore {backup_id} --target DIR`, or export a logical "
            "backup (see `dbops backup list`)")
    output = Path(os.path.abspath(output))
    folder = output.parent
    if not folder.is_dir():
        raise ExportError(f"the folder of {output} does not exist", "create it first, or choose another --output")
    directory = manifest.get("dump_format") == "directory"
    if output.is_dir() and not output.is_symlink() and not (directory and (output / "toc.dat").is_file()):
        what = "a folder that is not a pg_dump directory archive" if directory else "a folder"
        suggestion = output / (backup_id if directory else f"{backup_id}.dump")
        raise ExportError(f"{output} is {what}: export never replaces it, --force or not",
                          f"give the archive's own path (--output {suggestion})")
    if (output.exists() or output.is_symlink()) and not force:
        raise ExportError(f"{output} already exists", "choose another --output, or pass --force to replace it")
    objects = manifest.get("objects") or []
    if not objects or (not directory and len(objects) != 1):
        raise BackupIntegrityError(f"the manifest of backup {backup_id} lists {len(objects)} object(s) for a "
                                   f"{manifest.get('dump_format', 'custom')}-format dump", "take a new backup")
    data_key = key.unwrap(manifest["encryption"], backup_id)
    pg_restore = find_program("pg_restore", client_bin_dir(bin_dir, _major(manifest)))
    partial = folder / f".{output.name}.{uuid.uuid4().hex[:8]}.partial"
    written = 0
    try:
        if directory:
            partial.mkdir(mode=0o700)
            for obj in objects:
                file_name = str(obj.get("file", ""))
                if not file_name or Path(file_name).name != file_name or file_name.startswith("."):
                    raise BackupIntegrityError(f"object {obj.get('name')} of backup {backup_id} has no valid file "
                                               "name in the manifest", "take a new backup")
                written += _export_object(store, data_key, manifest, obj, partial / file_name, folder, output)
        else:
            written = _export_object(store, data_key, manifest, objects[0], partial, folder, output)
        try:
            listing = run_command([pg_restore, "--list", partial], timeout=EXPORT_TIMEOUT)
        except CommandFailed as exc:
            raise BackupIntegrityError(f"the archive of backup {backup_id} does not list with pg_restore "
                                       f"({pg_restore}): {exc.problem}",
                                       "use a pg_restore as new as the server that dumped it (DBOPS_PG_BIN), or "
                                       "take a new backup") from exc
        entries = sum(1 for line in listing.stdout.splitlines() if line.strip() and not line.startswith(";"))
        _place(partial, output, force)
    except BaseException:
        _remove(partial)
        raise
    settings = [f"{item}" + (f" (role {entry['role']})" if entry.get("role") else "")
                for entry in manifest.get("database_settings") or [] for item in entry.get("settings") or []]
    return Exported(backup_id, output, "directory" if directory else "custom", written, entries, settings)


def _major(manifest: dict[str, Any]) -> int:
    found = re.match(r"\d+", str(manifest.get("server_version", "")))
    if not found:
        raise BackupIntegrityError(f"the manifest of backup {manifest['id']} has no server version",
                                   "take a new backup")
    return int(found.group())


def _export_object(store: Store, data_key: bytes, manifest: dict[str, Any], obj: dict[str, Any], path: Path,
                   folder: Path, output: Path) -> int:
    """Decrypt and decompress one object into ``path`` (0600, fsynced), checking size and sha256 on the way; a
    damaged object is reported by its checksum first (as `dbops backup verify` does). Returns the bytes written."""
    name = f"object {obj['name']} of backup {manifest['id']}"
    written = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for block in object_plaintext(store, data_key, manifest, obj):
                out.write(block)
                written += len(block)
            out.flush()
            os.fsync(out.fileno())
    except ObjectMissing as exc:
        raise BackupIntegrityError(f"{name} is missing from {store.describe()}",
                                   "the backup cannot be exported; take a new one") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ExportError(f"no space left in {folder} while exporting {manifest['id']}",
                              "free space there, or choose another --output") from exc
        raise ExportError(f"cannot write {output}: {exc.strerror}", "check the folder, or choose another --output"
                          ) from exc
    if obj.get("raw_size") is not None and written != obj["raw_size"]:
        raise BackupIntegrityError(f"{name} decrypts to {written} bytes, manifest says {obj['raw_size']}",
                                   "the backup is not what its manifest says; take a new backup")
    return written


def _place(partial: Path, output: Path, force: bool) -> None:
    """Rename the checked archive to ``output``: never over an existing one unless ``force``."""
    if not force:
        if partial.is_dir():
            if output.exists() or output.is_symlink():
                raise ExportError(f"{output} already exists", "choose another --output, or pass --force to replace it")
            partial.rename(output)
        else:
            try:
                os.link(partial, output)  # fails if output appeared meanwhile: never replaces it
            except FileExistsError as exc:
                raise ExportError(f"{output} already exists",
                                  "choose another --output, or pass --force to replace it") from exc
            partial.unlink()
    elif partial.is_dir() or output.is_dir():
        old = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.old")
        had_old = output.exists() or output.is_symlink()
        if had_old:
            output.rename(old)
        try:
            partial.rename(output)
        except BaseException:
            if had_old:
                old.rename(output)
            raise
        if had_old:
            _remove(old)
    else:
        os.replace(partial, output)
    fd = os.open(output.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

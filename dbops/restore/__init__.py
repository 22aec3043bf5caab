"""Restores and restore drills: prove a backup brings the data back, and measure how long it takes.

A drill verifies every object's sha256, then restores the backup into a scratch database: a custom-format dump is
streamed through decryption and decompression into pg_restore (one transaction: a failed restore leaves an empty
scratch database); a directory-format dump is decrypted into a private local directory (``$DBOPS_HOME/staging``,
0700; removed afterwards, also on failure or SIGTERM) and restored by ``pg_restore --jobs`` (not one transaction: a
failed drill drops the scratch database). It then compares rows and content checksums of every table with the
manifest and runs amcheck on every btree index, both shared out over two connections, and drops the scratch database,
also on failure, unless the caller asked to keep the restored copy.
"""

from __future__ import annotations

import hashlib
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from dbops.backup.figures import compare_figures, hash_methods, leaf_tables, table_figure
from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.manifest import latest, load_manifest, object_key, verify_objects
from dbops.backup.store import ObjectMissing, Store
from dbops.backup.stream import decompress, decrypt
from dbops.errors import DbopsError
from dbops.pg.commands import client_bin_dir, find_program, finish_process, run_command, start_process
from dbops.pg.connect import (
    connection,
    database_name,
    drop_database,
    ensure_database,
    server_major,
    split_password,
    with_database,
)
from dbops.staging import remove_leftovers, staging_dir

RTO_TARGET_SECONDS = 1800.0
RESTORE_TIMEOUT = 6 * 3600.0
VERIFY_CONNECTIONS = 2


class RestoreError(DbopsError):
    """A restore cannot proceed."""


@dataclass
class DrillResult:
    backup_id: str
    phases: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    tables_checked: int = 0
    rows_checked: int = 0
    indexes_checked: int = 0
    restored_url: str | None = None  # set when the copy was kept

    @property
    def rto_seconds(self) -> float:
        return round(sum(self.phases.values()), 3)

    @property
    def data_matches(self) -> bool:
        return not self.problems


def choose_backup(store: Store, key: MasterKey, backup_id: str | None) -> dict[str, Any]:
    if backup_id:
        return load_manifest(store, backup_id, key)
    newest = latest(store, key, "logical")
    if newest is None:
        raise RestoreError(f"there is no complete logical backup in {store.describe()}", "run `dbops backup run` first")
    return load_manifest(store, newest["id"], key)


def database_is_empty(url: str) -> bool:
    with connection(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchone()
        return row[0] == 0  # type: ignore[index]


class _Prefetched:
    """Produces chunks (download + decrypt + decompress) in a thread, a few ahead, so pg_restore works on one chunk
    while the next is being decrypted; ``waited`` is the time the consumer still had to wait for data.

    At most ``depth`` chunks are queued: memory stays bounded. ``close`` stops the producer early.
    """

    _END = object()

    def __init__(self, chunks: Iterable[bytes], depth: int = 4) -> None:
        self.waited = 0.0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(chunks,), name="dbops-restore-read", daemon=True)
        self._thread.start()

    def _produce(self, chunks: Iterable[bytes]) -> None:
        try:
            for chunk in chunks:
                if not self._offer(chunk):
                    return
            self._offer(self._END)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._offer(exc)

    def _offer(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            began = time.monotonic()
            item = self._queue.get()
            self.waited += time.monotonic() - began
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# Databases a logical restore never writes into unless the caller names them (see check_logical_target).
ALWAYS_PROTECTED = {"postgres": "PostgreSQL's maintenance database"}


def check_logical_target(target_url: str, *, force: bool = False, protected: Mapping[str, str] | None = None,
                         allow_overwrite: str | None = None) -> None:
    """Refuse a restore into a protected database (``postgres``, and the ``protected`` ones: name -> what it is)
    unless ``allow_overwrite`` repeats its name, and into a non-empty database unless ``force``.

    Checked before anything is read from the store, so a wrong target fails at once and nothing is touched.
    """
    name = unquote(database_name(target_url))
    guarded = {**ALWAYS_PROTECTED, **(protected or {})}
    if name in guarded and allow_overwrite != name:
        raise RestoreError(f"target database {name} is {guarded[name]}: a restore never writes into it unasked",
                           f"restore into a new database, or pass --allow-overwrite {name} if you mean it")
    if not force and not database_is_empty(target_url):
        raise RestoreError(f"target database {name} is not empty",
                           "restore into a new database, or pass --force to restore on top of it")


def verify_backup(store: Store, key: MasterKey, manifest: dict[str, Any]) -> None:
    """Prove every object of a backup intact before a restore touches its target: size and sha256 against the
    manifest and a full decryption (every AES-GCM chunk authenticated, the zstd stream complete), output discarded,
    in one read of each object. The first bad object is named."""
    data_key = key.unwrap(manifest["encryption"], manifest["id"])
    for obj in manifest["objects"]:
        _verify_object(store, data_key, manifest, obj)


def _verify_object(store: Store, data_key: bytes, manifest: dict[str, Any], obj: dict[str, Any]) -> None:
    name = f"object {obj['name']} of backup {manifest['id']}"
    digest, size = hashlib.sha256(), 0

    def raw() -> Iterator[bytes]:
        nonlocal size
        for chunk in store.get(object_key(manifest["id"], obj["name"])):
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    stream = raw()
    failure: BackupIntegrityError | None = None
    try:
        for _ in decompress(decrypt(stream, data_key, name, object_context(manifest, obj)), name):
            pass
    except ObjectMissing as exc:
        raise BackupIntegrityError(f"{name} is missing", "the backup cannot be restored; take a new one") from exc
    except BackupIntegrityError as exc:
        failure = exc
        for _ in stream:  # read the rest: a damaged object is reported by its checksum first
            pass
    if size != obj["size"] or digest.hexdigest() != obj["sha256"]:
        raise BackupIntegrityError(f"{name} fails its sha256 check ({size} bytes, manifest says {obj['size']})",
                                   "the object was modified or damaged; take a new backup") from failure
    if failure is not None:
        raise failure


def object_context(manifest: dict[str, Any], obj: dict[str, Any]) -> bytes:
    """What an object's encryption authenticates besides its chunks: its name in a directory-format dump (so two
    objects cannot be swapped), nothing in a single-object backup."""
    return str(obj["name"]).encode() if manifest.get("dump_format") == "directory" else b""


def restore_logical(store: Store, key: MasterKey, manifest: dict[str, Any], target_url: str, *, force: bool = False,
                    bin_dir: Path | None = None, jobs: int | None = None,
                    staging_root: Path | None = None, protected: Mapping[str, str] | None = None,
                    allow_overwrite: str | None = None) -> dict[str, float]:
    """Restore a logical backup into ``target_url`` (which must be empty unless ``force``, and not a protected
    database unless ``allow_overwrite`` names it: :func:`check_logical_target`); return phase timings.

    A directory-format backup is staged in a temporary local directory (under ``staging_root``) and restored with
    ``pg_restore --jobs`` (``jobs``, default: as many as dumped it).
    """
    check_logical_target(target_url, force=force, protected=protected, allow_overwrite=allow_overwrite)
    data_key = key.unwrap(manifest["encryption"], manifest["id"])
    bin_dir = client_bin_dir(bin_dir, server_major(target_url))
    if manifest.get("dump_format") == "directory":
        return _restore_directory(store, data_key, manifest, target_url, bin_dir=bin_dir,
                                  jobs=jobs or int(manifest.get("jobs", 2)), staging_root=staging_root)
    obj = manifest["objects"][0]
    name = f"object {obj['name']} of backup {manifest['id']}"
    bare_url, password = split_password(target_url)
    began = time.monotonic()
    stream = _Prefetched(decompress(decrypt(store.get(object_key(manifest["id"], obj["name"])), data_key, name), name))
    try:
        proc = start_process([find_program("pg_restore", bin_dir), "--single-transaction", "--exit-on-error",
                              "--no-password", f"--dbname={bare_url}"],
                             password=password, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert proc.stdin is not None
        _widen_pipe(proc.stdin.fileno())
        try:
            for chunk in stream:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped early: its own error is reported below
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    finally:
        stream.close()
    finish_process(proc, "pg_restore", timeout=RESTORE_TIMEOUT)
    total = time.monotonic() - began
    # Decryption overlaps pg_restore; only the time pg_restore was kept waiting for data is counted as its phase.
    return {"decrypt_decompress": round(stream.waited, 3), "restore": round(total - stream.waited, 3)}


def _widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """A 1 MiB pipe (Linux) instead of 64 KiB, so pg_restore has a whole chunk to read while the next is decrypted."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works, a little slower


def _restore_directory(store: Store, data_key: bytes, manifest: dict[str, Any], target_url: str, *,
                       bin_dir: Path | None, jobs: int, staging_root: Path | None) -> dict[str, float]:
    """Decrypt every object into a private local dump directory, ``pg_restore --jobs`` it, remove the directory.

    The directory is ``<staging_root>/<pid>-<random>`` (0700, see :mod:`dbops.staging`): removed at the end, also on
    failure, Ctrl-C or SIGTERM; pg_restore and its workers die with dbops even on SIGKILL.
    """
    if staging_root is None:
        raise ValueError("a directory-format backup is restored from local files: pass staging_root "
                         "(Settings.staging_root, $DBOPS_HOME/staging)")
    with staging_dir(staging_root) as staging:
        dump_dir = staging / "dump"
        dump_dir.mkdir(mode=0o700)
        began = time.monotonic()
        stop = threading.Event()  # set when the restore fails or is interrupted: the other writers stop at once

        def stage(obj: dict[str, Any]) -> None:
            name = f"object {obj['name']} of backup {manifest['id']}"
            file_name = str(obj.get("file", ""))
            if not file_name or Path(file_name).name != file_name or file_name.startswith("."):
                raise BackupIntegrityError(f"{name} has no valid file name in the manifest", "take a new backup")
            chunks = decrypt(store.get(object_key(manifest["id"], obj["name"])), data_key, name, obj["name"].encode())
            try:
                with open(dump_dir / file_name, "wb") as out:
                    for chunk in decompress(chunks, name):
                        if stop.is_set():
                            return
                        out.write(chunk)
            except OSError as exc:
                raise RestoreError(f"cannot stage {name} in {staging}: {exc.strerror}",
                                   f"free space where {staging_root} is (DBOPS_HOME), or restore a custom-format "
                                   "backup, which needs no local space") from exc

        biggest_first = sorted(manifest["objects"], key=lambda o: -int(o.get("size", 0)))
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="dbops-stage") as pool:
            futures = [pool.submit(stage, obj) for obj in biggest_first]
            try:
                for done in futures:
                    done.result()
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()  # those not started yet; the running ones stop at their next chunk
                raise
        staged = time.monotonic() - began
        bare_url, password = split_password(target_url)
        began = time.monotonic()
        run_command([find_program("pg_restore", bin_dir), f"--jobs={max(1, jobs)}", "--exit-on-error",
                     "--no-password", f"--dbname={bare_url}", str(dump_dir)],
                    password=password, timeout=RESTORE_TIMEOUT)
        restored = time.monotonic() - began
    return {"decrypt_decompress": round(staged, 3), "restore": round(restored, 3)}


BTREE_INDEXES = """
SELECT c.oid::regclass::text, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.amname = 'btree' AND i.indisvalid AND c.relkind = 'i' AND n.nspname <> 'pg_toast'
ORDER BY 2 DESC, 1
"""


def amcheck_all(url: str) -> int:
    """bt_index_check on every valid btree index; return how many were checked (raises on corruption)."""
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        indexes = conn.execute(BTREE_INDEXES).fetchall()
        for index, _ in indexes:
            conn.execute("SELECT bt_index_check(%s::regclass)", [index])
        return len(indexes)


def verify_restored(url: str, connections: int = VERIFY_CONNECTIONS,
                    methods: dict[str, str] | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Figures of every table and bt_index_check of every btree index, shared out over ``connections``.

    The same checks as :func:`~dbops.backup.figures.table_figures` plus :func:`amcheck_all`, run side by side:
    the biggest relations first, each connection taking the next one when it is free, so they finish together.
    ``methods`` gives the row hash per table (a manifest's). Returns the figures and the number of indexes
    checked; raises the first error (corruption included).
    """
    methods = methods or {}
    with connection(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        tasks: list[tuple[int, str, tuple[str, ...]]] = [(size, "table", (schema, table))
                                                         for schema, table, size in leaf_tables(conn)]
        indexes = conn.execute(BTREE_INDEXES).fetchall()
        tasks += [(int(size), "index", (index,)) for index, size in indexes]
    tasks.sort(key=lambda t: -t[0])
    figures: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            with connection(url) as conn:
                while True:
                    with lock:
                        if errors or not tasks:
                            return
                        _, kind, names = tasks.pop(0)
                    if kind == "table":
                        figure = table_figure(conn, *names, methods.get(".".join(names), "record"))
                        with lock:
                            figures[".".join(names)] = figure
                    else:
                        conn.execute("SELECT bt_index_check(%s::regclass)", [names[0]])
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work, name=f"dbops-verify-{n}", daemon=True)
               for n in range(max(1, connections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return dict(sorted(figures.items())), len(indexes)


def drill(url: str, store: Store, key: MasterKey, *, backup_id: str | None = None, keep: bool = False,
          scratch_name: str | None = None, bin_dir: Path | None = None, jobs: int | None = None,
          staging_root: Path | None = None) -> DrillResult:
    """Restore a backup into a scratch database on ``url``'s server and prove it matches the manifest.

    A directory-format backup is staged under ``staging_root`` (required for one); staging directories left there by
    killed runs are removed first.
    """
    if staging_root is not None and staging_root.is_dir():
        remove_leftovers(staging_root)
    t0 = time.monotonic()
    manifest = choose_backup(store, key, backup_id)
    result = DrillResult(manifest["id"])
    verify_objects(store, manifest)
    result.phases["download_verify"] = round(time.monotonic() - t0, 3)
    scratch = scratch_name or f"dbops_drill_{uuid.uuid4().hex[:10]}"
    ensure_database(url, scratch)
    scratch_url = with_database(url, scratch)
    try:
        result.phases.update(restore_logical(store, key, manifest, scratch_url, bin_dir=bin_dir, jobs=jobs,
                                             staging_root=staging_root))
        t1 = time.monotonic()
        actual, result.indexes_checked = verify_restored(scratch_url, methods=hash_methods(manifest["tables"]))
        result.problems = compare_figures(manifest["tables"], actual)
        result.tables_checked = len(actual)
        result.rows_checked = sum(t["rows"] for t in actual.values())
        result.phases["verify"] = round(time.monotonic() - t1, 3)
    except BaseException:
        drop_database(url, scratch)
        raise
    if keep:
        result.restored_url = scratch_url
    else:
        drop_database(url, scratch)
    return result


@contextmanager
def restored_copy(url: str, store: Store, key: MasterKey, backup_id: str | None = None, *,
                  staging_root: Path | None = None) -> Iterator[str]:
    """The latest (or given) backup restored into a scratch database on ``url``'s server, dropped on exit.

    For later steps that need yesterday's data without touching production: index verification, migration
    rehearsal. ``staging_root`` as for :func:`drill`.
    """
    result = drill(url, store, key, backup_id=backup_id, keep=True, staging_root=staging_root)
    if not result.data_matches:
        drop_database(url, result.restored_url.rsplit("/", 1)[-1])  # type: ignore[union-attr]
        raise BackupIntegrityError(f"backup {result.backup_id} restored with differences: {result.problems[0]}",
                                   "take a new backup")
    try:
        yield result.restored_url  # type: ignore[misc]
    finally:
        drop_database(url, result.restored_url.rsplit("/", 1)[-1])  # type: ignore[union-attr]


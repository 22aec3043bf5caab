"""Logical restores: a pg_dump backup back into a database, every object proven first.

A custom-format dump is streamed through decryption and decompression into pg_restore (one transaction: a failed
restore leaves an empty database); a directory-format dump is decrypted into a private local directory
(``$DBOPS_HOME/staging``, 0700; removed afterwards, also on failure or SIGTERM) and restored by ``pg_restore --jobs``
(not one transaction). A restore never writes into a protected database (``postgres``, the managed one, Dagster's)
unasked, nor into a non-empty one without ``force``.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import sql

from dbops.backup.keys import BackupIntegrityError, MasterKey
from dbops.backup.manifest import object_key
from dbops.backup.progress import ByteMeter, Progress, report
from dbops.backup.store import Store
from dbops.backup.stream import decompress, decrypt
from dbops.errors import DbopsError
from dbops.pg.binaries import client_bin_dir, find_program
from dbops.pg.connect import connection, database_name, server_major, split_password
from dbops.programs import finish_process, run_command, start_process
from dbops.staging import staging_dir

RESTORE_TIMEOUT = 6 * 3600.0


class RestoreError(DbopsError):
    """A restore cannot proceed."""



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



def restore_logical(store: Store, key: MasterKey, manifest: dict[str, Any], target_url: str, *, force: bool = False,
                    bin_dir: Path | None = None, jobs: int | None = None,
                    staging_root: Path | None = None, protected: Mapping[str, str] | None = None,
                    allow_overwrite: str | None = None, progress: Progress | None = None) -> dict[str, float]:
    """Restore a logical backup into ``target_url`` (which must be empty unless ``force``, and not a protected
    database unless ``allow_overwrite`` names it: :func:`check_logical_target`); return phase timings.

    A directory-format backup is staged in a temporary local directory (under ``staging_root``) and restored with
    ``pg_restore --jobs`` (``jobs``, default: as many as dumped it). ``progress`` gets a line when pg_restore starts
    (and, for a directory-format backup, when its objects are staged).
    """
    check_logical_target(target_url, force=force, protected=protected, allow_overwrite=allow_overwrite)
    data_key = key.unwrap(manifest["encryption"], manifest["id"])
    bin_dir = client_bin_dir(bin_dir, server_major(target_url))
    if manifest.get("dump_format") == "directory":
        phases = _restore_directory(store, data_key, manifest, target_url, bin_dir=bin_dir,
                                    jobs=jobs or int(manifest.get("jobs", 2)), staging_root=staging_root,
                                    progress=progress)
        apply_database_settings(target_url, manifest.get("database_settings") or [])
        return phases
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
        report(progress, f"pg_restore started: backup {manifest['id']} streamed into database "
                         f"{unquote(database_name(target_url))} (one transaction)")
        _widen_pipe(proc.stdin.fileno())
        meter, fed = ByteMeter(progress, "pg_restore", verb="fed"), 0
        try:
            for chunk in stream:
                proc.stdin.write(chunk)
                fed += len(chunk)
                meter(fed)
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
    apply_database_settings(target_url, manifest.get("database_settings") or [])
    total = time.monotonic() - began
    # Decryption overlaps pg_restore; only the time pg_restore was kept waiting for data is counted as its phase.
    return {"decrypt_decompress": round(stream.waited, 3), "restore": round(total - stream.waited, 3)}


def apply_database_settings(target_url: str, entries: list[dict[str, Any]]) -> int:
    """Set the backed-up database's own settings (``ALTER DATABASE ... SET``, ``ALTER ROLE ... IN DATABASE ... SET``;
    see :func:`dbops.backup.logical.read_database_settings`) on the restored database; return how many.

    Each ``name=value`` is handed to the server as stored (``set_config`` in a transaction, then ``SET ... FROM
    CURRENT``), so list settings such as ``search_path`` keep their quoting exactly."""
    database = unquote(database_name(target_url))
    applied = 0
    with connection(target_url) as conn:
        for entry in entries:
            role = entry.get("role")
            for item in entry.get("settings") or []:
                name, sep, value = str(item).partition("=")
                if not sep or not name:
                    raise BackupIntegrityError(f"database setting {item!r} in the manifest is not name=value",
                                               "the manifest is not one dbops wrote")
                scope = (sql.SQL("DATABASE {}").format(sql.Identifier(database)) if role is None else
                         sql.SQL("ROLE {} IN DATABASE {}").format(sql.Identifier(role), sql.Identifier(database)))
                try:
                    with conn.transaction():
                        conn.execute("SELECT set_config(%s, %s, true)", [name, value])
                        conn.execute(sql.SQL("ALTER {} SET {} FROM CURRENT").format(scope, sql.Identifier(name)))
                except psycopg.Error as exc:
                    who = f"role {role} in database {database}" if role else f"database {database}"
                    raise RestoreError(f"restored, but the setting {name} of {who} could not be set again: "
                                       f"{str(exc).splitlines()[0]}",
                                       f"set it by hand (ALTER DATABASE ... SET {name} = ...)") from exc
                applied += 1
    return applied


def _widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """A 1 MiB pipe (Linux) instead of 64 KiB, so pg_restore has a whole chunk to read while the next is decrypted."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works, a little slower


def _restore_directory(store: Store, data_key: bytes, manifest: dict[str, Any], target_url: str, *,
                       bin_dir: Path | None, jobs: int, staging_root: Path | None,
                       progress: Progress | None = None) -> dict[str, float]:
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
        report(progress, f"staging {len(biggest_first)} object(s) of backup {manifest['id']} in {staging} "
                         f"({max(1, jobs)} at a time)")
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
        report(progress, f"staged in {staged:.1f} s; pg_restore --jobs={max(1, jobs)} started into database "
                         f"{unquote(database_name(target_url))}")
        began = time.monotonic()
        run_command([find_program("pg_restore", bin_dir), f"--jobs={max(1, jobs)}", "--exit-on-error",
                     "--no-password", f"--dbname={bare_url}", str(dump_dir)],
                    password=password, timeout=RESTORE_TIMEOUT)
        restored = time.monotonic() - began
    return {"decrypt_decompress": round(staged, 3), "restore": round(restored, 3)}

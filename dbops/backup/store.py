"""Where backups live: a local directory or an S3 bucket, behind one small interface.

Objects are written as streams: the local store writes ``<name>.partial`` and renames it when complete; the S3 store
uses a multipart upload with bounded part buffers and aborts it on any failure. Neither ever holds a whole backup in
memory or writes a full-size temporary file, and a failed write leaves nothing behind under the final name. A writer
killed outright (power cut, SIGKILL) can still leave a ``.partial`` file or an unfinished multipart upload:
:meth:`Store.unfinished` lists them with their age, and prune removes the old ones (:mod:`dbops.backup.retention`).

S3 calls have bounded timeouts and one retry (:attr:`S3Store.CONNECT_TIMEOUT`, ``READ_TIMEOUT``, ``ATTEMPTS``): an
endpoint that accepts connections and never answers fails a command in about half a minute with one line naming it,
instead of hanging for minutes.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dbops.errors import ConfigError, DbopsError
from dbops.redact import redact
from dbops.settings import BackupSettings, Settings

Progress = Callable[[int], None]  # called with the bytes stored so far


class StoreError(DbopsError):
    """The backup store cannot be read or written."""


class ObjectMissing(StoreError):
    """The object does not exist (as opposed to a store that cannot be reached)."""


@dataclass
class PutResult:
    size: int
    sha256: str


@dataclass(frozen=True)
class Unfinished:
    """A write that never completed: a local ``.partial`` file or an S3 multipart upload (``upload_id``)."""

    name: str  # the object name it was writing (for a local store, the .partial file's own name)
    started: datetime  # local: last modified (a live writer keeps touching it); S3: when the upload was initiated
    upload_id: str | None = None


class Store:
    kind = "abstract"
    prefix = ""  # where in its namespace the store lives: an S3 key prefix; a local store has none

    def unfinished(self, prefix: str) -> list[Unfinished]:
        """Writes under ``prefix`` that never completed (see the module docstring)."""
        raise NotImplementedError

    def abort(self, item: Unfinished) -> None:
        """Remove an unfinished write (never a complete object)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def location(self, key: str) -> str:
        """Where object (or folder) ``key`` lives: a file path, or an ``s3://bucket/key`` address."""
        raise NotImplementedError

    def put(self, key: str, chunks: Iterable[bytes], progress: Progress | None = None) -> PutResult:
        raise NotImplementedError

    def get(self, key: str) -> Iterator[bytes]:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        self.put(key, [data])

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.get(key))

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        raise NotImplementedError


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"local directory {self.root}"

    def location(self, key: str) -> str:
        return str(self.root / key)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreError(f"object name {key!r} escapes the store", "use names inside the store")
        return path

    def put(self, key: str, chunks: Iterable[bytes], progress: Progress | None = None) -> PutResult:
        path = self._path(key)
        partial = path.with_name(path.name + ".partial")
        digest, size = hashlib.sha256(), 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress:
                        progress(size)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(path)
            _fsync_dir(path.parent)  # the rename itself must survive a power cut, not only the bytes
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StoreError(f"the local store {self.root} is full while writing {key}",
                                 "free space or prune old backups (`dbops backup prune`)") from exc
            raise StoreError(f"cannot write {key} in {self.root}: {exc.strerror}", "check the directory") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return PutResult(size, digest.hexdigest())

    def get(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below, generator-owned
        except FileNotFoundError as exc:
            raise ObjectMissing(f"object {key} is missing from {self.root}", "the backup is incomplete") from exc
        with handle:
            while block := handle.read(1 << 20):
                yield block

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()
                      and not p.name.endswith(".partial"))

    def unfinished(self, prefix: str) -> list[Unfinished]:
        base = self.root / prefix
        if not base.exists():
            return []
        out = []
        for path in base.rglob("*.partial"):
            try:
                if path.is_file() and not path.is_symlink():
                    started = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                    out.append(Unfinished(str(path.relative_to(self.root)), started))
            except FileNotFoundError:  # its writer just finished (renamed it) or failed (removed it)
                continue
        return sorted(out, key=lambda u: u.name)

    def abort(self, item: Unfinished) -> None:
        if not item.name.endswith(".partial"):
            raise StoreError(f"{item.name} is not an unfinished write", "only .partial files are aborted")
        self._path(item.name).unlink(missing_ok=True)


class S3Store(Store):
    kind = "s3"
    PART_SIZE = 8 << 20
    CONNECT_TIMEOUT = 5.0  # seconds to open a connection
    READ_TIMEOUT = 15.0  # seconds without a byte from the server (not the length of a transfer)
    ATTEMPTS = 2  # every call, its first try included: worst case 2 x 15 s (+ backoff) on a silent endpoint

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 sse: str | None = None, part_size: int = PART_SIZE, access_key_id: str | None = None,
                 secret_access_key: str | None = None) -> None:
        # Imported with the first S3 store: boto3 takes half a second, which a local store (and `dbops wal push`, an
        # archive_command run for every WAL file) need not pay.
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.sse = sse
        self.part_size = max(part_size, 5 << 20)
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,  # None: boto3's usual chain
            config=Config(retries={"total_max_attempts": self.ATTEMPTS, "mode": "standard"},
                          connect_timeout=self.CONNECT_TIMEOUT, read_timeout=self.READ_TIMEOUT),
        )

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _fail(self, action: str, key: str, exc: Exception) -> StoreError:
        return StoreError(f"S3 {action} of {key} in {self.describe()} failed: {redact(str(exc)).splitlines()[0]}",
                          "check the endpoint, the bucket and the credentials (AWS_ACCESS_KEY_ID...)")

    def put(self, key: str, chunks: Iterable[bytes], progress: Progress | None = None) -> PutResult:
        full = self._key(key)
        extra = {"ServerSideEncryption": self.sse} if self.sse else {}
        digest, size = hashlib.sha256(), 0
        upload_id = None
        try:
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full, **extra)["UploadId"]
            parts, buffer, number = [], bytearray(), 1

            def flush_part() -> None:
                nonlocal number
                response = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                   PartNumber=number, Body=bytes(buffer))
                parts.append({"ETag": response["ETag"], "PartNumber": number})
                number += 1
                buffer.clear()

            for chunk in chunks:
                buffer += chunk
                digest.update(chunk)
                size += len(chunk)
                if len(buffer) >= self.part_size:
                    flush_part()
                    if progress:
                        progress(size)
            if buffer or not parts:
                flush_part()
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
            if progress:
                progress(size)
        except BaseException as exc:
            if upload_id:
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
                except Exception:  # noqa: S110 - the server may be the thing that failed
                    pass
            if isinstance(exc, DbopsError) or not isinstance(exc, Exception):
                raise
            raise self._fail("upload", key, exc) from exc
        return PutResult(size, digest.hexdigest())

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            extra = {"ServerSideEncryption": self.sse} if self.sse else {}
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except Exception as exc:
            raise self._fail("upload", key, exc) from exc

    def get(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey as exc:
            raise ObjectMissing(f"object {key} is missing from {self.describe()}",
                                "the backup is incomplete") from exc
        except Exception as exc:
            raise self._fail("download", key, exc) from exc
        try:
            yield from body.iter_chunks(1 << 20)
        except Exception as exc:
            raise self._fail("download", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception:
            return False

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._fail("delete", key, exc) from exc

    def list(self, prefix: str) -> list[str]:
        out = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    out.append(key[len(self.prefix) + 1:] if self.prefix else key)
        except Exception as exc:
            raise self._fail("listing", prefix, exc) from exc
        return sorted(out)

    def unfinished(self, prefix: str) -> list[Unfinished]:
        out = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for upload in page.get("Uploads", []):
                    key = upload["Key"]
                    out.append(Unfinished(key[len(self.prefix) + 1:] if self.prefix else key,
                                          upload["Initiated"].astimezone(UTC), upload["UploadId"]))
        except Exception as exc:
            raise self._fail("listing of unfinished uploads", prefix, exc) from exc
        return sorted(out, key=lambda u: (u.name, u.started))

    def abort(self, item: Unfinished) -> None:
        if not item.upload_id:
            raise StoreError(f"{item.name} is not an unfinished upload", "only multipart uploads are aborted")
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(item.name), UploadId=item.upload_id)
        except Exception as exc:
            raise self._fail("abort of the unfinished upload", item.name, exc) from exc


def store_from_settings(backup: BackupSettings) -> Store:
    """The target's store: ``local`` (``backup.directory``) or ``s3`` (``backup.s3``; credentials from the secret
    references when set, else boto3's usual AWS chain)."""
    if backup.store == "local":
        return LocalStore(backup.directory)
    s3 = backup.s3
    if not s3.bucket:
        raise ConfigError("the backup store is s3 but no bucket is set", "set DBOPS_BACKUP_BUCKET (backup.s3.bucket)")
    credentials = {}
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        credentials = {"access_key_id": s3.access_key_id.resolve(), "secret_access_key": s3.secret_access_key.resolve()}
    return S3Store(s3.bucket, s3.prefix or "", endpoint_url=s3.endpoint, region=s3.region, sse=s3.sse, **credentials)


def store_for(settings: Settings, target: str | None = None) -> Store:
    """The store the CLI reads and writes: the (default) target's :func:`store_from_settings`."""
    return store_from_settings(settings.target(target).backup)

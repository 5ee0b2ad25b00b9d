"""Where edc keeps the files it produces: one interface, two backends chosen by the setting `storage_backend`.

- `local`: a directory (`export_dir`), the embedded default. For one machine: every node that serves
  downloads must see the directory the worker writes.
- `s3`: a bucket of an S3-compatible object store (AWS S3, MinIO, Ceph) through boto3, shared by every
  node and worker. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
  a shared credentials file, an instance or pod role), never from edc's settings files.

Objects are named by keys such as "<job id>/items_long.csv". A set of files is written into a local
scratch directory first and published as a whole; each object appears whole or not at all (local: written
aside, then renamed into place; S3: an object exists only once its PUT, or its multipart upload, has
completed). Reads stream (nothing is loaded whole) and are seekable, so HTTP range requests work on both.

Failures come out as StorageError with a reason that may be shown to a user: it never names a path, a
bucket or an endpoint. ObjectMissing (a StorageError) means the object is not there (deleted, or a
database restored without its files).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

BACKENDS = ("local", "s3")
FULL = "export storage is full"
NOT_WRITABLE = "export storage is not writable"
# errno of a failed write -> what the requester may be told (nothing of the path that failed)
OS_REASONS = {errno.ENOSPC: FULL, errno.EDQUOT: FULL, errno.EFBIG: "an export file is larger than export storage allows",
              errno.EACCES: NOT_WRITABLE, errno.EPERM: NOT_WRITABLE, errno.EROFS: NOT_WRITABLE,
              errno.EIO: "export storage had an input/output error"}
# S3 error codes -> reason (other codes are named as they are: they hold no path)
S3_REASONS = {"NoSuchBucket": "export storage is not available (its bucket does not exist)",
              "AccessDenied": NOT_WRITABLE, "AllAccessDisabled": NOT_WRITABLE,
              "InvalidAccessKeyId": "export storage refused its credentials",
              "SignatureDoesNotMatch": "export storage refused its credentials",
              "EntityTooLarge": "an export file is larger than export storage allows",
              "QuotaExceeded": FULL, "XMinioStorageFull": FULL}
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class StorageError(Exception):
    """Storage failed; `reason` is safe to show (no path, bucket or address)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ObjectMissing(StorageError):
    """The object is not in storage."""

    def __init__(self) -> None:
        super().__init__("the file is no longer in export storage")


class Storage(Protocol):
    def publish(self, prefix: str, directory: Path) -> None:
        """Make every file of `directory` an object `prefix/<name>`, replacing what was under `prefix`;
        the directory is consumed."""

    def open(self, key: str) -> BinaryIO:
        """A seekable binary stream of the object (ObjectMissing if it is not there); the caller closes it."""

    def names(self, prefix: str) -> set[str]:
        """The names of the objects under `prefix/`."""

    def delete(self, prefix: str) -> None:
        """Delete every object under `prefix/` (nothing there is no error)."""


def failure_reason(exc: BaseException) -> str | None:
    """What a requester may be told about a failed write, or None when it is not a storage failure."""
    if isinstance(exc, StorageError):
        return exc.reason
    if isinstance(exc, OSError) and exc.errno in OS_REASONS:
        return OS_REASONS[exc.errno]
    return None


def from_settings(settings: Mapping[str, Any]) -> Storage:
    if settings["storage_backend"] == "s3":
        return S3Storage(settings)
    return LocalStorage(Path(settings["export_dir"]))


def _parts(key: str) -> list[str]:
    """A key's names; none may climb out of the store or be hidden (work directories are)."""
    parts = key.split("/")
    if not key or any(not p or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        raise ValueError(f"not a storage key: {key!r}")
    return parts


# --- a local directory -------------------------------------------------------------------------

class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*_parts(key))

    def publish(self, prefix: str, directory: Path) -> None:
        final = self.path(prefix)
        shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.rename(final)  # the whole set appears at once (same file system: work directories live in root)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectMissing() from None

    def names(self, prefix: str) -> set[str]:
        try:
            return {entry.name for entry in os.scandir(self.path(prefix)) if entry.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            return set()

    def delete(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)


# --- S3-compatible object storage ------------------------------------------------------------------

class S3Storage:
    """A bucket (and an optional key prefix) of AWS S3, MinIO or Ceph RGW."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        import boto3  # imported here: a deployment on local storage never loads it
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = settings["storage_s3_bucket"]
        self.key_prefix = settings["storage_s3_prefix"]
        config = Config(s3={"addressing_style": settings["storage_s3_addressing_style"]},
                        connect_timeout=settings["storage_s3_timeout_seconds"],
                        read_timeout=settings["storage_s3_timeout_seconds"],
                        retries={"max_attempts": settings["storage_s3_max_attempts"], "mode": "standard"})
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=settings["storage_s3_endpoint_url"] or None,
            region_name=settings["storage_s3_region"] or None, config=config)
        self.extra_args = ({"ServerSideEncryption": settings["storage_s3_server_side_encryption"]}
                           if settings["storage_s3_server_side_encryption"] else {})
        self.transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20, max_concurrency=4)

    def _key(self, key: str) -> str:
        return self.key_prefix + "/".join(_parts(key))

    def publish(self, prefix: str, directory: Path) -> None:
        self.delete(prefix)  # a set is replaced whole: nothing of an earlier one stays beside it
        try:
            with _translated():
                for path in sorted(directory.iterdir()):
                    self.client.upload_file(str(path), self.bucket, self._key(f"{prefix}/{path.name}"),
                                            ExtraArgs=self.extra_args or None, Config=self.transfer)
        except StorageError:
            self._forget(prefix)  # no half set left behind
            raise
        shutil.rmtree(directory, ignore_errors=True)

    def _forget(self, prefix: str) -> None:
        try:
            self.delete(prefix)
        except StorageError:
            pass  # the store is failing: the objects of an unfinished set are listed by no job

    def open(self, key: str) -> BinaryIO:
        return io.BufferedReader(_S3Reader(self, self._key(key)), buffer_size=1 << 20)  # type: ignore[return-value]

    def names(self, prefix: str) -> set[str]:
        start = self._key(prefix) + "/"
        return {key[len(start):] for key in self._keys(start)}

    def delete(self, prefix: str) -> None:
        keys = list(self._keys(self._key(prefix) + "/"))
        with _translated():
            for at in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
                self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[at:at + 1000]], "Quiet": True})

    def _keys(self, start: str) -> Iterator[str]:
        with _translated():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                yield from (item["Key"] for item in page.get("Contents", []))

    def get(self, key: str, offset: int) -> tuple[Any, int]:
        """The object's body from `offset` on, and the object's whole size."""
        with _translated():
            if offset:
                answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={offset}-")
                return answer["Body"], int(answer["ContentRange"].rsplit("/", 1)[1])
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            return answer["Body"], int(answer["ContentLength"])


class _S3Reader(io.RawIOBase):
    """An object read as a stream: one GET, and a ranged GET again after a seek (HTTP range requests)."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage, self.key = storage, key
        self.body, self.size = storage.get(key, 0)  # here, so a missing object is known before any byte is sent
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence] + offset
        if target != self.position:
            self._close_body()
            self.position = max(0, target)
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.size:
            return 0
        if self.body is None:
            self.body, _ = self.storage.get(self.key, self.position)
        with _translated():
            data = self.body.read(len(buffer))
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def _close_body(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    def close(self) -> None:
        self._close_body()
        super().close()


@contextmanager
def _translated() -> Iterator[None]:
    """botocore's errors as StorageError (or ObjectMissing), with a reason that names no bucket or address."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    try:
        yield
    except (ClientError, S3UploadFailedError) as exc:
        # boto3's upload wraps the ClientError in an error whose message names the file and bucket: read the cause.
        cause = exc if isinstance(exc, ClientError) else exc.__cause__ or exc.__context__
        code = str(cause.response.get("Error", {}).get("Code", "")) if isinstance(cause, ClientError) else ""
        if code in MISSING_CODES:
            raise ObjectMissing() from exc
        raise StorageError(S3_REASONS.get(code, f"export storage answered an error ({code or 'unknown'})")) from exc
    except NoCredentialsError as exc:
        raise StorageError("export storage has no credentials configured") from exc
    except EndpointConnectionError as exc:
        raise StorageError("export storage could not be reached") from exc
    except BotoCoreError as exc:  # timeouts, broken connections, ...
        raise StorageError(f"export storage could not be reached ({type(exc).__name__})") from exc
    except OSError as exc:  # reading the local file being uploaded
        reason = failure_reason(exc)
        if reason is None:
            raise
        raise StorageError(reason) from exc


"""The files store in an S3-compatible bucket (AWS S3, MinIO, Ceph, moto), through boto3.

An object path `p` is the key `<files_s3_prefix>/p` in `files_s3_bucket`. Uploads stream: bytes
are gathered into parts of `files_s3_part_mb` (5 MiB at least, S3's floor) and each full part is
sent as it fills (multipart upload), so a server holds about one part per upload in memory; a
file smaller than one part is a single PUT at commit. The object appears only when the multipart
upload completes; an aborted or failed one is aborted in the bucket too (nothing half-stored; a
bucket lifecycle rule for incomplete multipart uploads cleans up after a crashed server).

"Directories" are key prefixes: a path with objects under `path/` is a directory, which DELETE
never removes (409) and an upload never shadows (409).

Credentials: files_s3_access_key / files_s3_secret_key, else boto3's own chain (AWS_* variables,
~/.aws, an instance role). An unreachable endpoint or a 5xx/throttling answer is `unavailable`
(503, retryable) after `files_s3_retries` quick tries; a missing bucket or a refusal (403) is a
500 naming the bucket and the permission.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from server import errors
from server.files.backend import (
    READ_CHUNK,
    FileBackend,
    ObjectInfo,
    Pending,
    object_names,
    unavailable,
    upload_names,
)

if TYPE_CHECKING:
    from server.config import ServerConfig

log = logging.getLogger("shipyard.server.files")

MIB = 1 << 20
MIN_PART_MB = 5
_RETRYABLE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                              "RequestTimeTooSkewed", "Throttling", "ThrottlingException"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = ""
    endpoint_url: str = ""      # empty: AWS itself
    region: str = ""
    access_key: str = ""        # empty: boto3's credential chain
    secret_key: str = ""
    part_mb: int = 8
    retries: int = 2
    timeout_s: float = 10.0

    @classmethod
    def of(cls, config: ServerConfig) -> S3Settings:
        return cls(bucket=config.files_s3_bucket, prefix=config.files_s3_prefix.strip("/"),
                   endpoint_url=config.files_s3_endpoint_url, region=config.files_s3_region,
                   access_key=config.files_s3_access_key, secret_key=config.files_s3_secret_key,
                   part_mb=max(config.files_s3_part_mb, MIN_PART_MB), retries=max(config.files_s3_retries, 0),
                   timeout_s=config.files_s3_timeout_s)

    def client(self) -> Any:
        keys = {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key} \
            if self.access_key else {}
        config = BotoConfig(connect_timeout=self.timeout_s, read_timeout=self.timeout_s * 3,
                            retries={"max_attempts": self.retries + 1, "mode": "standard"},
                            max_pool_connections=32)
        return boto3.session.Session(**keys).client(
            "s3", endpoint_url=self.endpoint_url or None, region_name=self.region or None, config=config)


@contextlib.contextmanager
def s3_errors(settings: S3Settings, what: str) -> Iterator[None]:
    """botocore's failures as the files API's: 503 when a retry may work, else 500 that says why."""
    try:
        yield
    except ClientError as exc:
        raise _client_error(settings, what, exc) from None
    except BotoCoreError as exc:      # connection refused, timeouts, a cut connection
        where = settings.endpoint_url or "AWS S3"
        raise unavailable(what, f"{type(exc).__name__} talking to {where}") from None


def _client_error(settings: S3Settings, what: str, exc: ClientError) -> errors.APIError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in _RETRYABLE_CODES or status >= 500:
        return unavailable(what, f"{code or status} from bucket {settings.bucket!r}")
    if code == "NoSuchBucket":
        return errors.APIError(500, 0, f"the files store's bucket {settings.bucket!r} does not exist "
                                       "(files_s3_bucket)")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return errors.APIError(500, 0, f"bucket {settings.bucket!r} refused {what} ({code}): check the files "
                                       "store's credentials and IAM policy (docs/storage.md)")
    return errors.APIError(500, 0, f"object storage error during {what}: {code} {error.get('Message', '')}".strip())


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING


class S3Backend(FileBackend):
    kind = "s3"

    def __init__(self, settings: S3Settings, client: Any = None):
        self.settings = settings
        self.client = client or settings.client()
        self._lock = threading.Lock()
        self._unaborted: list[tuple[str, str]] = []   # (key, upload id) whose abort failed

    def remember_unaborted(self, key: str, upload_id: str) -> None:
        with self._lock:
            self._unaborted.append((key, upload_id))

    def _abort_leftovers(self) -> None:
        """Abort the multipart uploads an outage left behind (each tried again until it goes)."""
        with self._lock:
            leftovers, self._unaborted = self._unaborted, []
        for key, upload_id in leftovers:
            try:
                self.client.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=upload_id)
                log.info("aborted the multipart upload of %s left by an earlier failure", key)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) != "NoSuchUpload":
                    self.remember_unaborted(key, upload_id)
            except BotoCoreError:
                self.remember_unaborted(key, upload_id)

    def describe(self) -> str:
        where = f" at {self.settings.endpoint_url}" if self.settings.endpoint_url else ""
        return f"s3://{self.settings.bucket}/{self.settings.prefix}{where}"

    def key(self, names: list[str]) -> str:
        path = "/".join(names)
        return f"{self.settings.prefix}/{path}" if self.settings.prefix else path

    def check(self) -> None:
        """At start: the bucket exists and these credentials may use it (an error says which)."""
        with s3_errors(self.settings, "the start-up check"):
            try:
                self.client.head_bucket(Bucket=self.settings.bucket)
            except ClientError as exc:
                if _missing(exc):
                    raise errors.APIError(500, 0, f"the files store's bucket {self.settings.bucket!r} does not "
                                                  "exist (files_s3_bucket)") from None
                raise

    # -- reading ------------------------------------------------------------------------------
    def stat(self, object_path: str) -> ObjectInfo | None:
        key = self.key(object_names(object_path))
        with s3_errors(self.settings, f"reading {object_path!r}"):
            try:
                head = self.client.head_object(Bucket=self.settings.bucket, Key=key)
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
        modified = head.get("LastModified")
        return ObjectInfo(int(head["ContentLength"]), modified.timestamp() if modified else None, head.get("ETag"))

    def read(self, object_path: str, start: int, end: int) -> Iterator[bytes]:
        key = self.key(object_names(object_path))
        with s3_errors(self.settings, f"reading {object_path!r}"):
            try:
                answer = self.client.get_object(Bucket=self.settings.bucket, Key=key, Range=f"bytes={start}-{end}")
            except ClientError as exc:
                if _missing(exc):
                    raise errors.APIError(404, 0, f"not found: {object_path[:200]}") from None
                raise
        return _body(answer["Body"])

    def is_dir(self, names: list[str]) -> bool:
        with s3_errors(self.settings, "listing"):
            found = self.client.list_objects_v2(Bucket=self.settings.bucket, Prefix=self.key(names) + "/", MaxKeys=1)
        return bool(found.get("KeyCount"))

    # -- writing ------------------------------------------------------------------------------
    def open_upload(self, object_path: str) -> Pending:
        names = upload_names(object_path)
        if self._unaborted:
            self._abort_leftovers()
        if self.is_dir(names):
            raise errors.APIError(409, 0, f"a directory exists at {object_path!r}; a file cannot replace it")
        return S3Pending(self, object_path, self.key(names))

    def delete(self, object_path: str) -> None:
        names = object_names(object_path)
        if self.stat(object_path) is None:
            if self.is_dir(names):
                raise errors.APIError(409, 0, f"DELETE removes files, not directories: {object_path[:200]!r}")
            raise errors.APIError(404, 0, f"not found: {object_path[:200]}")
        with s3_errors(self.settings, f"deleting {object_path!r}"):
            self.client.delete_object(Bucket=self.settings.bucket, Key=self.key(names))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _body(stream: Any) -> Iterator[bytes]:
    try:
        yield from stream.iter_chunks(READ_CHUNK)
    finally:
        stream.close()


class S3Pending(Pending):
    """One object on its way to the bucket: full parts are sent as they fill (multipart upload)."""

    def __init__(self, backend: S3Backend, name: str, key: str):
        self.backend, self.name, self.key = backend, name, key
        self.part_size = backend.settings.part_mb * MIB
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    @property
    def _bucket(self) -> str:
        return self.backend.settings.bucket

    def write(self, data: bytes | memoryview) -> None:
        self.buffer += data
        while len(self.buffer) >= self.part_size:
            chunk = bytes(memoryview(self.buffer)[:self.part_size])   # the one copy a part costs
            del self.buffer[:self.part_size]
            self._send_part(chunk)

    def commit(self) -> None:
        with s3_errors(self.backend.settings, f"storing {self.name!r}"):
            if self.upload_id is None:
                self.backend.client.put_object(Bucket=self._bucket, Key=self.key, Body=bytes(self.buffer),
                                               ContentType="application/octet-stream")
            else:
                if self.buffer or not self.parts:
                    self._send_part(bytes(self.buffer))
                self.backend.client.complete_multipart_upload(
                    Bucket=self._bucket, Key=self.key, UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts})
        self.upload_id, self.buffer = None, bytearray()

    def abort(self) -> None:
        self.buffer = bytearray()
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        try:
            self.backend.client.abort_multipart_upload(Bucket=self._bucket, Key=self.key, UploadId=upload_id)
        except Exception as exc:  # the store is down: tried again before the next upload
            log.warning("could not abort the multipart upload of %s (%s); tried again before the next upload",
                        self.key, type(exc).__name__)
            self.backend.remember_unaborted(self.key, upload_id)

    def _send_part(self, chunk: bytes) -> None:
        client = self.backend.client
        with s3_errors(self.backend.settings, f"storing {self.name!r}"):
            if self.upload_id is None:
                started = client.create_multipart_upload(Bucket=self._bucket, Key=self.key,
                                                         ContentType="application/octet-stream")
                self.upload_id = started["UploadId"]
            number = len(self.parts) + 1
            sent = client.upload_part(Bucket=self._bucket, Key=self.key, UploadId=self.upload_id,
                                      PartNumber=number, Body=chunk)
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})

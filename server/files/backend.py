"""Where the files listener keeps objects: the interface every storage backend implements.

    FileBackend            the interface (below); one per server, on ServerState.files
      local.LocalBackend   a directory on this machine (the default: data_dir/files)
      s3.S3Backend         an S3-compatible bucket (AWS S3, MinIO, ...), so every replica serves every file
    server/app.py open_files_backend(config) builds the one ServerConfig names (files_backend)

An object path is what the SDK uploads under (`proj/task.id/artifacts/x/x.pkl`); `object_names`
checks it once for every backend: names of at most 255 bytes, no NUL, no `..` (a path that resolves
to the root or outside it is 403, other `..` paths 400).

Writing is two-phase: `open_upload(path)` gives a `Pending` that takes the bytes as they arrive
(`write`), and only `commit` makes the object visible (a local rename, an S3 multipart completion);
`abort` leaves nothing behind. A backend that cannot be reached raises `unavailable` (503, the
client may retry); nothing is half-stored either way.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from server import errors

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    modified: float | None = None    # seconds since the epoch
    etag: str | None = None


class Pending(ABC):
    """One object being uploaded: bytes in, then visible all at once (commit) or never (abort)."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written; never raises (it runs while another error is on its way)."""


class FileBackend(ABC):
    kind: str = ""

    @abstractmethod
    def open_upload(self, object_path: str) -> Pending:
        """Start storing `object_path` (checked with `upload_names`); 409 if a directory is there."""

    @abstractmethod
    def stat(self, object_path: str) -> ObjectInfo | None:
        """The stored file at `object_path`, or None (no such file, or a directory)."""

    @abstractmethod
    def read(self, object_path: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes start..end (inclusive) of a stored file. The backend is asked before this returns,
        so an unreachable store is an error here, not a cut-off body."""

    @abstractmethod
    def delete(self, object_path: str) -> None:
        """Remove one stored file: 404 if there is none, 409 for a directory (never removed)."""

    def check(self) -> None:
        """At server start: the store is there and usable (an APIError says why not)."""
        return None

    def check_space(self, coming: int = 0) -> None:
        """Refuse (507) an upload of `coming` more bytes the store cannot take. Default: no limit."""
        return None

    def describe(self) -> str:
        return self.kind


def object_names(object_path: str) -> list[str]:
    """The names of `object_path`, checked: 400 for bad input, 403 for root or outside it."""
    cleaned = object_path.replace("\\", "/")
    if "\x00" in cleaned:
        raise errors.validation("the object path contains a NUL byte")
    try:
        size = len(cleaned.encode("utf-8"))
    except UnicodeEncodeError:
        raise errors.validation("the object path is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise errors.validation(f"the object path is longer than {MAX_PATH_BYTES} bytes")
    names = [n for n in cleaned.split("/") if n not in ("", ".")]
    for name in names:
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise errors.validation(f"a name in the object path is longer than {MAX_NAME_BYTES} bytes: "
                                    f"{name[:40]!r}...")
    depth, lowest = 0, 0
    for name in names:
        depth += -1 if name == ".." else 1
        lowest = min(lowest, depth)
    if lowest < 0 or (names and depth == 0) or not names:
        raise errors.APIError(403, 0, f"the path is the files root or outside it: {object_path[:200]!r}")
    if ".." in names:
        raise errors.validation(f"'..' is not allowed in an object path: {object_path[:200]!r}")
    return names


def upload_names(object_path: str) -> list[str]:
    """Like `object_names`, and the path must end with a file name."""
    last = object_path.replace("\\", "/").rsplit("/", 1)[-1]
    if last in ("", ".", ".."):
        raise errors.validation(f"an object path must end with a file name: {object_path[:200]!r}")
    return object_names(object_path)


def unavailable(what: str, detail: str) -> errors.APIError:
    """503: the store could not be reached; nothing was stored, the same request may be retried."""
    return errors.APIError(503, 0, f"object storage unavailable, retry later: {what}: {detail}")


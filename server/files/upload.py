"""Uploads to the files listener, streamed once, straight to where they are stored.

The body is read as it arrives and fed to python-multipart's streaming parser; each file part
(the ClearML SDK's format: the part's field name is the object path) is written into a temp file
`.upload-*` in its target's own directory, and only when the whole body has parsed are the temp
files moved into place with os.replace. A refused, broken or cut-off request therefore stores
nothing and replaces nothing; its temp files (and any directory it created) are removed.

Limits (`Limits.of(state)`, all from ServerConfig, 0 = off):
- files_max_file_mb: one part's bytes; over it, 413 naming the key.
- files_max_request_mb: the whole body; a larger Content-Length is refused before reading.
- files_min_free_mb: free space the files dir's filesystem keeps; checked against the declared
  length before reading and every few MiB while writing (507 when it would be crossed).

Parsing and disk writes run on a worker thread, half a MiB of received body at a time, so a
large upload never holds the event loop (and the thread hops stay few). Parts without a file
name (plain form fields) are read and dropped.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from server import errors
from server.state import ServerState

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MIB = 1 << 20
MAX_PARTS = 1000
MAX_PART_HEADER_BYTES = 16 * 1024
DISK_CHECK_EVERY = 8 * MIB
FEED_BYTES = MIB // 2              # received bytes handed to the worker thread at a time
TEMP_PREFIX = ".upload-"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

Resolver = Callable[[str], Path]


@dataclass(frozen=True)
class Limits:
    max_file: int      # bytes; 0 = no limit
    max_request: int
    min_free: int
    max_file_mb: int
    max_request_mb: int
    min_free_mb: int

    @classmethod
    def of(cls, state: ServerState) -> "Limits":
        f, r, m = state.files_max_file_mb, state.files_max_request_mb, state.files_min_free_mb
        return cls(max(f, 0) * MIB, max(r, 0) * MIB, max(m, 0) * MIB, f, r, m)


def too_large(what: str, key: str, mb: int) -> errors.APIError:
    return errors.APIError(413, 0, f"{what} is larger than the server allows ({key}={mb} MiB)")


def disk_full(root: Path, limits: Limits, free: int | None = None) -> errors.APIError:
    if free is None:
        free = free_bytes(root)
    return errors.APIError(507, 0, f"not enough free disk for this upload: {free // MIB} MiB free on the "
                                   f"files store, and files_min_free_mb={limits.min_free_mb} MiB must stay free")


def free_bytes(root: Path) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


def check_free_disk(root: Path, limits: Limits, coming: int = 0) -> None:
    """Refuse (507) when writing `coming` more bytes would leave less than the configured floor."""
    if not limits.min_free:
        return
    free = free_bytes(root)
    if free - coming < limits.min_free:
        raise disk_full(root, limits, free)


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise errors.validation(f"Content-Length must be a number of bytes, got {value[:40]!r}")
    return int(value)


def boundary_of(request: Request) -> bytes:
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise errors.validation("an upload is multipart/form-data with a boundary "
                                "(each part's field name is the object path)")
    return params[b"boundary"]


@dataclass
class _Part:
    name: str
    target: Path | None            # None: a plain form field, its bytes are dropped
    tmp: Path | None = None
    out: BinaryIO | None = None
    size: int = 0


class _Receiver:
    """python-multipart callbacks writing each file part to its temp file; synchronous, so it
    runs on a worker thread (`feed`, `finish`, `abort`), never on the event loop."""

    def __init__(self, root: Path, boundary: bytes, limits: Limits, resolve: Resolver):
        self.root, self.limits, self.resolve = root, limits, resolve
        self.parts: list[_Part] = []
        self.current: _Part | None = None
        self.ended = False
        self.created_dirs: list[Path] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._since_disk_check = 0
        callbacks: MultipartCallbacks = {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                     "on_header_value": self._header_value_cb, "on_header_end": self._header_end,
                     "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                     "on_part_end": self._part_end, "on_end": self._end}
        self.parser = MultipartParser(boundary, callbacks, max_header_size=MAX_PART_HEADER_BYTES)

    # -- feeding (worker thread) --------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise errors.validation(f"malformed multipart body: {exc}") from None
        except OSError as exc:
            raise self._os_error(exc) from None
        self._since_disk_check += len(chunk)
        if self._since_disk_check >= DISK_CHECK_EVERY:
            self._since_disk_check = 0
            check_free_disk(self.root, self.limits)

    def finish(self) -> list[str]:
        """Move every part into place once the body is complete; the object paths stored."""
        if not self.ended:
            raise errors.validation("the multipart body ended before its closing boundary")
        files = [p for p in self.parts if p.target is not None]
        if not files:
            raise errors.validation("no file parts in the upload (each part needs a file name)")
        for part in files:
            self._close(part)
            tmp, target = part.tmp, part.target
            assert tmp is not None and target is not None  # a file part got both in _part_begin
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise self._os_error(exc, part) from None
            part.tmp = None
        return [p.name for p in files]

    def abort(self) -> None:
        """Remove what this request wrote: temp files, then directories it created (if empty)."""
        for part in self.parts:
            self._close(part)
            if part.tmp is not None:
                part.tmp.unlink(missing_ok=True)
                part.tmp = None
        for folder in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()

    # -- parser callbacks -----------------------------------------------------------------------
    def _part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise errors.validation(f"too many parts in one upload (at most {MAX_PARTS})")
        self.current = None
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        raw_name = options.get(b"name")
        if raw_name is None:
            raise errors.validation("each part needs a Content-Disposition with a name (the object path)")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.validation("the object path (part name) is not valid UTF-8") from None
        part = _Part(name, None)
        if b"filename" in options:
            part.target = self.resolve(name)
            self._open(part, part.target)
        self.parts.append(part)
        self.current = part

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        if part is None:
            return
        part.size += end - start
        if self.limits.max_file and part.size > self.limits.max_file:
            raise too_large(f"file {part.name!r}", "files_max_file_mb", self.limits.max_file_mb)
        if part.out is not None:
            part.out.write(memoryview(data)[start:end])

    def _part_end(self) -> None:
        if self.current is not None:
            self._close(self.current)
        self.current = None

    def _end(self) -> None:
        self.ended = True

    # -- files ------------------------------------------------------------------------------------
    def _open(self, part: _Part, target: Path) -> None:
        if target.is_dir():
            raise errors.APIError(409, 0, f"a directory exists at {part.name!r}; a file cannot replace it")
        try:
            self._make_parents(target.parent)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
        except OSError as exc:
            raise self._os_error(exc, part) from None
        part.tmp = Path(tmp)
        part.out = os.fdopen(fd, "wb")

    def _make_parents(self, folder: Path) -> None:
        missing = []
        while not folder.exists() and folder != self.root:
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue  # made by a concurrent upload: not ours to remove
            self.created_dirs.append(path)

    @staticmethod
    def _close(part: _Part) -> None:
        if part.out is not None:
            out, part.out = part.out, None
            out.close()

    def _os_error(self, exc: OSError, part: _Part | None = None) -> errors.APIError:
        where = f" for {part.name!r}" if part else ""
        if exc.errno in _DISK_FULL:
            return disk_full(self.root, self.limits)
        if isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError)):
            return errors.APIError(409, 0, f"a file or directory is in the way{where}: {exc.strerror}")
        return errors.APIError(500, 0, f"cannot store the upload{where}: {exc.strerror}")


async def receive_upload(request: Request, root: Path, limits: Limits, resolve: Resolver) -> list[str]:
    """Store every file part of `request` (all or none); the object paths stored, in order."""
    declared = declared_length(request)
    if limits.max_request and declared is not None and declared > limits.max_request:
        raise too_large("the upload request", "files_max_request_mb", limits.max_request_mb)
    check_free_disk(root, limits, declared or 0)
    receiver = _Receiver(root, boundary_of(request), limits, resolve)
    stream = request.stream()
    total = 0
    batch: list[bytes] = []
    batched = 0
    try:
        async for chunk in stream:
            total += len(chunk)
            if limits.max_request and total > limits.max_request:
                raise too_large("the upload request", "files_max_request_mb", limits.max_request_mb)
            batch.append(chunk)
            batched += len(chunk)
            if batched >= FEED_BYTES:
                await anyio.to_thread.run_sync(receiver.feed, b"".join(batch))
                batch.clear()
                batched = 0
        await anyio.to_thread.run_sync(receiver.feed, b"".join(batch))
        return await anyio.to_thread.run_sync(receiver.finish)
    except ClientDisconnect:
        receiver.abort()
        raise errors.validation("the client went away before the upload was complete") from None
    except errors.APIError as exc:
        receiver.abort()
        if exc.code != 413 or total <= limits.max_request or not limits.max_request:
            await _drain(stream, total, limits.max_request)
        raise
    except BaseException:
        receiver.abort()
        raise


async def _drain(stream, total: int, cap: int) -> None:
    """Read (and drop) the rest of a refused body, up to the request limit, so the client gets
    to read the answer instead of a connection reset while it is still sending."""
    try:
        async for chunk in stream:
            total += len(chunk)
            if cap and total > cap:
                return
    except ClientDisconnect:
        return

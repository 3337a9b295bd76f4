"""Uploads to the files listener, streamed once, straight to where they are stored.

The body is read as it arrives and fed to python-multipart's streaming parser; each file part
(the ClearML SDK's format: the part's field name is the object path) is handed, piece by piece,
to the storage backend's `Pending` for that path (a temp file beside its target, or an S3
multipart upload), and only when the whole body has parsed is every part committed. A refused,
broken or cut-off request therefore stores nothing and replaces nothing: every part is aborted.

Limits (`Limits.of(state)`, all from ServerConfig, 0 = off):
- files_max_file_mb: one part's bytes; over it, 413 naming the key.
- files_max_request_mb: the whole body; a larger Content-Length is refused before reading.
- the backend's own space check (`check_space`: files_min_free_mb for the local store), against
  the declared length before reading and every few MiB while writing (507 when it would be crossed).

Parsing and writes run on a worker thread, half a MiB of received body at a time, so a
large upload never holds the event loop (and the thread hops stay few). Parts without a file
name (plain form fields) are read and dropped.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from server import errors
from server.files.backend import FileBackend, Pending
from server.state import ServerState

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MIB = 1 << 20
MAX_PARTS = 1000
MAX_PART_HEADER_BYTES = 16 * 1024
SPACE_CHECK_EVERY = 8 * MIB
FEED_BYTES = MIB // 2              # received bytes handed to the worker thread at a time


@dataclass(frozen=True)
class Limits:
    max_file: int      # bytes; 0 = no limit
    max_request: int
    max_file_mb: int
    max_request_mb: int

    @classmethod
    def of(cls, state: ServerState) -> "Limits":
        f, r = state.files_max_file_mb, state.files_max_request_mb
        return cls(max(f, 0) * MIB, max(r, 0) * MIB, f, r)


def too_large(what: str, key: str, mb: int) -> errors.APIError:
    return errors.APIError(413, 0, f"{what} is larger than the server allows ({key}={mb} MiB)")


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
    pending: Pending | None = None     # None: a plain form field, its bytes are dropped
    size: int = 0


class _Receiver:
    """python-multipart callbacks handing each file part to its backend `Pending`; synchronous,
    so it runs on a worker thread (`feed`, `finish`, `abort`), never on the event loop."""

    def __init__(self, backend: FileBackend, boundary: bytes, limits: Limits):
        self.backend, self.limits = backend, limits
        self.parts: list[_Part] = []
        self.current: _Part | None = None
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._since_space_check = 0
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
        self._since_space_check += len(chunk)
        if self._since_space_check >= SPACE_CHECK_EVERY:
            self._since_space_check = 0
            self.backend.check_space()

    def finish(self) -> list[str]:
        """Commit every part once the body is complete; the object paths stored."""
        if not self.ended:
            raise errors.validation("the multipart body ended before its closing boundary")
        files = [p for p in self.parts if p.pending is not None]
        if not files:
            raise errors.validation("no file parts in the upload (each part needs a file name)")
        for part in files:
            assert part.pending is not None
            part.pending.commit()
            part.pending = None
        return [p.name for p in files]

    def abort(self) -> None:
        """Drop what this request wrote, latest part first (so directories made by an earlier
        part are empty by the time that part's abort removes them)."""
        for part in reversed(self.parts):
            if part.pending is not None:
                part.pending.abort()
                part.pending = None

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
        part = _Part(name)
        self.parts.append(part)
        if b"filename" in options:
            part.pending = self.backend.open_upload(name)
        self.current = part

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        if part is None:
            return
        part.size += end - start
        if self.limits.max_file and part.size > self.limits.max_file:
            raise too_large(f"file {part.name!r}", "files_max_file_mb", self.limits.max_file_mb)
        if part.pending is not None:
            part.pending.write(memoryview(data)[start:end])

    def _part_end(self) -> None:
        self.current = None

    def _end(self) -> None:
        self.ended = True


async def receive_upload(request: Request, backend: FileBackend, limits: Limits) -> list[str]:
    """Store every file part of `request` (all or none); the object paths stored, in order."""
    declared = declared_length(request)
    if limits.max_request and declared is not None and declared > limits.max_request:
        raise too_large("the upload request", "files_max_request_mb", limits.max_request_mb)
    await anyio.to_thread.run_sync(backend.check_space, declared or 0)
    receiver = _Receiver(backend, boundary_of(request), limits)
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
        await _abort(receiver)
        raise errors.validation("the client went away before the upload was complete") from None
    except errors.APIError as exc:
        await _abort(receiver)
        if exc.code != 413 or total <= limits.max_request or not limits.max_request:
            await _drain(stream, total, limits.max_request)
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            receiver.abort()
        raise


async def _abort(receiver: _Receiver) -> None:
    """Abort off the event loop: an S3 abort is a network call."""
    await anyio.to_thread.run_sync(receiver.abort)


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

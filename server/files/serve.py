"""A stored file as an HTTP answer, from any backend: GET and HEAD, whole or one byte range.

Stored files are user content: images, plain text and JSON are served as themselves (the
caller's `inline_types`), anything else (HTML, SVG, JS, XML, ...) as an attachment of type
application/octet-stream. `Range: bytes=a-b` (also `a-` and `-n`) gets 206 with Content-Range; a
range past the end 416 with `Content-Range: bytes */size`; several ranges or a malformed header
the whole file (RFC 9110 lets a server ignore Range). Bytes are read from the backend only for GET,
and in chunks, never the whole file at once.
"""
from __future__ import annotations

import mimetypes
from email.utils import formatdate
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from server import errors
from server.files.backend import FileBackend

SAFE_INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
                         "text/plain", "application/json"})


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int):
        super().__init__(f"the range is outside the file's {size} bytes")
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range `header` asks for, as (first, last) inclusive; None for the whole file."""
    if not header or not header.strip().lower().startswith("bytes=") or "," in header:
        return None
    first, sep, last = header.strip()[6:].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) \
            or (last and not last.isdigit()):
        return None
    if not first:                                  # bytes=-n: the last n bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(size - int(last), 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        if last and int(last) < start:
            return None                            # invalid, so ignored
        raise RangeNotSatisfiable(size)
    return start, end


def presentation(name: str, inline_types: frozenset[str], download: bool) -> tuple[str, str | None]:
    """(media type, Content-Disposition or None) for a stored file called `name`."""
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if guessed in inline_types and not download:
        return guessed, None
    quoted = quote(name)
    filename = f"filename*=utf-8''{quoted}" if quoted != name else f'filename="{name}"'
    return "application/octet-stream", f"attachment; {filename}"


async def stored_response(backend: FileBackend, object_path: str, request: Request, *,
                          inline_types: frozenset[str] = SAFE_INLINE, download: bool = False) -> Response:
    """The answer for GET/HEAD of `object_path`; APIError (404, 403, 503, ...) for the caller to render."""
    info = await anyio.to_thread.run_sync(backend.stat, object_path)
    if info is None:
        raise errors.APIError(404, 0, f"not found: {object_path[:200]}")
    media, disposition = presentation(object_path.replace("\\", "/").rsplit("/", 1)[-1], inline_types, download)
    headers = {"accept-ranges": "bytes"}
    if disposition:
        headers["content-disposition"] = disposition
    if info.etag:
        headers["etag"] = info.etag
    if info.modified is not None:
        headers["last-modified"] = formatdate(info.modified, usegmt=True)
    try:
        span = parse_range(request.headers.get("range"), info.size)
    except RangeNotSatisfiable as exc:
        return JSONResponse({"error": str(exc), "code": 416}, status_code=416,
                            headers={"content-range": f"bytes */{exc.size}"})
    start, end = span or (0, info.size - 1)
    if span:
        headers["content-range"] = f"bytes {start}-{end}/{info.size}"
    headers["content-length"] = str(end - start + 1)
    status = 206 if span else 200
    if request.method == "HEAD" or info.size == 0:
        return Response(status_code=status, headers=headers, media_type=media)
    body = await anyio.to_thread.run_sync(backend.read, object_path, start, end)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=media)

"""The files listener, compatible with the ClearML SDK's uploads.

POST /  multipart/form-data; each part's *field name* is the object path to store it under
        (streamed once to its place, within the configured limits: server/files_upload.py).
GET /<path> returns the bytes; DELETE /<path> removes that one file (never a directory).

Every call needs `Authorization: Bearer <token>` (a token from auth.login). The web page's
session cookie is never accepted here: a page opened from this store must not act as the
signed-in user (the web origin's own /files route, server/web_proxy.py, is the cookie route).

Object paths (`confine`): names of at most 255 bytes, no NUL, no `..` (a path that resolves to
the files root or outside it, also through a symlink, is 403; other `..` paths are 400).

Stored files are user content (`stored_file`, shared with the web proxy): images, plain text
and JSON are served as themselves; anything else (HTML, SVG, JS, XML, ...) as an attachment of
type application/octet-stream. Every response carries nosniff and a sandbox CSP.
"""
from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import errors
from server.files.upload import Limits, receive_upload
from server.state import ServerState
from shipyard.protocol import Subcode

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
SAFE_INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
                         "text/plain", "application/json"})
SANDBOX_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
_HEADERS = ((b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", SANDBOX_CSP.encode()),
            (b"x-frame-options", b"DENY"))


def _segments(object_path: str) -> list[str]:
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


def confine(root: Path, object_path: str) -> Path:
    """Resolve `object_path` under `root`, refusing the root itself and anything outside it."""
    root_resolved = root.resolve()
    target = root_resolved.joinpath(*_segments(object_path)).resolve()
    if root_resolved not in target.parents:
        raise errors.APIError(403, 0, f"the path leads outside the files root: {object_path[:200]!r}")
    return target


def upload_target(root: Path, object_path: str) -> Path:
    """Where an uploaded part goes: like `confine`, and the path must end with a file name."""
    last = object_path.replace("\\", "/").rsplit("/", 1)[-1]
    if last in ("", ".", ".."):
        raise errors.validation(f"an object path must end with a file name: {object_path[:200]!r}")
    return confine(root, object_path)


def stored_file(target: Path, *, inline_types: frozenset[str] = SAFE_INLINE,
                download: bool = False) -> FileResponse:
    """A stored file as itself when its type may be shown inline, else as a download."""
    guessed = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    inline = guessed in inline_types and not download
    return FileResponse(target, media_type=guessed if inline else "application/octet-stream",
                        filename=None if inline else target.name,
                        content_disposition_type="inline" if inline else "attachment")


class SafeHeaders:
    """ASGI wrapper: every answer of the files listener (errors included) is nosniff and sandboxed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in _HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + list(_HEADERS)}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _auth(state: ServerState, request: Request) -> None:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        raise errors.unauthorized("The files server needs 'Authorization: Bearer <token>' "
                                  "(a token from auth.login)", Subcode.NO_CREDENTIALS)
    identity = state.signer.verify(token)
    if not state.keys_active(identity.user):
        raise errors.unauthorized("Credentials for this token were revoked", Subcode.INVALID_CREDENTIALS)


def _error(exc: errors.APIError) -> Response:
    return JSONResponse({"error": exc.msg, "code": exc.code}, status_code=exc.code)


async def upload(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    try:
        _auth(state, request)
        stored = await receive_upload(request, state.files_dir, Limits.of(state),
                                      lambda name: upload_target(state.files_dir, name))
        return JSONResponse(stored)
    except errors.APIError as exc:
        return _error(exc)


async def download(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    path = request.path_params["path"]
    if not path:
        return PlainTextResponse("OK")
    try:
        _auth(state, request)
        target = confine(state.files_dir, path)
    except errors.APIError as exc:
        return _error(exc)
    if not target.is_file():
        return JSONResponse({"error": f"not found: {path}", "code": 404}, status_code=404)
    return stored_file(target)


async def remove(request: Request) -> Response:
    """Remove one stored file. Directories are never removed through HTTP."""
    state: ServerState = request.app.state.shipyard
    path = request.path_params["path"]
    try:
        _auth(state, request)
        target = confine(state.files_dir, path)
        if target.is_dir():
            raise errors.APIError(409, 0, f"DELETE removes files, not directories: {path[:200]!r}")
        if not target.is_file():
            raise errors.APIError(404, 0, f"not found: {path[:200]}")
        target.unlink()
    except errors.APIError as exc:
        return _error(exc)
    except FileNotFoundError:
        return _error(errors.APIError(404, 0, f"not found: {path[:200]}"))
    return JSONResponse({"deleted": True})


def build_files_app(state: ServerState) -> Starlette:
    app = Starlette(routes=[
        Route("/", upload, methods=["POST"]),
        Route("/{path:path}", download, methods=["GET", "HEAD"]),
        Route("/{path:path}", remove, methods=["DELETE"]),
    ], middleware=[Middleware(SafeHeaders)])
    app.state.shipyard = state
    return app

"""The files listener, compatible with the ClearML SDK's uploads.

POST /  multipart/form-data; each part's *field name* is the object path to store it under
        (streamed once to its place, within the configured limits: server/files_upload.py).
GET /<path> returns the bytes; DELETE /<path> removes that one file (never a directory).

Every call needs `Authorization: Bearer <token>` (a token from auth.login). The web page's
session cookie is never accepted here: a page opened from this store must not act as the
signed-in user (the web origin's own /files route, server/web_proxy.py, is the cookie route).

Object paths (`backend.object_names`): names of at most 255 bytes, no NUL, no `..` (a path that
resolves to the files root or outside it, also through a symlink, is 403; other `..` paths are 400).
Where the bytes live is the server's storage backend (server/files/backend.py: a local directory
or an S3 bucket); every rule here holds for both.

Stored files are user content (`serve.stored_response`, shared with the web proxy): images, plain
text and JSON are served as themselves; anything else (HTML, SVG, JS, XML, ...) as an attachment
of type application/octet-stream. GET and HEAD take one byte range (206). Every response carries
nosniff and a sandbox CSP. A store that cannot be reached is 503 (retry), never a half-stored file.
"""
from __future__ import annotations

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import errors
from server.files.serve import stored_response
from server.files.upload import Limits, receive_upload
from server.state import ServerState
from shipyard.protocol import Subcode

SANDBOX_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
_HEADERS = ((b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", SANDBOX_CSP.encode()),
            (b"x-frame-options", b"DENY"))


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


async def _auth(state: ServerState, request: Request) -> None:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        raise errors.unauthorized("The files server needs 'Authorization: Bearer <token>' "
                                  "(a token from auth.login)", Subcode.NO_CREDENTIALS)
    identity = state.signer.verify(token)
    if not await state.key_active(identity.user):  # PostgreSQL: looked up off the loop
        raise errors.unauthorized("Credentials for this token were revoked", Subcode.INVALID_CREDENTIALS)


def _error(exc: errors.APIError) -> Response:
    headers = {"retry-after": "5"} if exc.code == 503 else None
    return JSONResponse({"error": exc.msg, "code": exc.code}, status_code=exc.code, headers=headers)


async def upload(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    try:
        await _auth(state, request)
        stored = await receive_upload(request, state.files, Limits.of(state))
        return JSONResponse(stored)
    except errors.APIError as exc:
        return _error(exc)


async def download(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    path = request.path_params["path"]
    if not path:
        return PlainTextResponse("OK")
    try:
        await _auth(state, request)
        return await stored_response(state.files, path, request)
    except errors.APIError as exc:
        return _error(exc)


async def remove(request: Request) -> Response:
    """Remove one stored file. Directories are never removed through HTTP."""
    state: ServerState = request.app.state.shipyard
    path = request.path_params["path"]
    try:
        await _auth(state, request)
        await anyio.to_thread.run_sync(state.files.delete, path)
    except errors.APIError as exc:
        return _error(exc)
    return JSONResponse({"deleted": True})


def build_files_app(state: ServerState) -> Starlette:
    app = Starlette(routes=[
        Route("/", upload, methods=["POST"]),
        Route("/{path:path}", download, methods=["GET", "HEAD"]),
        Route("/{path:path}", remove, methods=["DELETE"]),
    ], middleware=[Middleware(SafeHeaders)])
    app.state.shipyard = state
    return app

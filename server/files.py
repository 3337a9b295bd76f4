"""The files listener, compatible with the ClearML SDK's uploads.

POST /  multipart/form-data; each part's *field name* is the object path to store it under.
GET /<path> returns the bytes; DELETE /<path> removes them. Every call needs a valid token
(Bearer header, or the `token` cookie the web page sets). Paths are confined to the files dir.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from server import errors
from server.state import ServerState


def confine(root: Path, object_path: str) -> Path:
    """Resolve `object_path` under `root`, refusing anything that escapes it."""
    cleaned = object_path.replace("\\", "/").lstrip("/")
    if not cleaned or "\x00" in cleaned:
        raise errors.validation("empty or invalid object path")
    target = (root / cleaned).resolve()
    root_resolved = root.resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise errors.APIError(403, 0, f"path escapes the files root: {object_path!r}")
    return target


def _auth(state: ServerState, request: Request) -> None:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get("shipyard_token", "")
    if not token:
        raise errors.unauthorized("Missing authorization token", 20)
    identity = state.signer.verify(token)
    if not state.keys_active(identity.user):
        raise errors.unauthorized("Credentials for this token were revoked", 22)


def _error(exc: errors.APIError) -> Response:
    return JSONResponse({"error": exc.msg, "code": exc.code}, status_code=exc.code)


async def _save_upload(upload, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(1 << 20):
                out.write(chunk)
                size += len(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


async def upload(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    try:
        _auth(state, request)
        form = await request.form(max_files=1000, max_fields=1000, max_part_size=64 * 1024 * 1024)
        stored = []
        for field_name, value in form.multi_items():
            if not hasattr(value, "read"):
                continue
            target = confine(state.files_dir, field_name)
            await _save_upload(value, target)
            stored.append(field_name)
        await form.close()
        if not stored:
            raise errors.validation("no file parts in the upload")
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
    return FileResponse(target)


async def remove(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    try:
        _auth(state, request)
        target = confine(state.files_dir, request.path_params["path"])
    except errors.APIError as exc:
        return _error(exc)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    else:
        return JSONResponse({"error": "not found", "code": 404}, status_code=404)
    return JSONResponse({"deleted": True})


def build_files_app(state: ServerState) -> Starlette:
    app = Starlette(routes=[
        Route("/", upload, methods=["POST"]),
        Route("/{path:path}", download, methods=["GET", "HEAD"]),
        Route("/{path:path}", remove, methods=["DELETE"]),
    ])
    app.state.shipyard = state
    return app

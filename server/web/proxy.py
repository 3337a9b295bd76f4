"""What the page reaches through the web origin: the API and the stored files, in-process.

`/api/<service>.<action>` runs the API listener's own dispatcher (`server.api.handle`) on the
request, so the page speaks the very protocol the SDK does, as the identity of the session
cookie, which this proxy checks and hands over (the API listener itself never reads cookies).
Only POST with the `X-Shipyard-Web` header, from this origin, is taken: a page of another site
can neither set that header nor send the SameSite=Strict cookie.

`/files/<path>` serves what the files listener stores (artifacts, debug images, models). Stored
files are user content, so they are served sandboxed (`sandbox` CSP: no scripts, an origin of
their own, never a page of this origin): images, plain text and JSON inline, HTML inline too so
the page can show HTML debug samples in a sandboxed iframe (the only thing allowed to frame it is
this origin), everything else as a download.
"""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server import errors
from server.auth.keys import API_VERSION
from server.files.store import SAFE_INLINE, confine, stored_file
from server.rpc.api import ApiApp, envelope, handle
from server.state import ServerState
from server.web.session import same_origin, security_headers, session_identity

HEADER = "x-shipyard-web"
_RENDERED = SAFE_INLINE | {"text/html"}
_FILE_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


async def api(request: Request) -> Response:
    name = request.path_params["name"]
    if request.method != "POST" or request.headers.get(HEADER) != "1" or not same_origin(request):
        return envelope(name, API_VERSION, {}, 403, 0,
                        "The web API proxy takes POST requests from the Shipyard page only")
    state: ServerState = request.app.state.shipyard
    identity = session_identity(state, request)
    if identity is None:
        return envelope(name, API_VERSION, {}, 401, 20, "Not signed in (or the session expired)")
    api_app: ApiApp = request.app.state.api_app
    scope = dict(request.scope, path=f"/{name}", raw_path=f"/{name}".encode(), app=api_app,
                 root_path="")
    return await handle(Request(scope, request.receive), identity)


async def files(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    if session_identity(state, request) is None:
        return JSONResponse({"error": "not signed in", "code": 401}, status_code=401)
    path = request.path_params["path"]
    try:
        target = confine(state.files_dir, path)
    except errors.APIError as exc:
        return JSONResponse({"error": exc.msg, "code": exc.code}, status_code=exc.code)
    if not target.is_file():
        return JSONResponse({"error": f"not found: {path}", "code": 404}, status_code=404)
    response = stored_file(target, inline_types=_RENDERED,
                           download=request.query_params.get("download") is not None)
    response.headers["Cache-Control"] = "private, max-age=60"
    if response.media_type != "text/html":
        return security_headers(response, f"{_FILE_CSP}; frame-ancestors 'none'")
    security_headers(response, f"{_FILE_CSP}; frame-ancestors 'self'")
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response

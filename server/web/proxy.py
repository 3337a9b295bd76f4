"""What the page reaches through the web origin: the API and the stored files, in-process.

`/api/<service>.<action>` runs the API listener's own dispatcher (`server.api.handle`) on the
request, so the page speaks the very protocol the SDK does, as the identity of the session
cookie, which this proxy checks and hands over (the API listener itself never reads cookies).
Only POST with a client header, from this origin, is taken: `X-Shipyard-Web: 1` (the Shipyard
page) or `X-Allegro-Client` / `X-Clearml-Client` (the official ClearML web UI sends one on every
call). A page of another site can neither set such a header without a CORS preflight this
listener never grants nor send the SameSite=Strict cookie. `/api/v<version>/<endpoint>` is the
same route with the version the official UI puts in its paths.

The session is either cookie: the Shipyard page's sign-in, or the official UI's
`clearml_token_basic`, which `auth.login` sets when it is called through this route (HTTP Basic
with an access key and its secret, under the login guard) and `auth.logout`/`login.logout`
clear. Public endpoints (`login.supported_modes`, `auth.login`) answer without a session.

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
from server.files.serve import SAFE_INLINE, stored_response
from server.rpc import jsonutil
from server.rpc.api import ApiApp, envelope, handle
from server.rpc.registry import is_public
from server.state import ServerState
from server.web.session import COOKIE, UI_COOKIE, same_origin, security_headers, session_identity

HEADER = "x-shipyard-web"
UI_HEADERS = ("x-allegro-client", "x-clearml-client")  # the official web UI's client header
_LOGOUTS = frozenset({"auth.logout", "login.logout"})
# Read-only downloads the UI opens as links (GET, no custom header): taken from this origin only.
_LINK_DOWNLOADS = frozenset({"events.download_task_log", "organization.download_for_get_all"})
_RENDERED = SAFE_INLINE | {"text/html"}
_FILE_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


def _from_a_page_of_ours(request: Request, name: str) -> bool:
    """The CSRF check: POST, a client header no other site's page can send, this origin; or a
    read-only download link followed from this origin."""
    if request.method == "GET" and name in _LINK_DOWNLOADS:
        return same_origin(request)
    header = request.headers.get(HEADER) == "1" or any(request.headers.get(h) for h in UI_HEADERS)
    return request.method == "POST" and header and same_origin(request)


async def api(request: Request) -> Response:
    name = request.path_params["name"]
    if not _from_a_page_of_ours(request, name):
        return envelope(name, API_VERSION, {}, 403, 0,
                        "The web API proxy takes POST requests from this site's web pages only "
                        "(with their client header, from this origin)")
    state: ServerState = request.app.state.shipyard
    try:
        identity = await session_identity(state, request)
    except errors.APIError as exc:  # the key check's 503 at shutdown, in the protocol's envelope
        return envelope(name, API_VERSION, {}, exc.code, exc.subcode, exc.msg, exc.data)
    if identity is None and not is_public(name):
        return envelope(name, API_VERSION, {}, 401, 20, "Not signed in (or the session expired)")
    api_app: ApiApp = request.app.state.api_app
    version = request.path_params.get("version")
    path = f"/v{version}/{name}" if version else f"/{name}"
    scope = dict(request.scope, path=path, raw_path=path.encode(), app=api_app, root_path="")
    response = await handle(Request(scope, request.receive), identity)
    if name == "auth.login" and response.status_code == 200:
        _set_ui_cookie(request, response)
    elif name in _LOGOUTS:
        for cookie in (COOKIE, UI_COOKIE):
            response.delete_cookie(cookie, path="/", httponly=True, samesite="strict")
    return response


def _set_ui_cookie(request: Request, response: Response) -> None:
    """The official UI's session: the token `auth.login` just issued, in an HttpOnly cookie."""
    try:
        token = jsonutil.loads(bytes(response.body))["data"]["token"]
    except (ValueError, KeyError, TypeError):
        return
    state: ServerState = request.app.state.shipyard
    response.set_cookie(UI_COOKIE, token, max_age=state.signer.ttl_s, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


async def files(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    if await session_identity(state, request) is None:
        return JSONResponse({"error": "not signed in", "code": 401}, status_code=401)
    path = request.path_params["path"]
    try:
        response = await stored_response(state.files, path, request, inline_types=_RENDERED,
                                         download=request.query_params.get("download") is not None)
    except errors.APIError as exc:
        return JSONResponse({"error": exc.msg, "code": exc.code}, status_code=exc.code)
    response.headers["Cache-Control"] = "private, max-age=60"
    if response.media_type != "text/html":
        return security_headers(response, f"{_FILE_CSP}; frame-ancestors 'none'")
    security_headers(response, f"{_FILE_CSP}; frame-ancestors 'self'")
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response

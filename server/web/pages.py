"""The web listener: the experiment page.

A small static front end (plain ES modules and CSS under server/web/, no build step) that talks
to the API through this same origin (server/web_proxy.py). Everything but the sign-in page needs
the session cookie (server/web_session.py); without it pages redirect to /login and the JSON
routes answer 401.

Routes: /login (GET form, POST sign-in), /logout (POST), / (the page), /static/* (its assets),
/session (who is signed in, where the listeners are), /api/<endpoint> (the API, proxied),
/files/<path> (stored files, sandboxed), and ClearML-style result links
(/projects/<p>/tasks/<task>/...) that the SDK prints, redirected into the page. An APIError
that reaches a route (the session check's 503 while the server shuts down) is answered as JSON
with its code, not as a 500.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from server import errors
from server.rpc.api import ApiApp
from server.state import ServerState
from server.web import official_ui
from server.web import proxy as web_proxy
from server.web import session as web_session
from shipyard import __version__

ASSETS = Path(__file__).with_name("static")
PUBLIC_ASSETS = {"app.css"}  # the sign-in page's stylesheet
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}


async def _signed_in(request: Request) -> bool:
    return await web_session.session_identity(request.app.state.shipyard, request) is not None


async def index(request: Request) -> Response:
    if not await _signed_in(request):
        return RedirectResponse("/login", status_code=303)
    return web_session.security_headers(FileResponse(ASSETS / "index.html", media_type="text/html"))


async def static(request: Request) -> Response:
    name = request.path_params["path"]
    target = (ASSETS / name).resolve()
    if ASSETS.resolve() not in target.parents or not target.is_file() or target.suffix not in _TYPES:
        return JSONResponse({"error": "not found"}, status_code=404)
    if name not in PUBLIC_ASSETS and not await _signed_in(request):
        return JSONResponse({"error": "not signed in"}, status_code=401)
    response = FileResponse(target, media_type=_TYPES[target.suffix])
    response.headers["Cache-Control"] = "no-cache"  # revalidated (ETag): new code shows at once
    return web_session.security_headers(response)


async def session(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    identity = await web_session.session_identity(state, request)
    if identity is None:
        return JSONResponse({"error": "not signed in"}, status_code=401)
    return web_session.security_headers(JSONResponse({
        "user": identity.user_name or identity.user, "role": identity.role, "version": __version__,
        "api_url": state.api_url, "files_url": state.files_url, "web_url": state.web_url}))


async def clearml_link(request: Request) -> Response:
    """`{web}/projects/<project>/tasks/<task>/output/log` (the SDK's "results page") and the
    older `/experiments/` form: open that task in the page."""
    task = request.path_params["task"]
    kind = request.path_params["kind"]
    target = f"/#/task/{task}" if kind in ("tasks", "experiments") and task.isalnum() else "/"
    if not await _signed_in(request):
        target = f"/login?next={quote(target, safe='/')}"
    return RedirectResponse(target, status_code=303)


def build_web_app(state: ServerState) -> Starlette:
    """Shipyard's page, or with `state.web_ui` the official ClearML web UI build (official_ui.py)."""
    app = Starlette(routes=official_ui.routes() if state.web_ui is not None else _page_routes(),
                    exception_handlers={errors.APIError: _api_error})
    app.state.shipyard = state
    app.state.api_app = ApiApp(state)
    app.state.web_ui = state.web_ui
    return app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.APIError)  # registered for APIError only
    headers = {"Retry-After": "5"} if exc.code == 503 else None
    return web_session.security_headers(
        JSONResponse({"error": exc.msg, "code": exc.code}, status_code=exc.code, headers=headers))


def _page_routes() -> list[Route]:
    return [
        Route("/", index),
        Route("/login", web_session.login_form, methods=["GET"]),
        Route("/login", web_session.login_submit, methods=["POST"]),
        Route("/logout", web_session.logout, methods=["POST"]),
        Route("/session", session),
        Route("/static/{path:path}", static),
        Route("/api/{name}", web_proxy.api, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/api/v{version}/{name}", web_proxy.api, methods=["GET", "POST", "PUT", "DELETE"]),
        # ClearML's own webserver container strips /api before it proxies here (docs/official-ui.md)
        Route("/v{version}/{name}", web_proxy.api, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/files/{path:path}", web_proxy.files, methods=["GET", "HEAD"]),
        Route("/projects/{project}/{kind:str}/{task}", clearml_link),
        Route("/projects/{project}/{kind:str}/{task}/{rest:path}", clearml_link),
    ]

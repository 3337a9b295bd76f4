"""`shipyard server --web-ui DIR`: the official ClearML web UI, from a build a team brings.

The web listener then serves DIR in place of Shipyard's own page (docs/official-ui.md):

    /configuration.json          what the UI reads at start: its API at /api, its files through
                                 /files (the stored files' URLs rewritten there)
    /api/<endpoint>              the API, same origin, as the session's identity (proxy.py: the
    /api/v<version>/<endpoint>   UI's client header and this origin are required)
    /files/<path>                stored files, sandboxed (proxy.py)
    anything else                the build's file of that name, else index.html (the UI routes
                                 its pages itself: /projects/..., /login, ...)

Shipyard neither contains nor builds the UI; the directory is read as it is. Its files are
served as the build made them, with nosniff and no framing by other sites.
"""
from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from server.web import proxy as web_proxy
from shipyard.errors import ConfigError

_NO_CACHE = frozenset({"index.html", "configuration.json", "version.json"})


def check_build(directory: Path) -> Path:
    """The build directory, resolved; a ConfigError naming what is missing otherwise."""
    root = directory.expanduser().resolve()
    if not (root / "index.html").is_file():
        raise ConfigError(f"--web-ui {directory}: no index.html there; give the directory of a built "
                          "ClearML web UI (the one that holds index.html and its assets)")
    return root


def configuration(request: Request) -> dict:
    """What the UI merges over its built-in environment: the API at /api; `fileBaseUrl` is the
    files listener's address, the prefix of the file URLs the SDK stores, which the UI (with
    `useFilesProxy`) rewrites to this origin's /files/, where the session cookie is taken; no
    built-in credentials, nothing phoned home. `production: false` is what makes a production
    build rewrite them everywhere: it only decides whether file URLs skip the rewrite by default
    (debug samples, artifacts), and a build that skips it loads them from the files listener,
    which takes no cookie. The build's own mode is compiled in, not read from here."""
    state = request.app.state.shipyard
    return {"apiBaseUrl": "/api", "fileBaseUrl": state.files_url, "useFilesProxy": True,
            "userKey": "", "userSecret": "", "autoLogin": False, "communityServer": False,
            "hideUpdateNotice": True, "showSurvey": False, "GTM_ID": None,
            "productName": "clearml", "production": False}


def _headers(response: Response, name: str) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'self'; object-src 'none'; base-uri 'self'"
    if name in _NO_CACHE:
        response.headers["Cache-Control"] = "no-cache"
    return response


async def configuration_json(request: Request) -> Response:
    return _headers(JSONResponse(configuration(request)), "configuration.json")


def _build_file(root: Path, path: str) -> Path | None:
    """The build's own file at `path`, never one outside it."""
    if not path or "\\" in path or "\0" in path:
        return None
    target = (root / path).resolve()
    if root not in target.parents or not target.is_file():
        return None
    return target


async def asset(request: Request) -> Response:
    root: Path = request.app.state.web_ui
    path = request.path_params.get("path", "")
    if path.split("/", 1)[0] in ("api", "files"):  # a wrong method or shape on those routes
        return JSONResponse({"error": f"not found: /{path}"}, status_code=404)
    target = _build_file(root, path)
    if target is None:
        return _headers(FileResponse(root / "index.html", media_type="text/html"), "index.html")
    return _headers(FileResponse(target), target.name)


def routes() -> list[Route]:
    return [
        Route("/configuration.json", configuration_json),
        Route("/api/{name}", web_proxy.api, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/api/v{version}/{name}", web_proxy.api, methods=["GET", "POST", "PUT", "DELETE"]),
        # ClearML's own webserver container strips /api before it proxies here (docs/official-ui.md)
        Route("/v{version}/{name}", web_proxy.api, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/files/{path:path}", web_proxy.files, methods=["GET", "HEAD"]),
        Route("/", asset),
        Route("/{path:path}", asset, methods=["GET", "HEAD"]),
    ]

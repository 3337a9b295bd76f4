"""The web listener. Issue #11 grows this into the experiment page; for now it serves a
landing page that tells a person where the API and files listeners are."""
from __future__ import annotations

import html

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from server.state import ServerState
from shipyard import __version__


async def index(request: Request) -> HTMLResponse:
    state: ServerState = request.app.state.shipyard
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in (
        ("API server", state.api_url), ("Files server", state.files_url), ("Web server", state.web_url)))
    return HTMLResponse(f"<!doctype html><title>Shipyard</title><h1>Shipyard {__version__}</h1>"
                        f"<table>{rows}</table>")


def build_web_app(state: ServerState) -> Starlette:
    app = Starlette(routes=[Route("/", index)])
    app.state.shipyard = state
    return app

"""Web sign-in: an access key and secret are exchanged for a session cookie.

The cookie holds a token from the server's own signer (the same kind `auth.login` issues); only
this web listener reads it (the page's API proxy hands its identity to the dispatcher). It is
HttpOnly and SameSite=Strict: page scripts never see it and other sites' pages never send it.
Requests that change something must also come from this origin (checked on `Origin`, when a
browser sends it). Sign-in runs under the same guard as `auth.login` (server/login_guard.py):
failures back off per key and per address, and the secret is hashed off the event loop.
"""
from __future__ import annotations

import html
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server import errors
from server.auth.keys import Identity
from server.auth.login_guard import Throttled
from server.state import ServerState
from shipyard import __version__

COOKIE = "shipyard_token"
# The official ClearML web UI's session cookie (what `auth.login` sets through this listener's
# /api route): read by this listener only, like COOKIE (see server/web/proxy.py).
UI_COOKIE = "clearml_token_basic"
SESSION_TTL_S = 12 * 3600
# Pages, scripts and styles come from this origin only; images may be data: URIs (the charts
# are inline SVG, which needs no exception). No framing.
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def security_headers(response: Response, csp: str = PAGE_CSP) -> Response:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def session_identity(state: ServerState, request: Request) -> Identity | None:
    """The signed-in identity, or None when the cookie is missing, expired, forged or revoked.
    Whether its key is still active is the API's check (`ServerState.key_active`: on PostgreSQL
    looked up off the event loop); a look-up after the handler pool closed raises its 503."""
    for name in (COOKIE, UI_COOKIE):
        identity = await _cookie_identity(state, request.cookies.get(name, ""))
        if identity is not None:
            return identity
    return None


async def _cookie_identity(state: ServerState, token: str) -> Identity | None:
    if not token:
        return None
    try:
        identity = state.signer.verify(token)
    except errors.APIError:
        return None
    return identity if identity.user and await state.key_active(identity.user) else None


def same_origin(request: Request) -> bool:
    """False when a browser says the request comes from a page of another origin."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False  # a browser that sends Fetch metadata says where the request came from
    origin = request.headers.get("origin")
    if origin is None:  # not sent: not a cross-origin request from a browser
        return True
    # Host only, not scheme: behind a TLS-terminating proxy the request here is plain http.
    host = request.headers.get("host", "")
    sent = urlsplit(origin)
    if ":" not in host.rsplit("]", 1)[-1]:  # a proxy that passes nginx's $host drops the port
        return (sent.hostname or "") == host.strip("[]").lower()
    return sent.netloc == host


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this site only (never `//host` or a URL)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _login_page(error: str = "", access_key: str = "", status_code: int = 200, next_url: str = "/") -> Response:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · Shipyard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/app.css"></head>
<body class="login-body">
<form class="login" method="post" action="/login" autocomplete="off">
  <h1>Shipyard</h1>
  <p class="muted">Sign in with an API access key and its secret
  (<code>shipyard keys create</code> makes one).</p>
  {message}
  <label>Access key <input name="access_key" id="access_key" required autofocus
         value="{html.escape(access_key)}" spellcheck="false"></label>
  <label>Secret key <input name="secret_key" id="secret_key" type="password" required
         autocomplete="current-password"></label>
  <input type="hidden" name="next" value="{html.escape(next_url)}">
  <button type="submit" id="sign_in">Sign in</button>
  <p class="muted small">Shipyard {html.escape(__version__)}</p>
</form></body></html>"""
    return security_headers(HTMLResponse(body, status_code=status_code))


async def login_form(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    next_url = safe_next(request.query_params.get("next"))
    if await session_identity(state, request) is not None:
        return RedirectResponse(next_url, status_code=303)
    return _login_page(next_url=next_url)


async def login_submit(request: Request) -> Response:
    state: ServerState = request.app.state.shipyard
    if not same_origin(request):
        return _login_page("This sign-in form was sent from another site.", status_code=403)
    form = await request.form(max_files=0, max_fields=10)
    access = str(form.get("access_key") or "").strip()
    secret = str(form.get("secret_key") or "")
    next_url = safe_next(str(form.get("next") or ""))
    if not access or not secret:
        return _login_page("Enter both the access key and the secret key.", access, 400, next_url)
    try:
        address = request.client.host if request.client else ""
        identity = await state.login_guard.sign_in(state.keys, access, secret, address)
    except Throttled as exc:
        page = _login_page(f"Too many failed sign-ins; try again in {exc.retry_after_s} s.", access, 429, next_url)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    except errors.APIError:
        return _login_page("Unknown access key or wrong secret.", access, 401, next_url)
    token = state.signer.issue(identity, ttl_s=SESSION_TTL_S)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(COOKIE, token, max_age=SESSION_TTL_S, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return security_headers(response)


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    if same_origin(request):
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return security_headers(response)

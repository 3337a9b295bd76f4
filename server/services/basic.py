"""auth.*, server.*, debug.* and the users calls clients make in passing."""
from __future__ import annotations

from starlette.responses import Response

from server import errors
from server.auth.keys import API_VERSION, SERVER_VERSION, Identity, parse_basic
from server.auth.login_guard import Throttled
from server.rpc.api import envelope
from server.rpc.registry import CallContext, Request, endpoint
from shipyard import __version__
from shipyard.protocol import (
    CLAIM_COUNT,
    CLAIMS,
    MAX_CLAIM_COUNT,
    RENEW_LEASES,
    SET_MESSAGES,
    START_RUN,
    START_RUNS,
    Subcode,
)

# Shipyard extensions, advertised so our agent can tell our server from a reference one.
EXTENSIONS = {
    "long_poll": {"endpoint": "queues.get_next_task", "field": "wait_s", "max_s": 60},
    "claim_many": {"endpoint": "queues.get_next_task", "field": CLAIM_COUNT, "reply_field": CLAIMS,
                   "max": MAX_CLAIM_COUNT},
    "json_lines": True,
    "status_messages": {"endpoint": SET_MESSAGES, "compare_field": "expect", "fence_field": "attempt"},
    "task_watch": {"endpoint": "tasks.wait_status", "field": "wait_s", "max_s": 60},
    "leases": {"request_field": "lease_s", "renew": "tasks.renew_lease", "release": "tasks.release",
               "reconcile": "workers.reconcile", "fence_field": "attempt", "record_exit": "tasks.record_exit",
               "renew_many": RENEW_LEASES},
    "task_keys": {"mint": "auth.create_credentials", "role": "task", "extend": "auth.extend_credentials",
                  "revoke": "auth.revoke_credentials", "start": START_RUN,
                  "start_many": START_RUNS},
}


@endpoint("auth.login", public=True)
async def login(ctx: CallContext, req: Request) -> dict | Response:
    """A token for a key pair (HTTP Basic, under the login guard) or for a live token. A requested
    `expiration_sec` above the server's token_ttl_s is capped to it, not refused (the reference
    schema: "not guaranteed, might be overridden by the service")."""
    state = ctx.settings
    try:
        identity = await _login_identity(ctx)
    except Throttled as exc:
        return _throttled(ctx, exc)
    ttl = req.integer("expiration_sec")
    ttl = min(ttl, state.signer.ttl_s) if ttl and ttl > 0 else None
    return {"token": state.signer.issue(identity, ttl_s=ttl)}


async def _login_identity(ctx: CallContext) -> Identity:
    state = ctx.settings
    header = ctx.authorization
    if header.lower().startswith("basic "):
        access, secret = parse_basic(header)
        return await state.login_guard.sign_in(state.keys, access, secret, ctx.client_ip)
    if header.lower().startswith("bearer "):
        identity = state.signer.verify(header[7:].strip())
        if not await state.key_active(identity.user):
            raise errors.unauthorized("Credentials for this token were revoked", Subcode.INVALID_CREDENTIALS)
        return identity
    raise errors.unauthorized("Missing credentials: use HTTP Basic with access_key:secret_key", Subcode.NO_CREDENTIALS)


def _throttled(ctx: CallContext, exc: Throttled) -> Response:
    """429 in the envelope, with Retry-After (a raised APIError would carry no header)."""
    response = envelope(ctx.endpoint, ctx.version, {}, exc.code, exc.subcode, exc.msg, exc.data)
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


@endpoint("server.info", public=True)
def info(ctx: CallContext, req: Request) -> dict:
    return {"version": SERVER_VERSION, "build": f"shipyard-{__version__}", "commit": "",
            "uid": "shipyard", "api_version": API_VERSION,
            "shipyard": {"version": __version__, "extensions": EXTENSIONS}}


@endpoint("debug.ping", public=True)
def ping(ctx: CallContext, req: Request) -> dict:
    echo = {k: v for k, v in req.body.items() if k != "__lines__"}
    return {"msg": "ClearML server", **echo}


@endpoint("server.report_stats_option")
def report_stats_option(ctx: CallContext, req: Request) -> dict:
    """Shipyard sends no usage statistics anywhere: never supported, never enabled."""
    req.flag("enabled")
    return {"supported": False, "enabled": False, "current_version": SERVER_VERSION}


@endpoint("server.get_stats")
def get_stats(ctx: CallContext, req: Request) -> dict:
    """The reference server's collected statistics are for its maker's telemetry; none here."""
    req.integer("interval")
    return {}


@endpoint("login.supported_modes", public=True)
def supported_modes(ctx: CallContext, req: Request) -> dict:
    """A single-tenant server with fixed users: the official web UI shows its user name and
    password form (an access key and its secret), no guest, no SSO. `authenticated` says whether
    the call came with a live web session (the web listener's cookie)."""
    return {"basic": {"enabled": True, "guest": {"enabled": False}}, "sso": {}, "sso_providers": [],
            "server_errors": {"missed_es_upgrade": False, "es_connection_error": False},
            "authenticated": bool(ctx.identity.user)}


@endpoint("auth.logout")
def auth_logout(ctx: CallContext, req: Request) -> dict:
    """Ends a web session: the web listener drops its cookie on this answer (tokens are not revoked)."""
    return {}


@endpoint("login.logout", public=True)
def login_logout(ctx: CallContext, req: Request) -> dict:
    return {}

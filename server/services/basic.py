"""auth.*, server.*, debug.* and the users calls clients make in passing."""
from __future__ import annotations

from starlette.responses import Response

from server import errors
from server.auth.keys import API_VERSION, SERVER_VERSION, Identity, parse_basic
from server.auth.login_guard import Throttled
from server.rpc.api import envelope
from server.rpc.registry import CallContext, Request, endpoint
from shipyard import __version__
from shipyard.protocol import Subcode

# Shipyard extensions, advertised so our agent can tell our server from a reference one.
EXTENSIONS = {
    "long_poll": {"endpoint": "queues.get_next_task", "field": "wait_s", "max_s": 60},
    "json_lines": True,
    "leases": {"request_field": "lease_s", "renew": "tasks.renew_lease", "release": "tasks.release",
               "reconcile": "workers.reconcile", "fence_field": "attempt", "record_exit": "tasks.record_exit"},
    "task_keys": {"mint": "auth.create_credentials", "role": "task", "extend": "auth.extend_credentials",
                  "revoke": "auth.revoke_credentials"},
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
        if not state.keys_active(identity.user):
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


@endpoint("users.get_current_user")
def current_user(ctx: CallContext, req: Request) -> dict:
    ident = ctx.identity
    return {"user": {"id": ident.user, "name": ident.user_name, "company": {"id": ident.company,
                                                                           "name": ident.company},
                     "role": ident.role, "preferences": {}},
            "getting_started": {}, "settings": {}}


@endpoint("users.get_all")
def users_all(ctx: CallContext, req: Request) -> dict:
    return {"users": [{"id": ctx.identity.user, "name": ctx.identity.user_name}]}

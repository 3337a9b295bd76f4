"""auth.create_credentials / revoke_credentials / extend_credentials: short-lived keys for machines.

The autoscaler mints one key per instance it starts (`label` names the instance), puts it in
that machine's user data instead of a long-lived secret, keeps pushing its expiry forward
while the machine lives, and revokes it when the machine is terminated. A minted key has the
`user` role, so a machine can never mint or revoke keys of others. Revocation through the API
takes effect on the next request (the per-process "key active" cache is dropped for it).
"""
from __future__ import annotations

from server import errors
from server.registry import CallContext, Request, endpoint
from shipyard import clock

MAX_TTL_S = 30 * 24 * 3600.0
DEFAULT_TTL_S = 24 * 3600.0


def _require_admin(ctx: CallContext, what: str) -> None:
    if ctx.identity.role != "admin":
        raise errors.APIError(403, 0, f"Only an admin may {what} (caller role: {ctx.identity.role})")


def _ttl(req: Request) -> float:
    ttl = req.float("expires_in_s", DEFAULT_TTL_S)
    if not 0 < ttl <= MAX_TTL_S:
        raise errors.validation(f"expires_in_s must be > 0 and <= {MAX_TTL_S:g}, got {ttl:g}")
    return ttl


@endpoint("auth.create_credentials")
def create_credentials(ctx: CallContext, req: Request) -> dict:
    _require_admin(ctx, "create credentials")
    label = (req.str("label") or "").strip()
    expires = clock.now() + _ttl(req)
    access, secret = ctx.settings.keys.create(name=label or "short-lived", role="user", expires=expires,
                                              instance=label or None)
    return {"access_key": access, "secret_key": secret, "expires": clock.iso(expires), "label": label}


@endpoint("auth.extend_credentials")
def extend_credentials(ctx: CallContext, req: Request) -> dict:
    _require_admin(ctx, "extend credentials")
    access = req.str("access_key", required=True)
    expires = clock.now() + _ttl(req)
    if not ctx.settings.keys.extend(access, expires):
        raise errors.APIError(400, 0, f"Cannot extend credentials {access}: unknown, revoked or not short-lived")
    ctx.settings.forget_key(access)
    return {"access_key": access, "expires": clock.iso(expires)}


@endpoint("auth.revoke_credentials")
def revoke_credentials(ctx: CallContext, req: Request) -> dict:
    access = req.str("access_key", required=True)
    if ctx.identity.role != "admin" and ctx.identity.user != access:
        raise errors.APIError(403, 0, "Only an admin may revoke credentials other than the caller's own")
    revoked = ctx.settings.keys.revoke(access)
    ctx.settings.forget_key(access)
    return {"revoked": 1 if revoked else 0}

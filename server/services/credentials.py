"""auth.create_credentials / revoke_credentials / extend_credentials: short-lived keys.

Two callers mint keys here:

* the autoscaler (an admin key) mints one `user` key per machine it starts (`label` names the
  instance), keeps pushing its expiry forward while the machine lives and revokes it when the
  machine is terminated;
* an agent (an `agent` or admin key) mints one `task` key per run (`role: task`, `label` = the
  task id), hands it to the task process instead of its own key, extends it while the run lives
  and revokes it when the run ends.

Who may mint which role, and extend or revoke which key, is `server.auth.may_mint` and
`may_revoke`: a non-admin never mints an admin or agent key, a `user` or `task` key mints
nothing and revokes only itself. The minting key is recorded on the new key (`minted_by`).
Revocation through the API takes effect on the next request (the per-process "key active"
cache is dropped for it).
"""
from __future__ import annotations

from server import errors
from server.auth.keys import ADMIN, AGENT, ROLES, TASK, USER, may_mint, may_revoke
from server.rpc.registry import CallContext, Request, endpoint
from shipyard import clock

MAX_TTL_S = 30 * 24 * 3600.0
DEFAULT_TTL_S = 24 * 3600.0


def _forbidden(msg: str) -> errors.APIError:
    return errors.APIError(403, 0, msg)


def _ttl(req: Request) -> float:
    ttl = req.number("expires_in_s", DEFAULT_TTL_S)
    if not 0 < ttl <= MAX_TTL_S:
        raise errors.validation(f"expires_in_s must be > 0 and <= {MAX_TTL_S:g}, got {ttl:g}")
    return ttl


def _requested_role(ctx: CallContext, req: Request) -> str:
    """The `role` field, or the role this caller mints by default (an agent: task keys)."""
    role = req.text("role")
    if role is None:
        return TASK if ctx.identity.role == AGENT else USER
    if role not in ROLES:
        raise errors.validation(f"field 'role' must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def _check_revoke(ctx: CallContext, access: str) -> None:
    """Admins revoke any key (an unknown one is a no-op), others their own or the ones they minted."""
    if ctx.identity.role == ADMIN:
        return
    key = ctx.settings.keys.get(access)
    if key is None or not may_revoke(ctx.identity, key):
        raise _forbidden("Only an admin may revoke credentials other than the caller's own"
                         + (" or those it minted" if ctx.identity.role == AGENT else "")
                         + f" (caller role: {ctx.identity.role})")


@endpoint("auth.create_credentials")
def create_credentials(ctx: CallContext, req: Request) -> dict:
    role = _requested_role(ctx, req)
    if not may_mint(ctx.identity.role, role):
        raise _forbidden(f"A key of role '{ctx.identity.role}' may not create '{role}' credentials"
                         + (" (an agent mints only task keys)" if ctx.identity.role == AGENT else
                            " (only an admin or an agent creates credentials)"))
    label = (req.text("label") or "").strip()
    expires = clock.now() + _ttl(req)
    access, secret = ctx.settings.keys.create(name=label or "short-lived", role=role, expires=expires,
                                              instance=label or None, minted_by=ctx.identity.user)
    return {"access_key": access, "secret_key": secret, "expires": clock.iso(expires), "label": label,
            "role": role}


@endpoint("auth.extend_credentials")
def extend_credentials(ctx: CallContext, req: Request) -> dict:
    access = req.text("access_key", required=True)
    if ctx.identity.role != ADMIN:  # never a key itself: a short-lived key must not outlive its minter's will
        key = ctx.settings.keys.get(access)
        if ctx.identity.role != AGENT or key is None or key.get("minted_by") != ctx.identity.user:
            raise _forbidden("Only an admin, or the agent that minted them, may extend credentials "
                             f"(caller role: {ctx.identity.role})")
    expires = clock.now() + _ttl(req)
    if not ctx.settings.keys.extend(access, expires):
        raise errors.APIError(400, 0, f"Cannot extend credentials {access}: unknown, revoked or not short-lived")
    ctx.settings.forget_key(access)
    return {"access_key": access, "expires": clock.iso(expires)}


@endpoint("auth.revoke_credentials")
def revoke_credentials(ctx: CallContext, req: Request) -> dict:
    access = req.text("access_key", required=True)
    _check_revoke(ctx, access)
    revoked = ctx.settings.keys.revoke(access)
    ctx.settings.forget_key(access)
    return {"revoked": 1 if revoked else 0}

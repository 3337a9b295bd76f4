"""The caller's own account on a single-tenant server, where a key is a user.

    auth.get_credentials    the caller's key and the live keys it minted: access key, label,
                            never a secret (only the secret's salted hash is stored anyway)
    auth.edit_credentials   relabel a key: the caller's own, one it minted, or any for an admin
                            (the rule of revoking, server.auth.may_revoke)
    auth.fixed_users_mode   yes: the server's users are its keys, fixed by whoever runs it
    users.update            a user's display name is its key's label; a user edits only itself,
                            an admin anyone (`given_name`/`family_name` make the name when no
                            `name` is given; `avatar` is not stored)
"""
from __future__ import annotations

from sqlalchemy import and_, or_, select

from server import errors
from server.auth.keys import ADMIN, TASK, may_revoke
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.storage import tables as t
from shipyard import clock

MAX_LABEL = 200


def _forbidden(msg: str) -> errors.APIError:
    return errors.APIError(403, 0, msg)


@endpoint("auth.get_credentials")
def get_credentials(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    c = t.credentials.c
    mine = or_(c.access_key == ctx.identity.user, and_(c.minted_by == ctx.identity.user, c.role != TASK))
    stmt = (select(c.access_key, c.name, c.expires).where(mine, c.revoked.is_(False))
            .order_by(c.created))
    with ctx.store.tx() as conn:
        rows = list(conn.execute(stmt))
    now = clock.now()
    return {"credentials": [{"access_key": row.access_key, "label": row.name} for row in rows
                            if row.expires is None or row.expires > now]}


def _label(req: Request, field: str) -> str:
    label = str(req.text(field) or "").strip()
    if len(label) > MAX_LABEL:
        raise errors.validation(f"field '{field}' must be at most {MAX_LABEL} characters")
    return label


@endpoint("auth.edit_credentials")
def edit_credentials(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    access = req.text("access_key", required=True)
    label = _label(req, "label")
    key = ctx.settings.keys.get(access)
    if ctx.identity.role == ADMIN and key is None:
        raise errors.APIError(400, 0, f"Unknown access key: {access}", {"access_key": access})
    if key is None or not may_revoke(ctx.identity, key):
        raise _forbidden(f"A key may edit only its own credentials or those it minted "
                         f"(caller role: {ctx.identity.role})")
    return {"updated": 1 if ctx.settings.keys.relabel(access, label) else 0}


@endpoint("auth.fixed_users_mode", public=True)
def fixed_users_mode(ctx: CallContext, req: Request) -> dict:
    return {"enabled": True, "server_errors": {"missed_es_upgrade": False, "es_connection_error": False}}


def _new_name(req: Request) -> str:
    name = _label(req, "name")
    if name:
        return name
    return " ".join(part for part in (_label(req, "given_name"), _label(req, "family_name")) if part)


@endpoint("users.update")
def update_user(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    user = req.id("user", "user")
    if user != ctx.identity.user and ctx.identity.role != ADMIN:
        raise _forbidden(f"A user may update only itself (caller role: {ctx.identity.role})")
    name = _new_name(req)
    if not name:
        return {"updated": 0, "fields": {}}
    if not ctx.settings.keys.relabel(user, name):
        raise errors.APIError(400, 400, f"Invalid user id: {user}", {"id": user})
    return {"updated": 1, "fields": {"name": name}}

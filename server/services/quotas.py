"""quotas.*: GPU quotas of users and projects (Shipyard's own service, not in ClearML's schema; admin
keys only; the API routes two-part names, hence not `shipyard.quotas.*`).

    quotas.get_all   every quota in force, with where it comes from (`config`: the server's
                              `quotas` setting; `api`: set here) and the entity's usage now
    quotas.set       {user | project, gpus, borrow?}: set (or replace) one entity's quota;
                              an API entry overrides the setting's entry for the same entity
    quotas.delete    {user | project}: drop the API entry (a setting's entry stays)

The fair-share order and preemption read them through server/fairshare/usage.py's QuotaBook.
"""
from __future__ import annotations

from sqlalchemy import delete, select, update

from server import errors
from server.auth.keys import ADMIN
from server.fairshare import policy
from server.fairshare import usage as fair
from server.rpc.registry import CallContext, Request, endpoint
from server.storage import tables as t
from shipyard import clock

MAX_GPUS = 100_000
_Q = t.fair_quotas


def _admin(ctx: CallContext) -> None:
    if ctx.identity.role != ADMIN:
        raise errors.APIError(403, 0, f"Only an admin key may read or change quotas (caller role: {ctx.identity.role})")


def _entity(req: Request) -> str:
    user, project = req.text("user"), req.text("project")
    if bool(user) == bool(project):
        raise errors.validation("give exactly one of the fields 'user' and 'project' (a non-empty id)")
    return f"user:{user}" if user else f"project:{project}"


def _book(ctx: CallContext) -> fair.QuotaBook:
    found = fair.book(ctx)
    if found is None:
        raise errors.validation("quotas need a running server's settings")
    return found


@endpoint("quotas.get_all")
def get_all(ctx: CallContext, req: Request) -> dict:
    _admin(ctx)
    book = _book(ctx)
    with ctx.store.tx() as conn:
        merged, stored = book.quotas(conn), book.stored(conn)
        found = fair.standings(conn, set(merged), merged, book.settings, clock.now())
    rows = []
    for entity in sorted(merged):
        kind, _, name = entity.partition(":")
        quota, standing = merged[entity], found[entity]
        rows.append({kind: name, "entity": entity, "gpus": quota.gpus, "borrow": quota.borrow,
                     "source": "api" if entity in stored else "config", "running_gpus": standing.running,
                     "gpu_hours": round(standing.usage / 3600.0, 3)})
    return {"quotas": rows, "half_life_h": book.settings.half_life_s / 3600.0,
            "preemption": book.settings.preemption}


@endpoint("quotas.set")
def set_quota(ctx: CallContext, req: Request) -> dict:
    _admin(ctx)
    entity = _entity(req)
    gpus = req.integer("gpus", required=True)
    if not 0 <= gpus <= MAX_GPUS:
        raise errors.validation(f"field 'gpus' must be between 0 and {MAX_GPUS}, got {gpus}")
    borrow = req.flag("borrow", True)
    book = _book(ctx)
    with ctx.store.tx() as conn:
        values = {"gpus": gpus, "borrow": borrow, "updated": clock.now()}
        if conn.execute(select(_Q.c.entity).where(_Q.c.entity == entity)).first():
            conn.execute(update(_Q).where(_Q.c.entity == entity).values(**values))
        else:
            conn.execute(_Q.insert().values(entity=entity, **values))
    book.invalidate()
    quota = policy.Quota(gpus, borrow)
    return {"entity": entity, "gpus": quota.gpus, "borrow": quota.borrow}


@endpoint("quotas.delete")
def delete_quota(ctx: CallContext, req: Request) -> dict:
    _admin(ctx)
    entity = _entity(req)
    book = _book(ctx)
    with ctx.store.tx() as conn:
        removed = conn.execute(delete(_Q).where(_Q.c.entity == entity)).rowcount
    book.invalidate()
    return {"deleted": removed, "entity": entity}

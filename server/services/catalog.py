"""What the server itself offers: server.endpoints and storage.get_settings.

    server.endpoints      the registered endpoints, each with the schema versions it is listed
                          at (server/rpc/compat.py), for an admin (the reference server keeps it
                          for its system role)
    storage.get_settings  a server without storage settings: no buckets, no credentials.
                          Shipyard never keeps cloud storage secrets for browsers (compat.py:
                          storage.set_settings is unsupported), so this answer is always empty
"""
from __future__ import annotations

from server import errors
from server.auth.keys import ADMIN
from server.rpc import compat, registry, schema
from server.rpc.registry import CallContext, Request, endpoint


@endpoint("server.endpoints")
def endpoints(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    if ctx.identity.role != ADMIN:
        raise errors.APIError(403, 0, f"server.endpoints is for an admin key (caller role: {ctx.identity.role})")
    listed = compat.schema_endpoints()
    registered = set(registry.names())
    return {"endpoints": {name: [{"min_version": v} for v in (listed.get(name) or {}).get("versions", [])]
                          for name in sorted(registered)},
            "models": {}}


@endpoint("storage.get_settings")
def get_settings(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    return {"settings": {"aws": {"buckets": []}, "google": {"buckets": []}, "azure": {"containers": []}}}

"""The *_many endpoints' common runner (tasks, models): one action per id, answered per id.

As on the reference server, a batch never fails as a whole for one bad id: every id is tried on
its own through the single-item endpoint, and the answer lists what `succeeded` (with that
endpoint's fields, shaped by the caller) and what `failed` (with the error's codes and message).
"""
from __future__ import annotations

from typing import Any, Callable

from server import errors
from server.rpc.registry import CallContext, Request

MAX_IDS = 1000
Single = Callable[[CallContext, Request], dict]
Shape = Callable[[dict], dict[str, Any]]


def ids(req: Request, kind: str) -> list[str]:
    """The batch's ids, each once, in order; a 400 naming `ids` when there are none or too many."""
    given: list[str] = req.str_list("ids") or []
    if not given:
        raise errors.missing_field("ids")
    if len(given) > MAX_IDS:
        raise errors.validation(f"field 'ids' holds at most {MAX_IDS} {kind} ids")
    return list(dict.fromkeys(given))


def failure(item_id: str, err: errors.APIError) -> dict:
    return {"id": item_id, "error": {"codes": [err.code, err.subcode], "msg": err.msg, "data": {}}}


def each_id(ctx: CallContext, req: Request, single: Single, *, field: str, shape: Shape) -> dict:
    """Call `single` once per id (passed as `field`) with the batch's other fields."""
    shared = {k: v for k, v in req.body.items() if k != "ids"}
    succeeded: list[dict] = []
    failed: list[dict] = []
    for item_id in ids(req, field):
        try:
            result = single(ctx, Request({**shared, field: item_id}))
        except errors.APIError as err:
            failed.append(failure(item_id, err))
            continue
        succeeded.append({"id": item_id, **shape(result)})
    return {"succeeded": succeeded, "failed": failed}

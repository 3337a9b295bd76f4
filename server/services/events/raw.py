"""events.* reads of raw points and small odds and ends: scalar_metrics_iter_raw (every point of
a metric, for the UI's full-detail chart), get_scalar_metric_data, get_vector_metrics_and_variants,
clear_scroll and delete_for_model.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from server import errors
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events.read import (
    check_request,
    decode_scroll,
    encode_scroll,
    require_target,
)
from server.services.events.store import SCALAR, VECTOR, delete_task_events
from server.storage import tables as t
from shipyard.protocol import Subcode

RAW_DEFAULT = 10_000
RAW_MAX = 200_000  # the reference server's bound on one scalar_metrics_iter_raw answer
METRIC_DATA_PAGE = 10_000
RAW_KEYS = ("iter", "timestamp", "iso_time")


# -- scalar_metrics_iter_raw -------------------------------------------------------------------


def _raw_scroll(req: Request) -> dict | None:
    state = decode_scroll(req.raw("scroll_id"), "raw", batch=int, key=str)
    if state is None:
        return None
    if state["key"] not in RAW_KEYS or not all(state.get(k) is None or type(state.get(k)) is int
                                               for k in ("after", "total")):
        raise errors.validation(f"invalid scroll_id {req.raw('scroll_id')!r}")
    return state


def _raw_size(req: Request, scroll: dict | None) -> int:
    size = req.integer("batch_size")
    if size is not None and size < 0:
        raise errors.validation("field 'batch_size' must be >= 0")
    return min(size or (scroll["batch"] if scroll else RAW_DEFAULT), RAW_MAX)


def _raw_query(task_id: str, metric: dict, key: str) -> Any:
    c = t.events.c
    field = c.iter if key == "iter" else c.timestamp
    query = select(field, c.seq, c.variant, c.value).where(c.task == task_id, c.type == SCALAR,
                                                           c.metric == metric["metric"])
    if metric.get("variants"):
        query = query.where(c.variant.in_(metric["variants"]))
    return query, field


def _raw_page(conn, query: Any, field: Any, after: int | None, size: int) -> list:
    """`size` points past `after` by the key, plus the rest of those at the last key value (a
    page never splits one iteration/timestamp, so the next page starts right after it)."""
    c = t.events.c
    first = query if after is None else query.where(field > after)
    page = conn.execute(first.order_by(field, c.seq).limit(size)).all()
    if len(page) == size and page:
        page += conn.execute(query.where(field == page[-1][0], c.seq > page[-1][1]).order_by(c.seq)).all()
    return page


def _raw_total(conn, query: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


@endpoint("events.scalar_metrics_iter_raw")
def scalar_metrics_iter_raw(ctx: CallContext, req: Request) -> dict:
    """Every point of one metric (`metric.variants`, or all its variants) by the `key` axis, a
    batch at a time: {variants: {variant: {y: [...], <key>: [...]}}, returned, total, scroll_id}.
    `total` is counted with `count_total` only; a page with `returned` 0 is the end."""
    check_request(ctx, req)
    scroll = _raw_scroll(req)
    key = scroll["key"] if scroll else req.text("key") or "iter"  # a scroll keeps the axis it was opened on
    size = _raw_size(req, scroll)
    with ctx.store.tx() as conn:
        query, field = _raw_query(require_target(ctx, conn, req.raw("task")), req.mapping("metric"), key)
        total = scroll["total"] if scroll else None
        if total is None and req.flag("count_total"):
            total = _raw_total(conn, query)
        done = scroll is not None and scroll.get("after") is None
        page = [] if done else _raw_page(conn, query, field, scroll.get("after") if scroll else None, size)
    variants: dict[str, dict[str, list]] = {}
    for x, _seq, variant, value in page:
        points = variants.setdefault(variant, {"y": [], key: []})
        points["y"].append(value)
        points[key].append(x)
    state = {"k": "raw", "key": key, "after": page[-1][0] if page else None, "total": total, "batch": size}
    return {"variants": variants, "returned": len(page), "total": total, "scroll_id": encode_scroll(state)}


# -- the rest ----------------------------------------------------------------------------------


@endpoint("events.get_scalar_metric_data")
def get_scalar_metric_data(ctx: CallContext, req: Request) -> dict:
    """A metric's scalar events, latest iteration first, METRIC_DATA_PAGE at a time."""
    check_request(ctx, req)
    scroll = decode_scroll(req.raw("scroll_id"), "metric_data", offset=int)
    offset = scroll["offset"] if scroll else 0
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        where = (c.task == task_id, c.type == SCALAR, c.metric == req.text("metric"))
        total = int(conn.execute(select(func.count()).where(*where)).scalar_one())
        query = select(c.doc).where(*where).order_by(c.iter.desc(), c.variant, c.seq)
        events = [row[0] for row in conn.execute(query.offset(offset).limit(METRIC_DATA_PAGE))]
    return {"events": events, "returned": len(events), "total": total,
            "scroll_id": encode_scroll({"k": "metric_data", "offset": offset + len(events)})}


@endpoint("events.get_vector_metrics_and_variants")
def get_vector_metrics_and_variants(ctx: CallContext, req: Request) -> dict:
    """{"metrics": {metric: [variants]}} of the task's vector events."""
    check_request(ctx, req)
    c = t.events.c
    metrics: dict[str, list[str]] = {}
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        query = select(c.metric, c.variant).where(c.task == task_id, c.type == VECTOR).distinct()
        for metric, variant in conn.execute(query.order_by(c.metric, c.variant)):
            metrics.setdefault(metric, []).append(variant)
    return {"metrics": metrics}


@endpoint("events.clear_scroll")
def clear_scroll(ctx: CallContext, req: Request) -> dict:
    """Nothing to free: a Shipyard scroll_id carries its whole state, the server keeps none."""
    check_request(ctx, req)
    return {}


@endpoint("events.delete_for_model")
def delete_for_model(ctx: CallContext, req: Request) -> dict:
    """Delete a model's events; a published (ready) model's only with `allow_locked`."""
    check_request(ctx, req)
    model_id = req.text("model")
    with ctx.store.tx() as conn:
        model = ctx.store.get(conn, t.models, model_id)
        if model is None:
            raise errors.invalid_id("model", model_id)
        if model.get("ready") and not req.flag("allow_locked"):
            raise errors.bad_request("Cannot update events for a published model (pass allow_locked)",
                                     Subcode.INVALID_MODEL_ID)
        return {"deleted": delete_task_events(conn, model_id)}

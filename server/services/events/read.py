"""events.* reads of a task's logs and raw events, deletion, and the request helpers every
reader shares (target lookup, metric filters, scroll ids, paging fields). Metric views -
histograms, single values, plots, debug images - are in events_metrics.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from starlette.responses import Response

from server import errors
from server.rpc import schema
from server.rpc.registry import INT64_MAX, INT64_MIN, CallContext, Request, endpoint
from server.services.events.store import (
    EVENT_TYPES,
    IS_LOG,
    LOG,
    LOG_KEYS,
    delete_task_events,
    expand_chunk,
    log_rows,
    log_total,
)
from server.storage import tables as t
from shipyard import clock

MAX_THRESHOLD_S = 100 * 365 * 24 * 3600  # events.clear_task_log: older than a century is all of them


# -- shared read helpers -----------------------------------------------------------------------


def require_target(ctx: CallContext, conn, task_id: Any) -> str:
    """The task (or, for model events, model) whose events are read; 400/101 if unknown."""
    if not isinstance(task_id, str) or not task_id:
        raise errors.missing_field("task")
    for table in (t.tasks, t.models):
        if conn.execute(select(table.c.id).where(table.c.id == task_id)).first():
            return task_id
    raise errors.invalid_id("task", task_id)


def check_request(ctx: CallContext, req: Request) -> None:
    """A 400 naming the first field of the body that does not match the endpoint's schema."""
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)


def target_name(ctx: CallContext, conn, task_id: Any) -> tuple[str, str]:
    """The id and name of a task (or model) whose events are read; 400 if unknown."""
    target = require_target(ctx, conn, task_id)
    doc = ctx.store.get(conn, t.tasks, target) or ctx.store.get(conn, t.models, target) or {}
    return target, str(doc.get("name") or target)


def metric_filter(spec: Any) -> dict[str, set[str] | None] | None:
    """Parse `metrics` ([{metric, variants}], [name], or {metric: [variants]}) into
    {metric: variants or None (all)}; None means no filter."""
    if not spec:
        return None
    schema.check(schema.METRICS_FILTER, spec, "metrics")
    wanted: dict[str, set[str] | None] = {}
    items = spec.items() if isinstance(spec, dict) else spec
    for item in items:
        if isinstance(spec, dict):
            metric, variants = item
        elif isinstance(item, str):
            metric, variants = item, None
        elif isinstance(item, dict) and isinstance(item.get("metric"), str):
            metric, variants = item["metric"], item.get("variants")
        else:
            raise errors.validation("each entry of 'metrics' must be a metric name or {metric, variants}")
        if isinstance(variants, str):
            variants = [variants]
        if variants and not all(isinstance(v, str) for v in variants):
            raise errors.validation("'variants' must be a list of strings")
        if variants and wanted.get(metric, ()) is not None:
            wanted[metric] = set(wanted.get(metric) or ()) | set(variants)
        else:
            wanted[metric] = None
    return wanted


def metric_clause(wanted: dict[str, set[str] | None] | None) -> Any:
    if not wanted:
        return None
    c = t.events.c
    clauses = []
    for metric, variants in wanted.items():
        if variants:
            clauses.append(and_(c.metric == metric, c.variant.in_(sorted(variants))))
        else:
            clauses.append(c.metric == metric)
    return or_(*clauses)


def encode_scroll(state: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_scroll(scroll_id: Any, kind: str, **fields: type) -> dict | None:
    """The state inside a scroll_id we issued for `kind`, with `fields` of the given types."""
    if not scroll_id:
        return None
    try:
        raw = str(scroll_id)
        state = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, TypeError):
        raise errors.validation(f"invalid scroll_id {scroll_id!r}") from None
    if not isinstance(state, dict) or state.get("k") != kind:
        raise errors.validation(f"scroll_id {scroll_id!r} does not belong to this endpoint")
    for name, kind_type in fields.items():
        value = state.get(name)
        if type(value) is not kind_type or isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise errors.validation(f"invalid scroll_id {scroll_id!r}")
    return state


def batch_size(req: Request, default: int, key: str = "batch_size") -> int:
    size = req.integer(key, default)
    if size < 1:
        raise errors.validation(f"field '{key}' must be >= 1")
    return min(size, 10_000)


def parse_order(req: Request, default: str) -> str:
    order = (req.text("order") or default).lower()
    if order not in ("asc", "desc"):
        raise errors.validation("field 'order' must be 'asc' or 'desc'")
    return order


# -- logs --------------------------------------------------------------------------------------


def _chunk_events(conn, task_id: str, seq: int) -> list[dict]:
    doc = conn.execute(select(t.events.c.doc).where(t.events.c.seq == seq)).scalar_one()
    return expand_chunk(task_id, doc)


def _log_page(conn, task_id: str, size: int, earlier: bool, from_ts: int | None) -> list[dict]:
    """The `size` log events nearest to `from_ts` in the paging direction (plus any others that
    share the last one's timestamp), ordered in that direction by (timestamp, seq, index).

    Chunks may overlap in time, so they are visited by their far edge: walking back, by latest
    timestamp descending; once `size` candidates are held and the next chunk ends before the
    candidates' edge, no later chunk can contribute."""
    held: list[tuple] = []  # (timestamp, seq, index, event)
    chunks = conn.execute(_log_chunks(task_id, earlier, from_ts))  # streamed: a page usually needs only the first chunk or two
    for seq, ts_min, ts_max in chunks:
        if len(held) >= size:
            edge = held[size - 1][0]
            if (ts_max < edge) if earlier else (ts_min > edge):
                break
        for index, event in enumerate(_chunk_events(conn, task_id, seq)):
            ts = event["timestamp"]
            if from_ts is None or ((ts < from_ts) if earlier else (ts > from_ts)):
                held.append((ts, seq, index, event))
        held.sort(key=lambda item: item[:3], reverse=earlier)
        _keep_page(held, size)
    chunks.close()
    return [item[3] for item in held]


def _log_chunks(task_id: str, earlier: bool, from_ts: int | None) -> Any:
    """The task's log chunks past `from_ts`, by their far edge in the paging direction."""
    c = t.events.c
    query = select(c.seq, c.timestamp, c.timestamp_max).where(c.task == task_id, IS_LOG)
    if earlier:
        if from_ts is not None:
            query = query.where(c.timestamp < from_ts)
        return query.order_by(c.timestamp_max.desc(), c.seq.desc())
    if from_ts is not None:
        query = query.where(c.timestamp_max > from_ts)
    return query.order_by(c.timestamp.asc(), c.seq.asc())


def _keep_page(held: list[tuple], size: int) -> None:
    """Cut sorted candidates to `size`, keeping the ones that share the last one's timestamp."""
    if len(held) > size:
        edge = held[size - 1][0]
        keep = size
        while keep < len(held) and held[keep][0] == edge:
            keep += 1
        del held[keep:]


@endpoint("events.get_task_log")
def get_task_log(ctx: CallContext, req: Request) -> dict:
    """Page through a task's log by timestamp. navigate_earlier (default) walks back from
    `from_timestamp` (or the end); otherwise forward from it (or the start). A page never splits
    events sharing a timestamp, so asking again from the page's edge timestamp neither loses nor
    repeats lines."""
    check_request(ctx, req)
    metric_filter(req.raw("metrics"))  # validated; log lines carry no metric, so none is filtered out
    size = batch_size(req, 5000)
    earlier = req.flag("navigate_earlier", True)
    order = parse_order(req, "desc" if earlier else "asc")
    from_ts = req.integer("from_timestamp")
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        events = _log_page(conn, task_id, size, earlier, from_ts)
        total = log_total(conn, task_id)
    if (order == "asc") == earlier:
        events.reverse()
    return {"events": events, "returned": len(events), "total": total}


def _all_log_events(conn, task_id: str) -> list[dict]:
    c = t.events.c
    held: list[tuple] = []
    query = select(c.seq, c.doc).where(c.task == task_id, IS_LOG).order_by(c.timestamp, c.seq)
    for seq, doc in conn.execute(query):
        held.extend((event["timestamp"], seq, index, event)
                    for index, event in enumerate(expand_chunk(task_id, doc)))
    held.sort(key=lambda item: item[:3])
    return [item[3] for item in held]


def _format_log_line(doc: dict) -> str:
    ts = doc.get("timestamp")
    when = clock.iso(ts / 1000.0) if isinstance(ts, (int, float)) else ""
    return f"{when} {doc.get('worker') or ''} {str(doc.get('level') or '').upper()} {doc.get('msg') or ''}"


@endpoint("events.download_task_log")
def download_task_log(ctx: CallContext, req: Request) -> Response:
    line_type = (req.text("line_type") or "json").lower()
    if line_type not in ("json", "text"):
        raise errors.validation("field 'line_type' must be 'json' or 'text'")
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        events = _all_log_events(conn, task_id)
    if line_type == "json":
        lines = [json.dumps(event, separators=(",", ":")) for event in events]
    else:
        lines = [_format_log_line(event) for event in events]
    body = "\n".join(lines) + ("\n" if lines else "")
    ext = "json" if line_type == "json" else "txt"
    return Response(body, media_type="application/x-ndjson" if line_type == "json" else "text/plain",
                    headers={"Content-Disposition": f'attachment; filename="task_{task_id}.{ext}"'})


# -- generic event reads -----------------------------------------------------------------------


@endpoint("events.get_task_events")
def get_task_events(ctx: CallContext, req: Request) -> dict:
    """A task's events in storage order, `batch_size` at a time; `scroll_id` continues."""
    size = batch_size(req, 500)
    order = parse_order(req, "asc")
    asc = order == "asc"
    types = _event_types(req)
    scroll = decode_scroll(req.raw("scroll_id"), "events", seq=int, index=int)
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        where = [c.task == task_id]
        if types:
            where.append(c.type.in_(types))
        clause = metric_clause(metric_filter(req.raw("metrics")))
        if clause is not None:
            where.append(clause)
        total = conn.execute(select(func.coalesce(func.sum(c.n_events), 0)).where(*where)).scalar_one()
        query = select(c.seq, c.type, c.doc).where(*where)
        if scroll is not None:
            query = query.where(c.seq >= scroll["seq"] if asc else c.seq <= scroll["seq"])
        rows = conn.execute(query.order_by(c.seq.asc() if asc else c.seq.desc()).limit(size + 1)).all()
    events, position = _events_page(task_id, rows, size, asc, scroll)
    if position is None:  # nothing returned yet: start from the beginning (or end) next time too
        position = (0, -1) if asc else (2 ** 62, 2 ** 31)
    state = {"k": "events", "seq": position[0], "index": position[1]}
    return {"events": events, "returned": len(events), "total": int(total),
            "scroll_id": encode_scroll(state)}


def _event_types(req: Request) -> list[str]:
    types = req.str_list("event_type") or []
    for et in types:
        if et not in EVENT_TYPES:
            raise errors.validation(f"invalid event_type {et!r}")
    return types


def _events_page(task_id: str, rows: list, size: int, asc: bool,
                 scroll: dict | None) -> tuple[list[dict], tuple[int, int] | None]:
    """Up to `size` events from `rows` (stored rows, log chunks expanded) after the scroll
    position, and the position of the last one returned."""
    events: list[dict] = []
    position = (scroll["seq"], scroll["index"]) if scroll else None
    for seq, etype, doc in rows:
        batch = expand_chunk(task_id, doc) if etype == LOG else [doc]
        indexes = range(len(batch)) if asc else range(len(batch) - 1, -1, -1)
        for index in indexes:
            if scroll and seq == scroll["seq"] and (index <= scroll["index"] if asc else index >= scroll["index"]):
                continue
            if len(events) == size:
                break
            events.append(batch[index])
            position = (seq, index)
        if len(events) == size:
            break
    return events, position


# -- deletion ----------------------------------------------------------------------------------


@endpoint("events.delete_for_task")
def delete_for_task(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        return {"deleted": delete_task_events(conn, require_target(ctx, conn, req.raw("task")))}


@endpoint("events.clear_task_log")
def clear_task_log(ctx: CallContext, req: Request) -> dict:
    """Delete a task's log lines; with `threshold_sec`, only those older than that many seconds."""
    threshold = req.integer("threshold_sec")
    if threshold is not None and not 0 <= threshold <= MAX_THRESHOLD_S:
        raise errors.validation(f"field 'threshold_sec' must be between 0 and {MAX_THRESHOLD_S}")
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        if threshold is None:
            deleted = log_total(conn, task_id)
            conn.execute(delete(t.events).where(c.task == task_id, IS_LOG))
            return {"deleted": deleted}
        cutoff = int((clock.now() - threshold) * 1000)
        old = (c.task == task_id, IS_LOG, c.timestamp_max < cutoff)
        deleted = int(conn.execute(select(func.coalesce(func.sum(c.n_events), 0)).where(*old)).scalar_one())
        conn.execute(delete(t.events).where(*old))
        straddling = conn.execute(select(c.seq, c.doc).where(c.task == task_id, IS_LOG, c.timestamp < cutoff))
        for seq, doc in straddling.all():
            kept = [e for e in expand_chunk(task_id, doc) if e["timestamp"] >= cutoff]
            deleted += len(doc["timestamp"]) - len(kept)
            lines = [(e["timestamp"], e["level"], e["worker"], e["msg"],
                      {k: v for k, v in e.items() if k not in LOG_KEYS} or None) for e in kept]
            row = log_rows(task_id, lines)[0]
            conn.execute(t.events.update().where(c.seq == seq).values(
                timestamp=row["timestamp"], timestamp_max=row["timestamp_max"], n_events=row["n_events"],
                doc=row["doc"]))
    return {"deleted": deleted}

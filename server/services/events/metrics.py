"""events.* metric views: scalar histograms (one task or several), single values, latest
values, metric/variant lists, vector histograms, plots and debug images.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from server import errors
from server.rpc import schema
from server.rpc.registry import INT64_MAX, INT64_MIN, CallContext, Request, endpoint
from server.services.events.read import (
    batch_size,
    decode_scroll,
    encode_scroll,
    metric_clause,
    metric_filter,
    require_target,
    target_name,
)
from server.services.events.store import IMAGE, PLOT, SCALAR, SINGLE_VALUE_ITER, VECTOR, chunks
from server.storage import tables as t
from shipyard import clock

# -- scalars -----------------------------------------------------------------------------------


def _downsample(xs: list, ys: list, samples: int) -> tuple[list, list]:
    """At most `samples` points: x split into equal intervals, y averaged per interval (null
    points - non-finite reports - are left out of the averages)."""
    if len(xs) <= samples:
        return xs, ys
    lo, hi = xs[0], xs[-1]
    width = (hi - lo) / samples or 1
    out_x: list = []
    out_y: list = []
    bucket = None
    acc = 0.0
    n = 0
    for x, y in zip(xs, ys, strict=False):
        b = min(int((x - lo) / width), samples - 1)
        if b != bucket:
            if bucket is not None:
                out_y.append(acc / n if n else None)
            bucket, acc, n = b, 0.0, 0
            out_x.append(x)
        if y is not None:
            acc += y
            n += 1
    out_y.append(acc / n if n else None)
    return out_x, out_y


def _scalar_series(conn, task_id: str, metrics: Any, key: str) -> dict[tuple[str, str], tuple[list, list]]:
    c = t.events.c
    sort = c.iter if key == "iter" else c.timestamp
    query = (select(c.metric, c.variant, c.iter, c.timestamp, c.value)
             .where(c.task == task_id, c.type == SCALAR, c.iter != SINGLE_VALUE_ITER))
    clause = metric_clause(metric_filter(metrics))
    if clause is not None:
        query = query.where(clause)
    series: dict[tuple[str, str], tuple[list, list]] = {}
    for metric, variant, it, ts, value in conn.execute(query.order_by(c.metric, c.variant, sort, c.seq)):
        xs, ys = series.setdefault((metric, variant), ([], []))
        xs.append(it if key == "iter" else ts)
        ys.append(value)
    return series


def _histogram(conn, task_id: str, req: Request) -> dict:
    key = (req.text("key") or "iter").lower()
    if key not in ("iter", "timestamp", "iso_time"):
        raise errors.validation("field 'key' must be one of iter, timestamp, iso_time")
    samples = req.integer("samples", 10_000)
    if samples < 1:
        raise errors.validation("field 'samples' must be >= 1")
    result: dict[str, dict] = {}
    for (metric, variant), (xs, ys) in _scalar_series(conn, task_id, req.raw("metrics"), key).items():
        xs, ys = _downsample(xs, ys, samples)
        if key == "iso_time":
            xs = [clock.iso(x / 1000.0) for x in xs]
        result.setdefault(metric, {})[variant] = {"name": variant, "x": xs, "y": ys}
    return result


@endpoint("events.scalar_metrics_iter_histogram")
def scalar_metrics_iter_histogram(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        return _histogram(conn, task_id, req)


MAX_COMPARED = 100  # the reference server's limit on events.multi_task_scalar_metrics_iter_histogram


@endpoint("events.multi_task_scalar_metrics_iter_histogram")
def multi_task_scalar_metrics_iter_histogram(ctx: CallContext, req: Request) -> dict:
    """{"metrics": {metric: {variant: {task id: {name: task name, x, y}}}}}, as the reference
    server answers it (the series' `name` is the task's, so a legend can say whose line it is)."""
    if isinstance(req.raw("tasks"), str):  # "id1,id2" is taken too, as the reference server does
        req.body["tasks"] = [part.strip() for part in req.raw("tasks").split(",") if part.strip()]
    tasks: list[str] = list(dict.fromkeys(req.str_list("tasks") or []))
    if not tasks:
        raise errors.missing_field("tasks")
    if len(tasks) > MAX_COMPARED:
        raise errors.validation(f"field 'tasks' holds at most {MAX_COMPARED} task ids")
    merged: dict[str, dict] = {}
    with ctx.store.tx() as conn:
        for task_id in tasks:
            target, name = target_name(ctx, conn, task_id)
            for metric, variants in _histogram(conn, target, req).items():
                for variant, data in variants.items():
                    merged.setdefault(metric, {}).setdefault(variant, {})[target] = {**data, "name": name}
    return {"metrics": merged}


@endpoint("events.get_task_single_value_metrics")
def get_task_single_value_metrics(ctx: CallContext, req: Request) -> dict:
    tasks = req.str_list("tasks") or ([req.text("task")] if req.text("task") else [])
    if not tasks:
        raise errors.missing_field("tasks")
    c = t.events.c
    clause = metric_clause(metric_filter(req.raw("metrics")))
    out = []
    with ctx.store.tx() as conn:
        for task_id in tasks:
            query = (select(c.metric, c.variant, c.value, c.timestamp)
                     .where(c.task == task_id, c.type == SCALAR, c.iter == SINGLE_VALUE_ITER)
                     .order_by(c.metric, c.variant))
            query = query if clause is None else query.where(clause)
            values = [{"metric": m, "variant": v, "value": val, "timestamp": ts}
                      for m, v, val, ts in conn.execute(query)]
            out.append({"task": task_id, "task_name": target_name(ctx, conn, task_id)[1], "values": values})
    return {"tasks": out}


def _last_iteration(conn, task_id: str) -> int:
    """The task's highest reported iteration over every event type (single values aside); 0 if none."""
    c = t.events.c
    query = select(func.max(c.iter)).where(c.task == task_id, c.iter.is_not(None), c.iter != SINGLE_VALUE_ITER)
    return int(conn.execute(query).scalar() or 0)


def _latest_values(series: dict[tuple[str, str], tuple[list, list]]) -> list[dict]:
    metrics: dict[str, list] = {}
    for (metric, variant), (_xs, ys) in series.items():
        tail = [y for y in ys[-100:] if y is not None]
        metrics.setdefault(metric, []).append({"name": variant, "last_value": ys[-1],
                                               "last_100_value": sum(tail) / len(tail) if tail else None})
    return [{"name": name, "variants": variants} for name, variants in metrics.items()]


@endpoint("events.get_task_latest_scalar_values")
def get_task_latest_scalar_values(ctx: CallContext, req: Request) -> dict:
    """Each scalar series' last value and mean of its last 100, with the task's last iteration,
    name, status and the time of its latest scalar report (as the reference server answers)."""
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        series = _scalar_series(conn, task_id, None, "iter")
        last_iter = _last_iteration(conn, task_id)
        last_ts = conn.execute(select(func.max(c.timestamp)).where(c.task == task_id, c.type == SCALAR)).scalar()
        doc = ctx.store.get(conn, t.tasks, task_id) or ctx.store.get(conn, t.models, task_id) or {}
    return {"metrics": _latest_values(series), "last_iter": last_iter, "name": doc.get("name"),
            "status": doc.get("status"), "last_timestamp": last_ts}


@endpoint("events.get_scalar_metrics_and_variants")
def get_scalar_metrics_and_variants(ctx: CallContext, req: Request) -> dict:
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        query = (select(c.metric, c.variant).where(c.task == task_id, c.type == SCALAR)
                 .distinct().order_by(c.metric, c.variant))
        metrics: dict[str, list[str]] = {}
        for metric, variant in conn.execute(query):
            metrics.setdefault(metric, []).append(variant)
    return {"metrics": metrics}  # {metric: [variants]}, as the reference server answers it


@endpoint("events.vector_metrics_iter_histogram")
def vector_metrics_iter_histogram(ctx: CallContext, req: Request) -> dict:
    metric = req.text("metric", required=True)
    variant = req.text("variant", required=True)
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        query = (select(c.iter, c.doc).where(c.task == task_id, c.type == VECTOR, c.metric == metric,
                                             c.variant == variant).order_by(c.iter))
        rows = conn.execute(query).all()
    vectors = [doc.get("values") or [] for _it, doc in rows]
    # `images` is what the schema documents; metric/variant/vectors/iterations what the reference server answers
    return {"images": [{"iter": it, "values": v} for (it, _doc), v in zip(rows, vectors, strict=True)],
            "metric": metric, "variant": variant, "vectors": vectors, "iterations": [it for it, _doc in rows]}


# -- plots and debug images --------------------------------------------------------------------


def _latest_iterations(conn, task_id: str, etype: str, wanted: Any, iters: int,
                       below: dict[tuple[str, str], int] | None = None) -> list[int]:
    """Seqs of the events of the latest `iters` iterations of each (metric, variant)."""
    c = t.events.c
    query = select(c.seq, c.metric, c.variant, c.iter).where(c.task == task_id, c.type == etype)
    clause = metric_clause(wanted)
    if clause is not None:
        query = query.where(clause)
    per_series: dict[tuple[str, str], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for seq, metric, variant, it in conn.execute(query):
        per_series[(metric, variant)][it].append(seq)
    seqs: list[int] = []
    for by_iter in per_series.values():
        for it in sorted(by_iter, reverse=True)[:iters]:
            seqs.extend(by_iter[it])
    return seqs


@endpoint("events.get_task_plots")
def get_task_plots(ctx: CallContext, req: Request) -> dict:
    iters = req.integer("iters", 1)
    if iters < 1:
        raise errors.validation("field 'iters' must be >= 1")
    size = batch_size(req, 500)
    scroll = decode_scroll(req.raw("scroll_id"), "plots", offset=int)
    offset = scroll["offset"] if scroll else 0
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        seqs = _latest_iterations(conn, task_id, PLOT, metric_filter(req.raw("metrics")), iters)
        rows: list[Any] = []
        for chunk in chunks(seqs):
            rows.extend(conn.execute(select(c.seq, c.iter, c.metric, c.variant, c.doc).where(c.seq.in_(chunk))))
    rows.sort(key=lambda r: (-r[1], r[2], r[3], r[0]))
    page = rows[offset:offset + size]
    plots = [r[4] for r in page]
    return {"plots": plots, "returned": len(plots), "total": len(rows),
            "scroll_id": encode_scroll({"k": "plots", "offset": offset + len(page)})}


def _spec_where(ctx: CallContext, conn, spec: dict, etype: str) -> tuple[str, list]:
    """The task and the row filter of one {task, metric, variants} entry of `metrics`."""
    c = t.events.c
    task_id = require_target(ctx, conn, spec["task"])
    where = [c.task == task_id, c.type == etype]
    if spec.get("metric"):
        where.append(c.metric == spec["metric"])
    variants = spec.get("variants")
    if variants:
        where.append(c.variant.in_([variants] if isinstance(variants, str) else list(variants)))
    return task_id, where


def _bound_clause(bound: list[int] | None, earlier: bool) -> Any:
    """Iterations past the ones a scroll already returned ([lowest, highest] of its last page)."""
    c = t.events.c
    if bound is None:
        return None
    return c.iter < bound[0] if earlier else c.iter > bound[1]


def _spec_iterations(conn, where: list, iters: int, earlier: bool) -> list[dict]:
    """The `iters` iterations nearest in the paging direction, latest first, with their events."""
    c = t.events.c
    iter_query = select(c.iter).where(*where).distinct()
    chosen = [row[0] for row in conn.execute(
        iter_query.order_by(c.iter.desc() if earlier else c.iter.asc()).limit(iters))]
    if not chosen:
        return []
    rows = conn.execute(select(c.iter, c.doc).where(*where, c.iter.in_(chosen))
                        .order_by(c.iter.desc(), c.metric, c.variant, c.seq)).all()
    grouped: dict[int, list] = {}
    for it, doc in rows:
        grouped.setdefault(it, []).append(doc)
    return [{"iter": it, "events": grouped[it]} for it in sorted(grouped, reverse=True)]


def _scroll_bounds(req: Request, kind: str) -> dict[str, list[int]]:
    scroll = decode_scroll(req.raw("scroll_id"), kind, bounds=dict) if not req.flag("refresh") else None
    bounds: dict[str, list[int]] = dict((scroll or {}).get("bounds") or {})
    bounds = {key: [b, b] if type(b) is int else b for key, b in bounds.items()}  # an older scroll_id: one edge
    for bound in bounds.values():
        if not (isinstance(bound, list) and len(bound) == 2
                and all(type(b) is int and INT64_MIN <= b <= INT64_MAX for b in bound)):
            raise errors.validation(f"invalid scroll_id {req.raw('scroll_id')!r}")
    return bounds


def _metric_iterations(ctx: CallContext, req: Request, etype: str, kind: str) -> dict:
    """events.debug_images / events.plots: for each {task, metric, variants} entry, the latest
    `iters` iterations with their events; the scroll_id pages to earlier iterations
    (navigate_earlier, the default) or back to later ones. The first page is always the latest."""
    specs = req.array("metrics", required=True)
    schema.check(schema.request_field(ctx.endpoint, "metrics"), specs, "metrics")
    iters = req.integer("iters", 1)
    if iters < 1:
        raise errors.validation("field 'iters' must be >= 1")
    earlier = req.flag("navigate_earlier", True)
    bounds = _scroll_bounds(req, kind)
    out = []
    with ctx.store.tx() as conn:
        for spec in specs:
            task_id, where = _spec_where(ctx, conn, spec, etype)
            state_key = f"{task_id}/{spec.get('metric') or ''}"
            bound = bounds.get(state_key)
            clause = _bound_clause(bound, earlier)
            iterations = _spec_iterations(conn, where + ([clause] if clause is not None else []), iters,
                                          earlier or bound is None)
            if iterations:
                bounds[state_key] = [iterations[-1]["iter"], iterations[0]["iter"]]
            out.append({"task": task_id, "metric": spec.get("metric") or "", "iterations": iterations})
    return {"metrics": out, "scroll_id": encode_scroll({"k": kind, "bounds": bounds})}


@endpoint("events.debug_images")
def debug_images(ctx: CallContext, req: Request) -> dict:
    """Debug images by iteration for each requested task/metric (see _metric_iterations)."""
    return _metric_iterations(ctx, req, IMAGE, "images")


@endpoint("events.plots")
def plots(ctx: CallContext, req: Request) -> dict:
    """Plots by iteration for each requested task/metric (see _metric_iterations)."""
    return _metric_iterations(ctx, req, PLOT, "plot_pages")

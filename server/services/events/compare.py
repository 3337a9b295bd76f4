"""events.* reads over several tasks (or models) at once, for the web UI's tables and compare
views: which metrics each task reported (get_task_metrics, get_multi_task_metrics) and the
latest plots of several tasks side by side (get_multi_task_plots).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select

from server import errors
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events.read import (
    check_request,
    decode_scroll,
    encode_scroll,
    metric_clause,
    metric_filter,
    require_target,
    target_name,
)
from server.services.events.store import PLOT, chunks
from server.storage import tables as t

PLOTS_PAGE = 1000  # plot events per get_multi_task_plots answer (the reference server's default)


def _task_ids(req: Request) -> list[str]:
    tasks: list[str] = list(dict.fromkeys(req.str_list("tasks") or []))
    if not tasks:
        raise errors.missing_field("tasks")
    return tasks


def _event_type_clause(req: Request) -> list:
    etype = req.text("event_type")
    return [t.events.c.type == etype] if etype else [t.events.c.metric.is_not(None)]


@endpoint("events.get_task_metrics")
def get_task_metrics(ctx: CallContext, req: Request) -> dict:
    """{"metrics": [{task, metrics: [names]}]}: per task, the metrics it reported events of `event_type`."""
    check_request(ctx, req)
    c = t.events.c
    out = []
    with ctx.store.tx() as conn:
        for task in _task_ids(req):
            target = require_target(ctx, conn, task)
            query = (select(c.metric).where(c.task == target, c.metric.is_not(None), *_event_type_clause(req))
                     .distinct().order_by(c.metric))
            out.append({"task": target, "metrics": [row[0] for row in conn.execute(query)]})
    return {"metrics": out}


@endpoint("events.get_multi_task_metrics")
def get_multi_task_metrics(ctx: CallContext, req: Request) -> dict:
    """{"metrics": [{metric, variants}]}: the metrics and variants any of the tasks reported (of
    `event_type`, or of any type), sorted by name."""
    check_request(ctx, req)
    c = t.events.c
    found: dict[str, set[str]] = defaultdict(set)
    with ctx.store.tx() as conn:
        targets = [require_target(ctx, conn, task) for task in _task_ids(req)]
        for part in chunks(targets):
            query = select(c.metric, c.variant).where(c.task.in_(part), c.metric.is_not(None),
                                                      *_event_type_clause(req)).distinct()
            for metric, variant in conn.execute(query):
                found[metric].add(variant or "")
    return {"metrics": [{"metric": m, "variants": sorted(found[m])} for m in sorted(found)]}


# -- get_multi_task_plots ----------------------------------------------------------------------


def _latest(rows: list[tuple], iters: int, per_metric: bool) -> list[tuple]:
    """The rows (seq, task, iter, metric, variant) of each task's `iters` latest iterations
    (per task and metric when `per_metric`), at most `iters` per task/metric/variant."""
    groups: dict[tuple, set[int]] = defaultdict(set)
    for _seq, task, it, metric, _variant in rows:
        groups[(task, metric) if per_metric else (task,)].add(it)
    kept = {key: set(sorted(its, reverse=True)[:iters]) for key, its in groups.items()}
    chosen = [r for r in rows if r[2] in kept[(r[1], r[3]) if per_metric else (r[1],)]]
    chosen.sort(key=lambda r: (-r[2], r[1], r[3], r[4], r[0]))
    per_series: dict[tuple, int] = defaultdict(int)
    out = []
    for row in chosen:
        per_series[(row[1], row[3], row[4])] += 1
        if per_series[(row[1], row[3], row[4])] <= iters:
            out.append(row)
    return out


def _nest(page: list[tuple], docs: dict[int, dict], names: dict[str, str]) -> dict:
    """{metric: {variant: {task: {iteration: {name: task name, plots: [events]}}}}}."""
    out: dict[str, Any] = {}
    for seq, task, it, metric, variant in page:
        leaf = out.setdefault(metric, {}).setdefault(variant, {}).setdefault(task, {})
        leaf.setdefault(str(it), {"name": names[task], "plots": []})["plots"].append(docs[seq])
    return out


def _plot_rows(conn, targets: list[str], req: Request) -> list[tuple]:
    c = t.events.c
    clause = metric_clause(metric_filter(req.raw("metrics")))
    rows: list[tuple] = []
    for part in chunks(targets):
        query = select(c.seq, c.task, c.iter, c.metric, c.variant).where(c.task.in_(part), c.type == PLOT)
        rows.extend(tuple(r) for r in conn.execute(query if clause is None else query.where(clause)))
    return rows


@endpoint("events.get_multi_task_plots")
def get_multi_task_plots(ctx: CallContext, req: Request) -> dict:
    """The plots of each task's latest `iters` iterations (per task and metric unless
    `last_iters_per_task_metric` is false), nested by metric, variant, task and iteration, a page
    of PLOTS_PAGE events at a time: the scroll_id continues; a page with `returned` 0 is the end."""
    check_request(ctx, req)
    iters = req.integer("iters", 1)
    if iters < 1:
        raise errors.validation("field 'iters' must be >= 1")
    scroll = decode_scroll(req.raw("scroll_id"), "multi_plots", offset=int)
    offset = scroll["offset"] if scroll else 0
    c = t.events.c
    with ctx.store.tx() as conn:
        names = dict(target_name(ctx, conn, task) for task in _task_ids(req))
        selected = _latest(_plot_rows(conn, list(names), req), iters, req.flag("last_iters_per_task_metric", True))
        page = selected[offset:offset + PLOTS_PAGE]
        docs: dict[int, dict] = {}
        for part in chunks([row[0] for row in page]):
            docs.update((seq, doc) for seq, doc in conn.execute(select(c.seq, c.doc).where(c.seq.in_(part))))
    return {"plots": _nest(page, docs, names), "returned": len(page), "total": len(selected),
            "scroll_id": encode_scroll({"k": "multi_plots", "offset": offset + len(page)})}

"""events.get/next_debug_image_sample and events.get/next_plot_sample: the UI's single-sample
viewer, which steps through one task's debug images (or plots) a variant (metric) at a time.

The reference server keeps each viewer's state on the server; here the state travels inside the
scroll_id (task, metric, variant, iteration, whether to stay on the metric), so any server
process answers the next call. The valid iteration range of each series is recomputed on every
call, so a `refresh` always sees the latest reports.

Stepping is lexicographic over (iteration, metric, variant): the next sample is the smallest
position after the current one (the largest before it when navigating earlier), so the rest
of the current iteration comes before the next iteration. `next_iteration` skips to another
iteration; `navigate_current_metric` keeps to the metric the viewer was opened on.

A debug image's URL is often reused (the SDK cycles file names every N iterations): the image
at an earlier iteration was then overwritten, so a series' first valid iteration is the lowest
of its URLs' latest iterations, and earlier events are not shown.
"""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select

from server import errors
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events.read import check_request, decode_scroll, encode_scroll, require_target
from server.services.events.store import IMAGE, PLOT
from server.storage import tables as t

Pos = tuple  # (iteration, metric[, variant]) of a sample


def _rows(ctx: CallContext, task: Any, etype: str, metric: str | None) -> tuple[str, list[tuple]]:
    """The task id and its (iter, metric, variant, doc) events of `etype`, of `metric` if given."""
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, task)
        query = select(c.iter, c.metric, c.variant, c.doc).where(c.task == task_id, c.type == etype)
        if metric is not None:
            query = query.where(c.metric == metric)
        rows = [tuple(row) for row in conn.execute(query)]
    if etype == IMAGE:
        rows = [row for row in rows if row[3].get("url")]
    return task_id, rows


def _ranges(keys: Iterable[tuple[Any, int]]) -> dict[Any, tuple[int, int]]:
    out: dict[Any, tuple[int, int]] = {}
    for key, it in keys:
        lo, hi = out.get(key, (it, it))
        out[key] = (min(lo, it), max(hi, it))
    return out


def image_ranges(rows: list[tuple]) -> dict[tuple[str, str], tuple[int, int]]:
    """{(metric, variant): (first valid iteration, last iteration)}; see the module docstring."""
    url_last = _ranges(((m, v, doc["url"]), it) for it, m, v, doc in rows)
    first_valid: dict[tuple[str, str], int] = {}
    for (m, v, _url), (_lo, hi) in url_last.items():
        first_valid[(m, v)] = min(first_valid.get((m, v), hi), hi)
    last = _ranges(((m, v), it) for it, m, v, _doc in rows)
    return {key: (first_valid[key], hi) for key, (_lo, hi) in last.items()}


def _step(positions: Iterable[Pos], current: Pos, earlier: bool, next_iteration: bool) -> Pos | None:
    """The nearest position after `current` (before it when `earlier`); with `next_iteration`,
    on another iteration only."""
    cut = current[:1] if next_iteration else current
    if earlier:
        return max((p for p in positions if p[:len(cut)] < cut), default=None)
    return min((p for p in positions if p[:len(cut)] > cut), default=None)


def _state(req: Request, kind: str) -> dict:
    state = decode_scroll(req.text("scroll_id", required=True), kind)
    if state is None:
        raise errors.missing_field("scroll_id")
    if state.get("task") != req.text("task") or not isinstance(state.get("cur"), bool):
        raise errors.validation(f"scroll_id does not belong to task {req.text('task')}")
    if state.get("pos") is not None and not _valid_pos(state["pos"]):
        raise errors.validation("invalid scroll_id")
    return state


def _valid_pos(pos: Any) -> bool:
    return (isinstance(pos, list) and len(pos) in (2, 3) and type(pos[0]) is int
            and all(isinstance(p, str) for p in pos[1:]))


# -- debug images ------------------------------------------------------------------------------


def _image_answer(state: dict, rows: list[tuple], found: tuple | None, series: tuple | None = None) -> dict:
    """The answer for the image `found` (None: none there), with its series' valid iterations
    (those of `series`, the (metric, variant) asked for, when no image was found)."""
    doc = None
    if found is not None:
        state["pos"] = list(found[:3])
        series, doc = found[1:3], found[3]
    lo, hi = image_ranges(rows).get(series, (None, None)) if series else (None, None)
    return {"scroll_id": encode_scroll(state), "event": doc, "min_iteration": lo, "max_iteration": hi}


def _valid_images(rows: list[tuple]) -> dict[Pos, tuple]:
    """The images not overwritten since, by position; of two at one position, the greater URL."""
    ranges = image_ranges(rows)
    out: dict[Pos, tuple] = {}
    for row in sorted(rows, key=lambda r: r[3]["url"]):
        if row[0] >= ranges[(row[1], row[2])][0]:
            out[(row[0], row[1], row[2])] = row
    return out


@endpoint("events.get_debug_image_sample")
def get_debug_image_sample(ctx: CallContext, req: Request) -> dict:
    """The variant's image at `iteration` (or the latest before it; the latest when not given)."""
    check_request(ctx, req)
    metric, variant, iteration = req.text("metric"), req.text("variant"), req.integer("iteration")
    cur = req.flag("navigate_current_metric", True)
    if req.raw("scroll_id"):
        decode_scroll(req.raw("scroll_id"), "image_sample")
    task_id, rows = _rows(ctx, req.raw("task"), IMAGE, metric if cur else None)
    state = {"k": "image_sample", "task": task_id, "metric": metric, "cur": cur, "pos": None}
    images = _valid_images(rows)
    fits = [p for p in images if p[1:] == (metric, variant) and (iteration is None or p[0] <= iteration)]
    return _image_answer(state, rows, images[max(fits)] if fits else None, (metric, variant))


@endpoint("events.next_debug_image_sample")
def next_debug_image_sample(ctx: CallContext, req: Request) -> dict:
    """The next variant's image on this iteration, else the first on the next iteration (the
    previous ones when `navigate_earlier`, the default); `event` is null past the end."""
    check_request(ctx, req)
    state = _state(req, "image_sample")
    task_id, rows = _rows(ctx, req.raw("task"), IMAGE, state["metric"] if state["cur"] else None)
    if state["pos"] is None:
        return _image_answer(state, rows, None)
    images = _valid_images(rows)
    pos = _step(images, tuple(state["pos"]), req.flag("navigate_earlier", True), req.flag("next_iteration"))
    return _image_answer(state, rows, images[pos] if pos else None)


# -- plots -------------------------------------------------------------------------------------


def _plot_groups(rows: list[tuple]) -> dict[Pos, list[dict]]:
    """{(iteration, metric): its plots, by variant}."""
    groups: dict[Pos, list[tuple]] = {}
    for it, metric, variant, doc in rows:
        groups.setdefault((it, metric), []).append((variant, doc))
    return {pos: [doc for _v, doc in sorted(items, key=lambda item: item[0])[:100]] for pos, items in groups.items()}


def _plot_answer(state: dict, rows: list[tuple], pos: Pos | None) -> dict:
    if pos is None:
        return {"scroll_id": encode_scroll(state), "events": [], "min_iteration": None, "max_iteration": None}
    state["pos"] = list(pos)
    lo, hi = _ranges((m, it) for it, m, _v, _doc in rows)[pos[1]]
    return {"scroll_id": encode_scroll(state), "events": _plot_groups(rows)[pos], "min_iteration": lo,
            "max_iteration": hi}


@endpoint("events.get_plot_sample")
def get_plot_sample(ctx: CallContext, req: Request) -> dict:
    """The metric's plots at `iteration` (or the latest iteration before it; the latest when not given)."""
    check_request(ctx, req)
    metric, iteration = req.text("metric"), req.integer("iteration")
    cur = req.flag("navigate_current_metric", True)
    if req.raw("scroll_id"):
        decode_scroll(req.raw("scroll_id"), "plot_sample")
    task_id, rows = _rows(ctx, req.raw("task"), PLOT, metric if cur else None)
    state = {"k": "plot_sample", "task": task_id, "metric": metric, "cur": cur, "pos": None}
    fits = [p for p in _plot_groups(rows) if p[1] == metric and (iteration is None or p[0] <= iteration)]
    return _plot_answer(state, rows, max(fits) if fits else None)


@endpoint("events.next_plot_sample")
def next_plot_sample(ctx: CallContext, req: Request) -> dict:
    """The next metric's plots on this iteration, else the first metric's on the next iteration
    (previous when `navigate_earlier`, the default); a viewer kept to one metric moves by iteration."""
    check_request(ctx, req)
    state = _state(req, "plot_sample")
    task_id, rows = _rows(ctx, req.raw("task"), PLOT, state["metric"] if state["cur"] else None)
    if state["pos"] is None:
        return _plot_answer(state, rows, None)
    by_iteration = state["cur"] or req.flag("next_iteration")
    pos = _step(_plot_groups(rows), tuple(state["pos"]), req.flag("navigate_earlier", True), by_iteration)
    return _plot_answer(state, rows, pos)

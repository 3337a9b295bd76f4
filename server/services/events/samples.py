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

from sqlalchemy import func, select

from server import errors
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events.read import check_request, decode_scroll, encode_scroll, require_target
from server.services.events.store import IMAGE, PLOT
from server.storage import tables as t

Pos = tuple  # (iteration, metric[, variant]) of a sample
URL = t.events.c.doc["url"].as_string()  # json_extract / ->>: ranges never decode documents in Python


def _where(task_id: str, etype: str, metric: str | None) -> list:
    c = t.events.c
    where = [c.task == task_id, c.type == etype]
    if metric is not None:
        where.append(c.metric == metric)
    if etype == IMAGE:
        where.append(URL.is_not(None))
    return where


def image_ranges(conn, where: list) -> dict[tuple[str, str], tuple[int, int]]:
    """{(metric, variant): (first valid iteration, last iteration)}: the first valid one is the
    lowest of the series' URLs' latest iterations (see the module docstring)."""
    c = t.events.c
    ranges: dict[tuple[str, str], tuple[int, int]] = {}
    query = select(c.metric, c.variant, func.max(c.iter)).where(*where).group_by(c.metric, c.variant, URL)
    for metric, variant, url_last in conn.execute(query):
        lo, hi = ranges.get((metric, variant), (url_last, url_last))
        ranges[(metric, variant)] = (min(lo, url_last), max(hi, url_last))
    return ranges


def _image_positions(conn, where: list, ranges: dict[tuple[str, str], tuple[int, int]]) -> set[Pos]:
    """The (iteration, metric, variant) of every image not overwritten since."""
    c = t.events.c
    rows = conn.execute(select(c.iter, c.metric, c.variant).where(*where).distinct())
    return {(it, m, v) for it, m, v in rows if it >= ranges[(m, v)][0]}


def _image_doc(conn, where: list, pos: Pos) -> dict:
    """The image at `pos`; of two there, the one with the greater URL."""
    c = t.events.c
    query = select(c.doc).where(*where, c.iter == pos[0], c.metric == pos[1], c.variant == pos[2])
    return conn.execute(query.order_by(URL.desc()).limit(1)).scalar_one()


def _plot_ranges(conn, where: list) -> dict[str, tuple[int, int]]:
    c = t.events.c
    query = select(c.metric, func.min(c.iter), func.max(c.iter)).where(*where).group_by(c.metric)
    return {metric: (lo, hi) for metric, lo, hi in conn.execute(query)}


def _plot_positions(conn, where: list) -> set[Pos]:
    c = t.events.c
    return {tuple(row) for row in conn.execute(select(c.iter, c.metric).where(*where).distinct())}


def _plot_docs(conn, where: list, pos: Pos) -> list[dict]:
    """The plots at (iteration, metric), by variant (100 at most, as the reference server)."""
    c = t.events.c
    query = select(c.doc).where(*where, c.iter == pos[0], c.metric == pos[1]).order_by(c.variant, c.seq)
    return list(conn.execute(query.limit(100)).scalars())


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


def _image_answer(conn, state: dict, where: list, pos: Pos | None, series: tuple | None = None) -> dict:
    """The answer for the image at `pos` (None: none there), with its series' valid iterations
    (those of `series`, the (metric, variant) asked for, when no image was found)."""
    doc = None
    if pos is not None:
        state["pos"] = list(pos)
        series, doc = pos[1:], _image_doc(conn, where, pos)
    lo, hi = image_ranges(conn, where).get(series, (None, None)) if series else (None, None)
    return {"scroll_id": encode_scroll(state), "event": doc, "min_iteration": lo, "max_iteration": hi}


@endpoint("events.get_debug_image_sample")
def get_debug_image_sample(ctx: CallContext, req: Request) -> dict:
    """The variant's image at `iteration` (or the latest before it; the latest when not given)."""
    check_request(ctx, req)
    metric, variant, iteration = req.text("metric"), req.text("variant"), req.integer("iteration")
    cur = req.flag("navigate_current_metric", True)
    if req.raw("scroll_id"):
        decode_scroll(req.raw("scroll_id"), "image_sample")
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        where = _where(task_id, IMAGE, metric if cur else None)
        state = {"k": "image_sample", "task": task_id, "metric": metric, "cur": cur, "pos": None}
        series = _where(task_id, IMAGE, metric) + [t.events.c.variant == variant]
        fits = [p for p in _image_positions(conn, series, image_ranges(conn, series))
                if iteration is None or p[0] <= iteration]
        return _image_answer(conn, state, where, max(fits) if fits else None, (metric, variant))


@endpoint("events.next_debug_image_sample")
def next_debug_image_sample(ctx: CallContext, req: Request) -> dict:
    """The next variant's image on this iteration, else the first on the next iteration (the
    previous ones when `navigate_earlier`, the default); `event` is null past the end."""
    check_request(ctx, req)
    state = _state(req, "image_sample")
    with ctx.store.tx() as conn:
        where = _where(require_target(ctx, conn, req.raw("task")), IMAGE, state["metric"] if state["cur"] else None)
        if state["pos"] is None:
            return _image_answer(conn, state, where, None)
        positions = _image_positions(conn, where, image_ranges(conn, where))
        pos = _step(positions, tuple(state["pos"]), req.flag("navigate_earlier", True), req.flag("next_iteration"))
        return _image_answer(conn, state, where, pos)


# -- plots -------------------------------------------------------------------------------------


def _plot_answer(conn, state: dict, where: list, pos: Pos | None) -> dict:
    if pos is None:
        return {"scroll_id": encode_scroll(state), "events": [], "min_iteration": None, "max_iteration": None}
    state["pos"] = list(pos)
    lo, hi = _plot_ranges(conn, where)[pos[1]]
    return {"scroll_id": encode_scroll(state), "events": _plot_docs(conn, where, pos), "min_iteration": lo,
            "max_iteration": hi}


@endpoint("events.get_plot_sample")
def get_plot_sample(ctx: CallContext, req: Request) -> dict:
    """The metric's plots at `iteration` (or the latest iteration before it; the latest when not given)."""
    check_request(ctx, req)
    metric, iteration = req.text("metric"), req.integer("iteration")
    cur = req.flag("navigate_current_metric", True)
    if req.raw("scroll_id"):
        decode_scroll(req.raw("scroll_id"), "plot_sample")
    with ctx.store.tx() as conn:
        task_id = require_target(ctx, conn, req.raw("task"))
        state = {"k": "plot_sample", "task": task_id, "metric": metric, "cur": cur, "pos": None}
        fits = [p for p in _plot_positions(conn, _where(task_id, PLOT, metric))
                if iteration is None or p[0] <= iteration]
        return _plot_answer(conn, state, _where(task_id, PLOT, metric if cur else None), max(fits) if fits else None)


@endpoint("events.next_plot_sample")
def next_plot_sample(ctx: CallContext, req: Request) -> dict:
    """The next metric's plots on this iteration, else the first metric's on the next iteration
    (previous when `navigate_earlier`, the default); a viewer kept to one metric moves by iteration."""
    check_request(ctx, req)
    state = _state(req, "plot_sample")
    with ctx.store.tx() as conn:
        where = _where(require_target(ctx, conn, req.raw("task")), PLOT, state["metric"] if state["cur"] else None)
        if state["pos"] is None:
            return _plot_answer(conn, state, where, None)
        by_iteration = state["cur"] or req.flag("next_iteration")
        pos = _step(_plot_positions(conn, where), tuple(state["pos"]), req.flag("navigate_earlier", True),
                    by_iteration)
        return _plot_answer(conn, state, where, pos)

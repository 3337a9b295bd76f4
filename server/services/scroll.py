"""`scroll_id` paging for the _ex listings (tasks, models): one id for the whole scroll.

A scroll starts with `size` (and a null or no `scroll_id`); each later call with its id answers
the next `size` documents; `refresh_scroll` re-reads from the start up to where it got. The
answer carries the same id on every page: the official web UI compares it with the one it holds
and takes any other as an expired session (it then reloads the whole table, so the table never
gets past its first page). The id therefore names a position kept here, in the server's
key/value table (shared by every server on the same database), not the position itself.

A scroll lives TTL_S from its start (the id carries its expiry); expired ones are swept when a
new scroll starts, at most every SWEEP_EVERY_S per process (the sweep reads every scroll's key:
a table opened once a second would otherwise read a day of them each time). An unknown,
malformed or expired id is a 400 naming `scroll_id`.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from server import errors
from server.rpc.registry import CallContext, Request
from server.storage import tables as t
from shipyard.protocol import Subcode

TTL_S = 24 * 3600
SWEEP_EVERY_S = 60.0
_last_sweep = 0.0  # time.monotonic() of this process's last sweep
_PREFIX = "scroll:"
_ID = re.compile(r"^([0-9a-f]{1,12})-[0-9a-f]{32}$")


@dataclass(frozen=True)
class Window:
    scroll_id: str
    start: int
    size: int
    reached: int  # how far the scroll had got before this call


def _bad() -> errors.APIError:
    return errors.APIError(400, Subcode.INVALID_SCROLL_ID,
                           "Invalid scroll id: field 'scroll_id' must be a value returned by an earlier "
                           "call (scrolls expire a day after they start)")


def _size(req: Request) -> int:
    size = req.integer("size")
    if size is None or size < 1:
        raise errors.validation("field 'size' must be an integer >= 1 when scrolling (scroll_id)")
    return size


def window(ctx: CallContext, req: Request) -> Window | None:
    """The page a request asks for, or None when it does not scroll."""
    if req.body.get("scroll_id") is None and req.body.get("size") is None:
        return None
    size = _size(req)
    scroll_id = req.text("scroll_id")
    if not scroll_id:
        return Window(_start(ctx), 0, size, 0)
    reached = _position(ctx, scroll_id)
    if req.flag("refresh_scroll"):
        return Window(scroll_id, 0, max(reached, size), reached)
    return Window(scroll_id, reached, size, reached)


def advance(ctx: CallContext, page: Window, count: int) -> str:
    """Record how far the scroll got after answering `count` documents; its id."""
    reached = max(page.reached, page.start + count)
    if reached != page.reached or page.start == 0:
        with ctx.store.tx() as conn:
            ctx.store.meta_set(conn, _PREFIX + page.scroll_id, json.dumps({"position": reached}))
    return page.scroll_id


def _start(ctx: CallContext) -> str:
    now = int(time.time())
    scroll_id = f"{now + TTL_S:x}-{secrets.token_hex(16)}"
    global _last_sweep
    if time.monotonic() - _last_sweep >= SWEEP_EVERY_S:
        _last_sweep = time.monotonic()
        with ctx.store.tx() as conn:
            _sweep(conn, now)
    return scroll_id


def _position(ctx: CallContext, scroll_id: str) -> int:
    match = _ID.match(scroll_id)
    if match is None or int(match.group(1), 16) < time.time():
        raise _bad()
    with ctx.store.tx() as conn:
        raw = ctx.store.meta_get(conn, _PREFIX + scroll_id)
    if raw is None:
        raise _bad()
    return int(json.loads(raw)["position"])


def _sweep(conn, now: int) -> None:
    c = t.server_meta.c
    keys = [row[0] for row in conn.execute(select(c.key).where(c.key.like(_PREFIX + "%")))]
    expired = [k for k in keys if (m := _ID.match(k[len(_PREFIX):])) and int(m.group(1), 16) < now]
    if expired:
        conn.execute(delete(t.server_meta).where(c.key.in_(expired)))

"""tasks.wait_status (a Shipyard extension): long-poll a task's status.

The caller names the `status` and `status_message` it last saw; the answer comes as soon as
either differs (or the task is gone), else after `wait_s` with the unchanged values. An agent
running the task waits here, so `tasks.stop` / reset / delete reach it at once; the status
changes wake it through server/task_waits.py, and the waiter re-reads the task every second on
its own for changes made by another server process.

    {"task": ID, "status": "in_progress", "status_message": "", "wait_s": 30}
    -> {"task": {"id", "status", "status_message"} | null, "changed": bool}
"""
from __future__ import annotations

import time

from server import errors
from server.rpc.registry import CallContext, Request, endpoint
from server.services.tasks import doc as taskdoc
from server.task_waits import WAITERS


def _read(ctx: CallContext, task_id: str) -> dict | None:
    """{id, status, status_message}, or None when the task does not exist (any more)."""
    with ctx.store.tx() as conn:
        try:
            doc = taskdoc.load(ctx, conn, task_id)
        except errors.APIError:
            return None
    return {"id": task_id, "status": doc.get("status") or "", "status_message": doc.get("status_message") or ""}


def _changed(now: dict | None, status: str | None, message: str | None) -> bool:
    if now is None:
        return True
    return (status is not None and now["status"] != status) or (message is not None and now["status_message"] != message)


async def _current(ctx: CallContext, task_id: str) -> dict | None:
    if ctx.settings is not None:   # never wait on the database lock on the event loop
        return await ctx.settings.run_db(_read, ctx, task_id)
    return _read(ctx, task_id)


@endpoint("tasks.wait_status")
async def wait_status(ctx: CallContext, req: Request) -> dict:
    task_id = req.id("task", "task")
    status, message = req.text("status"), req.text("status_message")
    limit = ctx.settings.long_poll_max_s if ctx.settings else 60.0
    deadline = time.monotonic() + min(max(0.0, req.number("wait_s", 0.0) or 0.0), limit)
    while True:
        now = await _current(ctx, task_id)
        if _changed(now, status, message):
            return {"task": now, "changed": True}
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (ctx.notifier is not None and ctx.notifier.closed):
            return {"task": now, "changed": False}
        await WAITERS.wait(task_id, remaining)
        gone = ctx.is_disconnected
        if gone is not None and await gone():
            return {"task": now, "changed": False}   # the caller left

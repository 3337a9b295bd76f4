"""Wake-ups for long-polling `queues.get_next_task` callers.

Enqueue calls `notify(queue_id)`; a waiting pop awaits `wait(queue_ids, timeout)`. Waiters
also re-check on their own every `recheck_s`, so a task enqueued by another server process
(PostgreSQL scale-out) is still found, only less promptly. `close()` (the server is stopping)
wakes every waiter and makes `wait` return at once, so long-polls end instead of holding the
shutdown for their whole wait.
"""
from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class Notifier:
    def __init__(self, recheck_s: float = 1.0):
        self.recheck_s = recheck_s
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def notify(self, queue_id: str) -> None:
        if self._loop is None or not self._waiters.get(queue_id):
            return
        if threading.get_ident() == self._loop_thread:
            self._wake(queue_id)
        else:
            self._loop.call_soon_threadsafe(self._wake, queue_id)

    def close(self) -> None:
        """The server is stopping: wake every waiter, and let no new one wait. Safe from any thread."""
        self.closed = True
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake_all()
        else:
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for queue_id in list(self._waiters):
            self._wake(queue_id)

    def _wake(self, queue_id: str) -> None:
        for ev in list(self._waiters.get(queue_id, ())):
            ev.set()

    async def wait(self, queue_ids: list[str], timeout: float) -> bool:
        """Wait until one of the queues is notified or `min(timeout, recheck_s)` passes."""
        if self._loop is None:
            self.bind(asyncio.get_running_loop())
        if self.closed:
            return False
        ev = asyncio.Event()
        for qid in queue_ids:
            self._waiters[qid].add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, min(timeout, self.recheck_s)))
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            for qid in queue_ids:
                waiters = self._waiters.get(qid)
                if waiters is not None:
                    waiters.discard(ev)
                    if not waiters:
                        self._waiters.pop(qid, None)

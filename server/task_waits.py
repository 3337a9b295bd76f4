"""Wake-ups for `tasks.wait_status` callers: an agent waiting for its running task's status to
change (an abort request, a reset, a delete), so the abort reaches it at once instead of at its
next poll.

    WAITERS.wake(task_id)                          # after a status change is committed; any thread
    changed = await WAITERS.wait(task_id, 5.0)     # on the event loop; True when woken

Kept apart from server/notify.py (the queues' wake-ups): a waiter here is keyed by task, and
each remembers its own event loop, so one registry serves every app in the process. A waiter
woken by another server process's change (PostgreSQL scale-out) never is: callers re-read the
task every `recheck_s` on their own.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict


class TaskWaiters:
    def __init__(self, recheck_s: float = 1.0):
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)

    def wake(self, task_id: str) -> None:
        """Wake everyone waiting on `task_id`. Cheap when nobody waits; safe from any thread."""
        with self._lock:
            waiting = list(self._waiters.get(task_id, ()))
        for loop, event in waiting:
            with contextlib.suppress(RuntimeError):  # a closed loop: its server is gone
                loop.call_soon_threadsafe(event.set)

    def waiting(self, task_id: str) -> int:
        with self._lock:
            return len(self._waiters.get(task_id, ()))

    async def wait(self, task_id: str, timeout: float) -> bool:
        """Wait until `task_id` is woken or `min(timeout, recheck_s)` passes; True when woken."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters[task_id].add(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout=max(0.0, min(timeout, self.recheck_s)))
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(task_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        self._waiters.pop(task_id, None)


WAITERS = TaskWaiters()
"""The process's registry: status changes wake it, `tasks.wait_status` waits on it."""

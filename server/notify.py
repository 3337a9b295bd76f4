"""Wake-ups for long-polling `queues.get_next_task` callers.

Enqueue calls `notify(queue_id)`; a waiting pop awaits `wait(queue_ids, timeout)`. On
PostgreSQL, replicas wake each other's waiters through LISTEN/NOTIFY (server/replicas.py calls
`notify` from its listener thread); waiters also re-check on their own, every
`listening_recheck_s` while that listener is up and every `recheck_s` otherwise (SQLite, or the
listener reconnecting), so a missed notification costs latency, never a task. `mark()` before a
pop and `wait(..., since=mark)` after it close the gap between the two: a notification that came
while the pop ran (before its waiter was there to hear it) makes the wait return at once.
`close()` (the server is stopping) wakes every waiter and makes `wait` return at once, so
long-polls end instead of holding the shutdown for their whole wait.
"""
from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class Notifier:
    def __init__(self, recheck_s: float = 1.0, listening_recheck_s: float = 30.0):
        self.fast_recheck_s = recheck_s
        self.listening_recheck_s = listening_recheck_s
        self.listening = False
        self.waiting = 0  # long-polls waiting now (on /metrics)
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.closed = False
        self._notes: dict[str, int] = defaultdict(int)  # notifications so far, per queue (`mark`)
        self._wake_alls = 0  # and wake_all calls (a reconnect: notifications may have been missed)

    @property
    def recheck_s(self) -> float:
        return max(self.listening_recheck_s, self.fast_recheck_s) if self.listening else self.fast_recheck_s

    def set_listening(self, listening: bool) -> None:
        """Cross-replica notifications are (not) arriving: re-check slowly (quickly)."""
        self.listening = listening

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def mark(self, queue_ids: list[str]) -> int:
        """Taken before a pop: `wait(queue_ids, ..., since=mark)` returns at once when one of the
        queues was notified in between (the pop's snapshot may have missed its entry, and no waiter
        was there yet to hear it)."""
        return self._wake_alls + sum(self._notes.get(qid, 0) for qid in queue_ids)

    def notify(self, queue_id: str) -> None:
        self._notes[queue_id] += 1  # two threads' increments colliding still change the count
        if self._loop is None or not self._waiters.get(queue_id):
            return
        if threading.get_ident() == self._loop_thread:
            self._wake(queue_id)
        else:
            self._loop.call_soon_threadsafe(self._wake, queue_id)

    def close(self) -> None:
        """The server is stopping: wake every waiter, and let no new one wait. Safe from any thread."""
        self.closed = True
        self.wake_all()

    def wake_all(self) -> None:
        """Every waiter re-checks its queues now. Safe from any thread."""
        self._wake_alls += 1
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

    async def wait(self, queue_ids: list[str], timeout: float, since: int | None = None) -> bool:
        """Wait until one of the queues is notified or `min(timeout, recheck_s)` passes: True when
        woken (or a notification came after `since`, a `mark()`), False when the time passed."""
        if self._loop is None:
            self.bind(asyncio.get_running_loop())
        if self.closed:
            return False
        if since is not None and self.mark(queue_ids) != since:
            return True
        ev = asyncio.Event()
        for qid in queue_ids:
            self._waiters[qid].add(ev)
        self.waiting += 1
        try:
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, min(timeout, self.recheck_s)))
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self.waiting -= 1
            for qid in queue_ids:
                waiters = self._waiters.get(qid)
                if waiters is not None:
                    waiters.discard(ev)
                    if not waiters:
                        self._waiters.pop(qid, None)

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

Known-empty queues: while every enqueue reaches this process (`listening`), a queue a pop found
without entries stays empty until a notification for it (or a reconnect's `wake_all`) arrives.
`counts()` before the pop and `found_empty(queues, counts)` after it record that; `known_empty`
then lets an idle agent's next long-poll wait without asking the database again (a pop that
cannot pop anything was most of what an idle long-poll cost). `forget_empty` drops queues a
periodic check found entries in (rows written other than through the API) and wakes their waiters.
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
        # queue -> (its notifications, wake_alls) when the pop that found it empty began
        self._empty: dict[str, tuple[int, int]] = {}
        self.skipped_pops = 0  # long-poll tries answered by known_empty (on /metrics)

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

    def counts(self, queue_ids: list[str]) -> tuple[tuple[int, int], ...]:
        """Taken before a pop: what `found_empty` records (each queue's notifications and the
        wake_alls so far)."""
        return tuple((self._notes.get(qid, 0), self._wake_alls) for qid in queue_ids)

    def found_empty(self, queue_ids: list[str], counts: tuple[tuple[int, int], ...], empty: set[str]) -> None:
        """The pop that began at `counts` (of `queue_ids`) found the queues in `empty` without
        entries: they stay empty until notified. A notification that came while the pop ran
        already differs from `counts`, so it is never lost here."""
        for qid, count in zip(queue_ids, counts, strict=True):
            if qid in empty:
                self._empty[qid] = count

    def known_empty(self, queue_ids: list[str]) -> bool:
        """Every queue was found empty and nothing was enqueued to it since, as far as this process
        can know: only while listening (every enqueue's notification reaches it)."""
        if not self.listening or self.closed:
            return False
        for qid in queue_ids:
            seen = self._empty.get(qid)
            if seen is None:
                return False
            if seen != (self._notes.get(qid, 0), self._wake_alls):
                self._empty.pop(qid, None)  # notified since: the next pop asks the database
                return False
        return True

    def empty_queues(self) -> list[str]:
        """The queues known empty now (for the periodic check)."""
        return list(self._empty)

    def forget_empty(self, queue_ids: list[str]) -> None:
        """These queues have entries (or are gone) after all: their next pops ask the database,
        and their waiters look now. Safe from any thread."""
        for qid in queue_ids:
            self._empty.pop(qid, None)
            self.notify(qid)

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

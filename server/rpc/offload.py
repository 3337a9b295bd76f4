"""Run API handlers off the event loop, on a bounded pool of daemon threads.

The three listeners share one event loop; a handler that computes on it (a large `get_all`, a
pattern filter, a big events batch) stops every other request and the signal handling with it.
`HandlerPool.run(fn, *args)` hands the call to a worker thread and awaits its result, so the
loop keeps answering (`debug.ping` included) while the work goes on.

A hop to a thread costs about 100 us of CPU and GIL hand-offs, half the throughput of the
enqueue/pop hot path if every call took it. So `Placement` keeps the calls known to be light
(one document by id, a small body) on the loop, and sends everything else to the pool. A light
call still runs on the pool when SQLite is busy with a pool thread's transaction (the store's
`gate`): the loop never waits on the database lock. On PostgreSQL light calls run on the pool
too (not bound per caller): there a transaction is a string of round trips, mostly waiting, and
on the pool the waits of concurrent calls overlap instead of each stopping the loop. An inline
endpoint that once takes long (a huge stored document) runs on the pool for a while after.

    pool = HandlerPool(8)            # 8 threads, started on first use
    result = await pool.run(fn, a)   # fn(a) on a worker; its exception is raised here
    await pool.run(fn, a, owner=key) # one of `key`'s calls on the workers at a time
    await pool.run(fn, a, ingest=True)  # at most pool.ingest_threads such calls on the workers
    pool.close(grace_s=5)            # no new work; wait for running calls; True when all ended

A call handed over after `close` (or still queued then) never runs: it raises `PoolClosed`,
which the listeners answer with the retryable 503.

Ingest (events.add_batch: hundreds of reporting tasks, each a batch a second, arriving together)
holds at most `ingest_threads` of the workers (config `ingest_threads`; by default half) at a time; the rest of its calls wait
on the event loop, not in the workers' queue, so a tasks.get_by_id behind a burst of batches
finds a free worker at once instead of queueing behind all of them.

Workers are daemon threads: one stuck in a query cannot keep the process from exiting.
Each keeps its own SQLite connection (server/storage/store.py), so the pool bounds those too.
A call whose caller was cancelled (shutdown, client gone) before a worker picked it up is skipped.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger("shipyard.server.offload")
_STOP = object()

# Calls that hold at most HandlerPool.ingest_threads workers at a time (see the module docstring).
INGEST_ENDPOINTS = frozenset({"events.add_batch"})

# Calls that touch at most a few documents by id and are hot in the agent/SDK protocol.
LIGHT_ENDPOINTS = frozenset({
    "debug.ping", "server.info", "users.get_current_user", "users.get_all",
    "tasks.get_by_id", "tasks.create", "tasks.enqueue", "tasks.dequeue", "tasks.ping", "tasks.started",
    "tasks.stopped", "tasks.completed", "tasks.failed", "tasks.close", "tasks.stop", "tasks.edit",
    "tasks.update", "tasks.set_requirements", "tasks.add_or_update_artifacts", "tasks.add_or_update_model",
    "tasks.edit_hyper_params", "tasks.edit_configuration", "tasks.renew_lease", "tasks.release",
    "tasks.record_exit", "tasks.start_run", "queues.add_task", "queues.remove_task", "queues.get_by_id", "queues.get_default",
    "queues.get_num_entries", "queues.peek_task", "workers.register", "workers.unregister",
    "workers.status_report", "models.get_by_id", "models.create", "models.update", "models.edit",
    "models.set_ready", "models.update_for_task", "projects.get_by_id", "projects.create", "events.add",
})


class PoolClosed(RuntimeError):
    """The pool was closed (the server is shutting down) before this call ran: nothing of it ran."""


def _reply(loop: asyncio.AbstractEventLoop, future: asyncio.Future, ok: bool, value: Any) -> None:
    """Settle `future` on its loop, from a worker thread."""
    with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone, nobody awaits this answer
        loop.call_soon_threadsafe(_settle, future, ok, value)


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class HandlerPool:
    """A fixed set of daemon threads taking calls from one queue; see the module docstring."""

    def __init__(self, threads: int, per_owner: int = 1, name: str = "shipyard-handler", ingest_threads: int = 0):
        if threads < 1:
            raise ValueError("a handler pool needs at least one thread")
        self.size = threads
        self.per_owner = per_owner
        self.ingest_threads = min(threads, ingest_threads) if ingest_threads > 0 else max(1, threads // 2)
        self.name = name
        self._owners: dict[Any, tuple[asyncio.Semaphore, int]] = {}  # event-loop side only
        self._ingest: asyncio.Semaphore | None = None  # made on the loop, at the first ingest call
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running = 0
        self._closed = False
        self._all_idle = threading.Condition(self._lock)

    async def run(self, fn: Callable[..., Any], *args: Any, owner: Any = None, ingest: bool = False) -> Any:
        """`fn(*args)` on a worker. Calls of one `owner` (a caller's key) hold at most `per_owner`
        threads at a time (one by default: a caller's calls then run one after another, as they
        all did on the event loop before); the rest of theirs wait here, so one caller cannot
        take the pool, nor flood the GIL the event loop needs. `ingest` calls of all callers
        together hold at most `ingest_threads` (taken after the caller's own slot, so a caller
        waiting for its own turn holds no ingest thread)."""
        if owner is None or self.per_owner >= self.size:
            return await self._submit(fn, args, ingest)
        slot, users = self._owners.get(owner, (None, 0))
        if slot is None:
            slot = asyncio.Semaphore(self.per_owner)
        self._owners[owner] = (slot, users + 1)
        try:
            async with slot:
                return await self._submit(fn, args, ingest)
        finally:
            slot, users = self._owners[owner]
            if users == 1:
                del self._owners[owner]
            else:
                self._owners[owner] = (slot, users - 1)

    async def _submit(self, fn: Callable[..., Any], args: tuple, ingest: bool = False) -> Any:
        if ingest:
            if self._ingest is None:
                self._ingest = asyncio.Semaphore(self.ingest_threads)
            async with self._ingest:
                return await self._submit(fn, args)
        if self._closed:
            raise PoolClosed("the handler pool is closed (server shutting down)")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._threads:
            self._start()
        self._jobs.put((loop, future, fn, args))
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._threads = [threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
                             for i in range(self.size)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            loop, future, fn, args = job
            with self._lock:
                self._running += 1
            try:
                if self._closed:
                    _reply(loop, future, False, PoolClosed("the server is shutting down"))
                elif not future.cancelled():
                    self._call(loop, future, fn, args)
            finally:
                with self._lock:
                    self._running -= 1
                    if self._running == 0:
                        self._all_idle.notify_all()

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, future: asyncio.Future, fn: Callable[..., Any], args: tuple) -> None:
        try:
            outcome = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request, raised there
            outcome = (False, exc)
        _reply(loop, future, *outcome)

    @property
    def busy(self) -> int:
        return self._running

    def close(self, grace_s: float) -> bool:
        """Refuse new work, let idle workers end, and wait up to `grace_s` for running calls.
        True when none is still running (their database connections can then be closed)."""
        deadline = time.monotonic() + grace_s
        with self._lock:
            self._closed = True
            while self._running and time.monotonic() < deadline:
                self._all_idle.wait(max(0.0, deadline - time.monotonic()))
            running = self._running
        for _ in self._threads:
            self._jobs.put(_STOP)
        return running == 0


class Placement:
    """Where a synchronous call runs: `inline(name, body_bytes)` is True for a light endpoint with
    a small body that has not been slow lately; `took(name, cpu_s)` records the CPU time an inline
    call took (CPU, not wall time: a busy machine preempting the loop does not demote anything)."""

    def __init__(self, light: frozenset[str] = LIGHT_ENDPOINTS, max_body: int = 64 * 1024,
                 slow_s: float = 0.02, demote_s: float = 60.0):
        self.light = light
        self.max_body = max_body
        self.slow_s = slow_s
        self.demote_s = demote_s
        self._demoted: dict[str, float] = {}

    def inline(self, name: str, body_bytes: int) -> bool:
        if name not in self.light or body_bytes > self.max_body:
            return False
        until = self._demoted.get(name)
        if until is not None:
            if time.monotonic() < until:
                return False
            del self._demoted[name]
        return True

    def took(self, name: str, cpu_s: float) -> None:
        if cpu_s > self.slow_s:
            log.info("%s took %.0f ms of CPU on the event loop: it runs on the handler pool for %.0f s",
                     name, cpu_s * 1000, self.demote_s)
            self._demoted[name] = time.monotonic() + self.demote_s


async def near_loop(pool: HandlerPool | None, gate: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` on the loop when the database is SQLite and free (holding `gate`), else on
    `pool`: for the short transactions the loop runs itself (queue pops, the lease reaper). On
    PostgreSQL (no gate) always on `pool`: a transaction there is a string of network round trips,
    and on the loop every other request would wait through them (see `Placement`)."""
    if pool is None:
        return fn(*args)
    if gate is None:
        return await pool.run(fn, *args)
    if gate.acquire(blocking=False):
        try:
            return fn(*args)
        finally:
            gate.release()
    return await pool.run(fn, *args)

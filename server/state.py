"""Everything a running server shares between its listeners and handlers."""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from server import errors
from server.auth.keys import KeyStore, TokenSigner
from server.auth.login_guard import LoginGuard
from server.fairshare.usage import QuotaBook
from server.files.backend import FileBackend
from server.notify import Notifier
from server.replicas import Coordinator
from server.rpc.offload import HandlerPool, Placement, PoolClosed, near_loop
from server.storage.store import Store
from shipyard import clock

log = logging.getLogger("shipyard.server.state")

_ACTIVE_KEY_TTL_S = 5.0
_STALE_KEY_TTL_S = 60.0  # longest a cached answer is used while the database is busy (SQLite) or asked again (PostgreSQL)
# While this replica hears every replica's key changes (PostgreSQL, its coordinator listening), a
# cached answer is dropped by the change itself; the TTL is then only the backstop for changes
# made outside Shipyard (SQL by hand). Each idle agent's long-poll (every 30 s) looked its key
# up again under the 5 s TTL: a transaction per poll.
_LISTENING_KEY_TTL_S = 120.0
# ...and the keys in use are looked up again together, one statement every _KEY_SWEEP_S (`sweep_keys`):
# no call waits on, or pays for, a look-up of its own, and a change made by hand in SQL is seen
# within that time.
_KEY_SWEEP_S = 60.0
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestMetrics:
    """Counts and latency histogram per endpoint (exported on /metrics by the ops issue)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(_BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        with self._lock:
            self.counts[(endpoint, code)] += 1
            self.sums[endpoint] += seconds
            row = self.buckets[endpoint]
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    row[i] += 1
                    break
            else:
                row[-1] += 1


def _still_active(cached: tuple[bool, float, float | None]) -> bool:
    active, _, expires = cached
    return active and (expires is None or clock.now() < expires)


@dataclass
class ServerState:
    store: Store
    data_dir: Path
    signer: TokenSigner
    keys: KeyStore
    notifier: Notifier = field(default_factory=Notifier)
    metrics: RequestMetrics = field(default_factory=RequestMetrics)
    files_url: str = "http://localhost:8081"
    web_url: str = "http://localhost:8080"
    api_url: str = "http://localhost:8008"
    long_poll_max_s: float = 60.0
    worker_timeout_s: float = 600.0
    lease_max_attempts: int = 3
    reaper_interval_s: float = 1.0
    login_guard: LoginGuard = field(default_factory=LoginGuard)
    files_max_file_mb: int = 16384
    files_max_request_mb: int = 16384
    files_min_free_mb: int = 1024
    files_backend: FileBackend | None = None  # where files live (None: a local store in data_dir/files)
    handlers: HandlerPool | None = None  # sync handlers run here, off the event loop (None: inline)
    query_budget_s: float | None = None  # time a get_all filter may take before it is refused
    placement: Placement = field(default_factory=Placement)  # which calls may run on the loop
    web_ui: Path | None = None  # an official ClearML web UI build the web listener serves (--web-ui)
    cors_origins: frozenset[str] = frozenset()  # origins whose pages may call the API listener
    fair: QuotaBook = field(default_factory=QuotaBook)  # quotas and fair-share settings (server/fairshare)
    replica: str = ""  # this replica's name (/metrics)
    coordinator: Coordinator | None = None  # PostgreSQL: cross-replica wake-ups and leadership
    _active: dict[str, tuple[bool, float, float | None]] = field(default_factory=dict)
    _refreshing: dict[str, asyncio.Task] = field(default_factory=dict)  # keys being looked up in the background
    _forgets: int = 0  # forget_key calls so far: a look-up that overlapped one does not cache its answer
    _used: set[str] = field(default_factory=set)  # keys checked since the last sweep (sweep_keys)

    @property
    def is_leader(self) -> bool:
        """Does this replica run the periodic jobs (always, without a coordinator)?"""
        return self.coordinator is None or self.coordinator.is_leader

    def run_db(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """Run a short database function from a coroutine without blocking the loop on the lock."""
        return near_loop(self.handlers, self.store.gate, fn, *args)

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def files(self) -> FileBackend:
        if self.files_backend is None:
            from server.files.local import LocalBackend

            self.files_backend = LocalBackend(self.files_dir, self.files_min_free_mb)
        return self.files_backend

    async def key_active(self, access_key: str) -> bool:
        """`keys_active` for a coroutine: on PostgreSQL (no gate) a look-up the cache cannot
        answer runs on the handler pool, so the event loop never waits through its round trips
        (every key's first call after `_ACTIVE_KEY_TTL_S` looks up; with hundreds of keys those
        look-ups stalled every request on the loop). The answer is the same as keys_active's; a
        look-up that comes after the pool closed (shutdown) raises the retryable 503."""
        if self.coordinator is not None:
            self._used.add(access_key)  # kept fresh by the sweep while it runs
        if self.store.gate is not None or self.handlers is None or self._fresh(access_key):
            return self.keys_active(access_key)
        cached = self._active.get(access_key)
        if cached is not None and cached[0] and clock.monotonic() - cached[1] < self._key_ttls()[1]:
            # An active key's answer past its TTL: used once more while it is looked up in the
            # background. Hundreds of keys' TTLs ran out together every 5 s and their calls
            # queued for the handler pool behind each other's look-ups (get_by_id p99 46 -> 26 ms
            # without them, bench_scale's report phase). A revocation is seen from the look-up on.
            self._refresh_later(access_key)
            return _still_active(cached)
        try:
            return bool(await self.handlers.run(self.keys_active, access_key))
        except PoolClosed:
            raise errors.shutting_down() from None

    def _refresh_later(self, access_key: str) -> None:
        """Look `access_key` up on the handler pool in the background (one look-up a key at a time)."""
        if access_key not in self._refreshing:
            task = asyncio.get_running_loop().create_task(self._refresh(access_key))
            self._refreshing[access_key] = task  # held here until done (the loop keeps only a weak reference)
            task.add_done_callback(lambda _: self._refreshing.pop(access_key, None))

    async def _refresh(self, access_key: str) -> None:
        assert self.handlers is not None  # only PostgreSQL servers with a pool refresh in the background
        try:
            await self.handlers.run(self._look_up_key, access_key, clock.monotonic())
        except Exception:  # noqa: BLE001 - pool closed or database away: the next call past the stale TTL looks up itself
            log.debug("background look-up of a key failed", exc_info=True)

    def _key_ttls(self) -> tuple[float, float]:
        """(how long a cached key check stands, how long an active key's stands while it is looked
        up again): longer while every key change reaches this replica (the coordinator listens)."""
        if self.coordinator is not None and self.coordinator.connected:
            return _LISTENING_KEY_TTL_S, _LISTENING_KEY_TTL_S + _STALE_KEY_TTL_S
        return _ACTIVE_KEY_TTL_S, _STALE_KEY_TTL_S

    def _fresh(self, access_key: str) -> bool:
        cached = self._active.get(access_key)
        return cached is not None and clock.monotonic() - cached[1] < self._key_ttls()[0]

    def keys_active(self, access_key: str) -> bool:
        cached = self._active.get(access_key)
        now = clock.monotonic()
        ttl, stale = self._key_ttls()
        if cached and now - cached[1] < ttl:
            return _still_active(cached)
        gate = self.store.gate
        if cached and now - cached[1] < stale and gate is not None:
            if not gate.acquire(blocking=False):
                # A pool thread is inside a transaction: rather than make the event loop wait on
                # the database, the last answer stands a little longer (a revocation through the
                # API drops it at once: forget_key).
                return _still_active(cached)
            try:
                return self._look_up_key(access_key, now)
            finally:
                gate.release()
        return self._look_up_key(access_key, now)

    def _look_up_key(self, access_key: str, now: float) -> bool:
        forgets = self._forgets
        active, expires = self.keys.active_until(access_key)
        if forgets == self._forgets:  # else a change may have come after this read: not cached
            self._active[access_key] = (active, now, expires)
        return active

    def sweep_keys(self) -> int:
        """While every key change reaches this replica (PostgreSQL, listening): look the keys
        checked since the last sweep up again, all in one statement, so their cached answers stay
        fresh without a look-up each; how many. Called every _KEY_SWEEP_S on the handler pool."""
        if self.coordinator is None or not self.coordinator.connected:
            self._used = set()
            return 0  # answers last _ACTIVE_KEY_TTL_S and each is looked up again
        used, self._used = self._used, set()
        keys = sorted(k for k in list(used) if k in self._active)  # list(): a copy made at once (the loop adds)
        now, forgets = clock.monotonic(), self._forgets
        answers = self.keys.active_many(keys) if keys else {}
        if forgets == self._forgets:  # else a change may have come after this read: not cached
            for key, (active, expires) in answers.items():
                if key in self._active:
                    self._active[key] = (active, now, expires)
        return len(keys)

    def forget_key(self, access_key: str) -> None:
        """Drop a cached answer, so a revocation takes effect at once: made through this replica's
        API, or heard from another replica (the coordinator's thread calls this)."""
        self._forgets += 1
        self._active.pop(access_key, None)

    def forget_all_keys(self) -> None:
        """Drop every cached answer (the coordinator listens again after a gap: changes made
        meanwhile were not heard)."""
        self._forgets += 1
        self._active.clear()

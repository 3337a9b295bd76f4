"""What EnvCache hands out: a run's lease on an entry, the materialize result, entry listings.

    result = cache.materialize(...)   # EnvResult: python, frozen, cache_hit, key, seconds, lease
    ... spawn the task ...
    result.after_start()              # with bytecode_later=True: the background compiler, now
    ... the run ends ...
    result.lease.close()              # prune may take the entry again; verified first when the
                                      # task could write it (Lease.exposed)

`How` says how a venv is handed over (to whom, whether it outlives the entry); `Once` runs a
callable on its first call only (EnvResult.after_start).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

Owner = tuple[int, int]


class _Releasing(Protocol):
    def check_released(self, key: str) -> None: ...


class Lease:
    """A run's hold on the entry its venv is layered over (EnvCache.materialize returns it).

    Until `close()` prune leaves the entry alone. For a run whose task could write the cache
    (no `owner=`), it also keeps the run counted as exposed (exposure.py), and `close()`, once
    the task has ended, verifies the entry so the next run of it needs no check.
    """

    def __init__(self, cache: _Releasing, key: str, use_fd: int | None, exposed_fd: int | None):
        self.cache, self.key = cache, key
        self._fds = [fd for fd in (exposed_fd, use_fd) if fd is not None]
        self.exposed = exposed_fd is not None

    def close(self) -> None:
        """The run has ended: release the entry (verifying it first when the task could write it)."""
        if not self._fds:
            return
        if self.exposed:
            os.close(self._fds.pop(0))
            if self.key:
                self.cache.check_released(self.key)
        self.release()

    def release(self) -> None:
        """Release without verifying (the run never started)."""
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.release()


@dataclass(frozen=True)
class EnvResult:
    python: Path
    """The interpreter of the materialized environment (inside the target directory)."""
    frozen: list[str] = field(hash=False)
    cache_hit: bool
    key: str
    """Empty when the requirements could not be cached (editable, -r, local paths...)."""
    seconds: float
    lease: Lease | None = field(default=None, compare=False, hash=False, repr=False)
    """Holds the entry for the run (None when not cached): close it when the run has ended."""
    after_start: Callable[[], None] = field(default=lambda: None, compare=False, hash=False, repr=False)
    """With `materialize(bytecode_later=True)`: starts the entry's background byte-compiler if
    it needs one; call it once the task is spawned (a second call does nothing)."""


@dataclass(frozen=True)
class CacheEntry:
    key: str
    size: int
    last_used: float


class Once:
    """`fn` on the first call, nothing on later ones."""

    def __init__(self, fn: Callable[[], object]):
        self._fn: Callable[[], object] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


Handed = tuple[list[str], Lease]
"""A hand-over: the entry's freeze list, and the run's lease on it."""


@dataclass(frozen=True)
class How:
    """How a venv is handed over: to whom (`owner`), and whether it must outlive the entry."""

    owner: Owner | None
    standalone: bool

    @property
    def exposed(self) -> bool:
        """A task of the agent's own user will run with it (counted: exposure.py)."""
        return self.owner is None and not self.standalone

    def describe(self, farm: bool) -> str:
        if not farm:
            return "layered over the entry"
        return "linked (standalone)" if self.standalone else "linked (the task's user cannot reach the cache)"

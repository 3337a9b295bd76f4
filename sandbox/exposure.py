"""Which cache entries a task could have changed since they were last verified.

    ledger = Exposures(cache_root)
    if ledger.verified_now(entry): ...hand it out without a check...
    with ledger.quiet() as quiet: verify(...); quiet and ledger.record(entry)   # after a full check
    fd = ledger.expose()           # before a run whose task can write the cache starts
    os.close(fd)                   # when that run has ended

A task of the agent's own user (no agent.task_user) can chmod and write any file of the
cache, not only those of its own entry. So exposure is counted cache-wide:

    exposures        one byte appended per exposed run, before its task starts; its size
                     is the generation G
    locks/exposed.lock  held shared by every exposed run until it ends (its task reaped)
    entries/<key>/VERIFIED  the generation at which the entry was last checked in full
                     while no exposed run was alive

An entry whose VERIFIED equals G was checked after the last exposed run ended and no exposed
run has started since: no task could have changed it, and it is handed out without a check.
Any other entry is checked in full first (sandbox/manifest.verify). The generation is only
recorded by a check that holds exposed.lock exclusively (no exposed run alive, none starting).
The cache is local to one machine (flock; a shared NFS cache is copied into it first).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from shipyard.locks import acquire, try_lock

VERIFIED = "VERIFIED"
LEDGER = "exposures"


class Exposures:
    def __init__(self, root: Path, lock_timeout: float = 3600.0):
        self.root = root
        self.lock_timeout = lock_timeout

    def generation(self) -> int:
        try:
            return os.stat(self.root / LEDGER).st_size
        except FileNotFoundError:
            return 0

    def verified_now(self, entry: Path) -> bool:
        """Whether no task could have changed `entry` since it was last verified."""
        try:
            recorded = int((entry / VERIFIED).read_text())
        except (OSError, ValueError):
            return False
        return recorded == self.generation()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[bool]:
        """Yield True while holding off every exposed run (none is alive, none may start);
        False when one is alive (a check then still serves one hand-over, but is not recorded)."""
        fd = try_lock(self._lock_path())
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    def record(self, entry: Path) -> None:
        """Within `quiet()` that yielded True, after a full check of `entry`: it is clean as of now."""
        tmp = entry / f".{VERIFIED}.{os.getpid()}.tmp"
        tmp.write_text(f"{self.generation()}\n")
        os.replace(tmp, entry / VERIFIED)

    def expose(self) -> int:
        """Count a run whose task can write the cache as alive; returns the lock's descriptor,
        to be closed when the run has ended. The lock is taken before the generation moves on,
        so a check holding it exclusively never records a generation such a run could follow."""
        fd = acquire(self._lock_path(), shared=True, timeout=self.lock_timeout)
        try:
            ledger = os.open(self.root / LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(ledger, b".")
            finally:
                os.close(ledger)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lock_path(self) -> Path:
        return self.root / "locks" / "exposed.lock"

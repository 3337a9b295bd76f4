"""Advisory file locks (fcntl.flock): the repository and environment caches, the autoscaler state.

A lock is a small file next to the thing it protects. flock locks belong to an open file
description, so two threads that each call `file_lock` on the same path exclude each other just
like two processes do. The lock disappears with the process, so a crashed holder never leaves a
stale lock behind.
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shipyard.errors import InfrastructureError

POLL_SECONDS = 0.1
"""How often a waiting caller retries a lock that someone else holds."""


@contextmanager
def file_lock(path: Path, *, shared: bool = False, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive (or shared) lock on `path` for the duration of the block.

    Waits at most `timeout` seconds (forever when None), then raises InfrastructureError: a
    lock held that long means another agent is stuck, which is the machine's problem, not the
    task's.
    """
    fd = _open_lock_file(path)
    try:
        _acquire(fd, path, shared=shared, timeout=timeout)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def acquire(path: Path, *, shared: bool = False, timeout: float | None = None) -> int:
    """Take the lock like `file_lock` and return its descriptor: closing it releases the lock
    (for a lock held across calls, e.g. for as long as a task runs)."""
    fd = _open_lock_file(path)
    try:
        _acquire(fd, path, shared=shared, timeout=timeout)
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_lock(path: Path) -> int | None:
    """Take an exclusive lock without waiting; return the descriptor to close, or None if busy."""
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _acquire(fd: int, path: Path, *, shared: bool, timeout: float | None) -> None:
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if timeout is None:
        fcntl.flock(fd, mode)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise InfrastructureError(
                    f"timed out after {timeout:.0f}s waiting for lock {path}; "
                    "another agent may be stuck holding it",
                    kind="lock_timeout",
                ) from None
            time.sleep(POLL_SECONDS)

"""The one module that owns signal handling. Handlers only record what arrived; loops read
`Shutdown` and decide what to do (first signal: drain; second: abort)."""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable


class Shutdown:
    def __init__(self) -> None:
        self.count = 0
        self.last_signal: int | None = None
        self.event = threading.Event()
        self._listeners: list[Callable[[int], None]] = []

    @property
    def requested(self) -> bool:
        return self.count >= 1

    @property
    def abort(self) -> bool:
        return self.count >= 2

    def on_signal(self, listener: Callable[[int], None]) -> None:
        """`listener(count)` is called from the handler; it must only set flags itself."""
        self._listeners.append(listener)

    def _handle(self, signum: int, _frame: object) -> None:
        self.count += 1
        self.last_signal = signum
        self.event.set()
        for listener in self._listeners:
            listener(self.count)

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> "Shutdown":
        for signum in signals:
            signal.signal(signum, self._handle)
        return self

    def trigger(self) -> None:
        """Request shutdown from code (tests, CLI commands)."""
        self._handle(signal.SIGTERM, None)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0: nothing is delivered; a process of
    another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

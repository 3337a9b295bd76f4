"""The scheduler loop: tick every part, sleep until the next schedule is due (at most the poll
interval, so triggers see changes within it), stop on SIGTERM/SIGINT.

It owns nothing but the loop; the decisions are in `timing`/`events`, the I/O in `feed` and
`launcher`, the memory in `state`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from scheduler.launcher import Outcome
from scheduler.state import Fire
from shipyard import clock
from shipyard.errors import ServerUnreachable
from shipyard.signals import Shutdown

__all__ = ["DEFAULT_POLL_S", "SchedulerService", "Steppable"]

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 5.0
"""How often triggers read the change feed (ClearML's trigger scheduler: every 3 minutes)."""
MIN_SLEEP_S = 0.05


class Steppable(Protocol):
    def step(self) -> list[tuple[Fire, Outcome]]: ...

    def next_wakeup(self) -> float | None: ...


class SchedulerService:
    def __init__(self, parts: Sequence[Steppable], *, poll_interval_s: float = DEFAULT_POLL_S,
                 shutdown: Shutdown | None = None):
        self.parts = list(parts)
        self.poll_interval_s = poll_interval_s
        self.shutdown = shutdown or Shutdown()

    def step(self) -> list[tuple[Fire, Outcome]]:
        """One tick of every part. An unreachable server only postpones the work."""
        done: list[tuple[Fire, Outcome]] = []
        for part in self.parts:
            try:
                done += part.step()
            except ServerUnreachable as exc:
                log.warning("Scheduler: server unreachable, retrying next tick: %s", exc)
        return done

    def run(self, *, once: bool = False) -> None:
        log.info("Scheduler: running (%d part(s), poll every %gs)", len(self.parts), self.poll_interval_s)
        while not self.shutdown.requested:
            self.step()
            if once:
                break
            self.shutdown.event.wait(self.sleep_for(clock.now()))
        log.info("Scheduler: stopped")

    def sleep_for(self, now: float) -> float:
        wakeups = [t for t in (part.next_wakeup() for part in self.parts) if t is not None]
        until_due = min(wakeups, default=now + self.poll_interval_s) - now
        return max(MIN_SLEEP_S, min(self.poll_interval_s, until_due))

"""What the daemon may run at once: slots.

* `SingleSlot` - one task at a time, from any queue (ClearML's default daemon).
* `ServiceSlots(n)` - up to n tasks at once from any queue (`--services-mode N`).
* `GpuSlots` - each queue asks for a number (or range) of GPUs; a task is claimed only when
  its GPUs are free, and every run holds a disjoint set (`--gpus 0-7 --queue quad=4 dual=2`).

The daemon asks `claimable(queues)` before claiming and `acquire(queue)` right after; since
only the daemon's main thread acquires, a queue that was claimable is still satisfiable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agent.poller import Queue


@dataclass
class Slot:
    name: str
    gpus: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    token: object = None   # the pool's own handle (e.g. a GPU allocation)


class SlotPool(Protocol):
    capacity: int

    def claimable(self, queues: list[Queue]) -> list[Queue]: ...

    def acquire(self, queue: Queue) -> Slot: ...

    def release(self, slot: Slot) -> None: ...


class ServiceSlots:
    """n interchangeable slots. SingleSlot is ServiceSlots(1)."""

    def __init__(self, n: int = 1, env: dict[str, str] | None = None):
        if n < 1:
            raise ValueError("need at least one slot")
        self.capacity = n
        self.env = dict(env or {})
        self._free = [f"slot{i}" for i in range(n)]

    def claimable(self, queues: list[Queue]) -> list[Queue]:
        return list(queues) if self._free else []

    def acquire(self, queue: Queue) -> Slot:
        return Slot(self._free.pop(0), env=dict(self.env))

    def release(self, slot: Slot) -> None:
        self._free.append(slot.name)


def SingleSlot(env: dict[str, str] | None = None) -> ServiceSlots:  # noqa: N802 - reads as a kind
    return ServiceSlots(1, env)

"""What the autoscaler needs from the task server: the `ControlPlane` interface.

Two implementations, side by side: `HttpControlPlane` (control_http.py) speaks the REST API of
a Shipyard server; `InMemoryControlPlane` (control_memory.py) is a small model of one, used
by the loop tests and the simulator.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass

from autoscaler.model import QueueState


@dataclass(frozen=True)
class WorkerView:
    id: str
    task: str | None
    last_seen: float            # epoch seconds of its last report


@dataclass(frozen=True)
class Credential:
    access_key: str
    secret_key: str
    expires: float              # epoch seconds


class ControlPlane(abc.ABC):
    @abc.abstractmethod
    def ensure_queues(self, names: Iterable[str]) -> None:
        """Create the configured queues that do not exist yet."""

    @abc.abstractmethod
    def queue_states(self, names: Iterable[str]) -> dict[str, QueueState]:
        """Depth and age of the oldest entry of each named queue."""

    @abc.abstractmethod
    def workers(self) -> dict[str, WorkerView]:
        """The workers the server lists, by id."""

    @abc.abstractmethod
    def held_task(self, worker: str) -> str | None:
        """The task `worker` holds, read fresh from the server: the one it reports, one it
        holds a lease on, or one in progress that names it as its last worker."""

    @abc.abstractmethod
    def requeue_held(self, worker: str, reason: str) -> list[str]:
        """Give back every task `worker` (gone) held: re-queued at the front of its queue."""

    @abc.abstractmethod
    def orphans(self, queues: Iterable[str]) -> list[str]:
        """Tasks `queued` for one of `queues` but in no queue: popped by a worker that went away
        before it could start them (the caller decides how long one must stay orphaned)."""

    @abc.abstractmethod
    def requeue(self, task: str, reason: str) -> None:
        """Put one task back at the front of its queue."""

    @abc.abstractmethod
    def mint(self, label: str, ttl_s: float) -> Credential:
        """A new short-lived key for the machine `label`."""

    @abc.abstractmethod
    def extend(self, access_key: str, ttl_s: float) -> float:
        """Push a key's expiry to now + ttl_s; returns the new expiry."""

    @abc.abstractmethod
    def revoke(self, access_key: str) -> None:
        """Refuse the key from now on (revoking a revoked or unknown key is not an error)."""

    @abc.abstractmethod
    def forget_worker(self, worker: str) -> None:
        """Remove a terminated machine's worker from the server's list."""

    def close(self) -> None:  # noqa: B027 - optional hook: a no-op unless the plane holds connections
        """Release connections."""

"""The values the policy reads and writes. Stdlib only, frozen, no I/O.

    Observation (queues, fleet, month spend, spot failures) --decide--> Decision (actions, holds)

Every action and every refusal carries a one-line reason meant for a person's log.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


class Market(str, Enum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


class Phase(str, Enum):
    """Where an instance is in its life, as the autoscaler sees it (see fleet.TRANSITIONS)."""

    BOOTING = "booting"    # launched; its agent has not registered with the server yet
    IDLE = "idle"          # its worker is registered and holds no task
    BUSY = "busy"          # its worker holds a task
    DRAINING = "draining"  # claim path closed (credential revoked, agent told to stop); ends soon


class Cause(str, Enum):
    """Why an instance is terminated; the loop treats each a little differently."""

    IDLE = "idle"                  # drained first, then terminated
    SPIN_UP = "spin-up"            # never registered: counts as a spot failure
    UNRESPONSIVE = "unresponsive"  # its agent stopped reporting
    BUDGET = "budget"              # the month's money is gone: everything stops


@dataclass(frozen=True)
class QueueState:
    name: str
    depth: int = 0
    oldest_wait_s: float = 0.0


@dataclass(frozen=True)
class Instance:
    """One machine of the fleet, as the policy sees it."""

    id: str
    resource: str
    queue: str                  # the queue it was started for (budgets are charged to it)
    market: Market
    price: float                # $/hour
    phase: Phase
    launched_at: float
    serves: tuple[str, ...] = ()  # the queues its agent listens on
    idle_since: float | None = None
    last_seen: float | None = None  # the worker's last report to the server


@dataclass(frozen=True)
class Observation:
    queues: Mapping[str, QueueState]
    fleet: tuple[Instance, ...] = ()
    month_spent: float = 0.0
    spot_failures: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # resource -> times


@dataclass(frozen=True)
class Launch:
    resource: str
    queue: str
    market: Market
    price: float
    reason: str

    def line(self) -> str:
        return f"launch {self.resource} ({self.market.value}, ${self.price:.2f}/h) for {self.queue}: {self.reason}"


@dataclass(frozen=True)
class Terminate:
    instance: str
    cause: Cause
    reason: str

    @property
    def drain(self) -> bool:
        """Idle machines are drained before they go; the others have nothing to finish."""
        return self.cause is Cause.IDLE

    def line(self) -> str:
        return f"terminate {self.instance}: {self.reason}"


@dataclass(frozen=True)
class Hold:
    """Something the policy wanted but refused, and why (budget, caps)."""

    subject: str
    reason: str

    def line(self) -> str:
        return f"hold {self.subject}: {self.reason}"


Action = Launch | Terminate


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...] = ()
    held: tuple[Hold, ...] = ()

    @property
    def launches(self) -> tuple[Launch, ...]:
        return tuple(a for a in self.actions if isinstance(a, Launch))

    @property
    def terminations(self) -> tuple[Terminate, ...]:
        return tuple(a for a in self.actions if isinstance(a, Terminate))

    def lines(self) -> list[str]:
        return [a.line() for a in self.actions] + [h.line() for h in self.held]

"""What the autoscaler remembers about each machine it started, and the legal phase changes.

    BOOTING ──► IDLE ◄──► BUSY
       │          │         │
       └──────────┴──► DRAINING ──► (terminated: the record is dropped)

Any phase may also end at once (spin-up timeout, preemption, budget stop). `change()` is the
only place a phase changes, and it refuses edges not in TRANSITIONS.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from autoscaler.model import Instance, Market, Phase

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.BOOTING: frozenset({Phase.IDLE, Phase.BUSY, Phase.DRAINING}),
    Phase.IDLE: frozenset({Phase.BUSY, Phase.DRAINING}),
    Phase.BUSY: frozenset({Phase.IDLE, Phase.DRAINING}),
    Phase.DRAINING: frozenset(),
}


class IllegalTransition(ValueError):
    pass


@dataclass
class InstanceRecord:
    id: str
    label: str                 # also the agent's worker id and the credential's label
    resource: str
    queue: str
    market: Market
    price: float
    launched_at: float
    serves: tuple[str, ...] = ()
    access_key: str = ""
    credential_expires: float = 0.0
    phase: Phase = Phase.BOOTING
    idle_since: float | None = None
    last_seen: float | None = None
    task: str | None = None
    drain_started: float | None = None
    accrued_until: float = 0.0

    @property
    def worker(self) -> str:
        return self.label

    def change(self, new: Phase) -> None:
        if new is self.phase:
            return
        if new not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"instance {self.id}: {self.phase.value} -> {new.value} is not allowed")
        self.phase = new

    def saw_worker(self, task: str | None, last_seen: float, now: float) -> None:
        """Fold one sighting of this machine's worker into the record."""
        self.last_seen = last_seen
        if self.phase is Phase.DRAINING:
            self.task = task
            return
        if task:
            self.change(Phase.BUSY)
            self.idle_since = None
        elif self.phase is not Phase.IDLE:
            self.change(Phase.IDLE)
            self.idle_since = now
        self.task = task

    def start_drain(self, now: float) -> None:
        self.change(Phase.DRAINING)
        self.drain_started = now

    def view(self) -> Instance:
        return Instance(id=self.id, resource=self.resource, queue=self.queue, market=self.market,
                        price=self.price, phase=self.phase, launched_at=self.launched_at, serves=self.serves,
                        idle_since=self.idle_since, last_seen=self.last_seen)

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(market=self.market.value, phase=self.phase.value, serves=list(self.serves))
        return data

    @classmethod
    def from_json(cls, data: dict) -> InstanceRecord:
        fields = dict(data)
        fields.update(market=Market(fields["market"]), phase=Phase(fields["phase"]),
                      serves=tuple(fields.get("serves") or ()))
        return cls(**fields)

"""An in-memory provider for tests and the simulator: machines boot after `boot_s`, the spot
market can be made to refuse, and any machine can be preempted. Time is `shipyard.clock`."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from autoscaler.model import Market
from autoscaler.provider import PENDING, RUNNING, TERMINATED, CapacityError, CloudProvider, InstanceInfo, LaunchRequest
from shipyard import clock


@dataclass
class FakeMachine:
    id: str
    request: LaunchRequest
    launched_at: float
    boot_s: float
    state: str = PENDING
    preempted: bool = False
    drained: bool = False
    ended_at: float | None = None

    @property
    def booted(self) -> bool:
        return self.state == RUNNING


@dataclass
class FakeProvider(CloudProvider):
    boot_s: Callable[[LaunchRequest], float] = lambda _request: 60.0
    refuse_spot: Callable[[LaunchRequest], bool] = lambda _request: False
    machines: dict[str, FakeMachine] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    name = "fake"

    def launch(self, request: LaunchRequest) -> InstanceInfo:
        if request.market is Market.SPOT and self.refuse_spot(request):
            raise CapacityError(f"no spot capacity for {request.resource.instance_type}")
        machine = FakeMachine(f"fake-{next(self._ids):04d}", request, clock.now(), self.boot_s(request))
        self.machines[machine.id] = machine
        return self._info(machine)

    def advance(self) -> list[FakeMachine]:
        """Move booting machines to running once their boot time passed; returns those."""
        now, booted = clock.now(), []
        for machine in self.machines.values():
            if machine.state == PENDING and now - machine.launched_at >= machine.boot_s:
                machine.state = RUNNING
                booted.append(machine)
        return booted

    def preempt(self, machine_id: str) -> None:
        machine = self.machines[machine_id]
        machine.state, machine.preempted, machine.ended_at = TERMINATED, True, clock.now()

    def describe(self) -> dict[str, InstanceInfo]:
        return {m.id: self._info(m) for m in self.machines.values()}

    def drain(self, instance_id: str) -> None:
        self.machines[instance_id].drained = True

    def terminate(self, instance_id: str) -> None:
        machine = self.machines.get(instance_id)
        if machine is not None and machine.state != TERMINATED:
            machine.state, machine.ended_at = TERMINATED, clock.now()

    def live(self) -> list[FakeMachine]:
        return [m for m in self.machines.values() if m.state != TERMINATED]

    @staticmethod
    def _info(machine: FakeMachine) -> InstanceInfo:
        return InstanceInfo(machine.id, machine.request.label, machine.state, machine.request.market,
                            preempted=machine.preempted, reason="spot interruption" if machine.preempted else "")

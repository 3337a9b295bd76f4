"""Fixtures for the autoscaler tests: the one patched clock, a small policy builder, and the
paired fake/in-memory world the loop runs against."""
from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from autoscaler.config import AutoscalerConfig, Budget, Policy, QueueRule, ResourceType
from autoscaler.control_memory import InMemoryControlPlane
from autoscaler.loop import Autoscaler, Hosts
from autoscaler.providers.fake import FakeProvider
from autoscaler.state import MemoryStateFile

T0 = 1_780_000_000.0  # 2026-05-28, mid-month


class Clock:
    def __init__(self, start: float = T0):
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture()
def clock(monkeypatch) -> Clock:
    """`shipyard.clock.now` (and monotonic) under the test's control."""
    fake = Clock()
    monkeypatch.setattr("shipyard.clock.now", fake.now)
    monkeypatch.setattr("shipyard.clock.monotonic", fake.now)
    return fake


def resource(name: str, price: float = 1.0, *, spot_price: float | None = None, warm: int = 0,
             queues: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(name=name, instance_type=f"{name}.large", price_on_demand=price, price_spot=spot_price,
                        spot=spot_price is not None, warm=warm, queues=queues, image_id="ami-test")


def make_policy(resources: list[ResourceType], queues: dict[str, list[tuple[str, int]]], **knobs) -> Policy:
    budget = knobs.pop("budget", Budget())
    res = {r.name: r for r in resources}
    res = {n: r if r.queues else replace(r, queues=tuple(q for q, rules in queues.items()
                                                           if any(x == n for x, _ in rules)) or ("default",))
           for n, r in res.items()}
    return Policy(resources=res, queues={q: tuple(QueueRule(r, m) for r, m in rules) for q, rules in queues.items()},
                  budget=budget, **knobs)


@dataclass
class World:
    """The loop wired to a fake provider and an in-memory server."""

    scaler: Autoscaler
    provider: FakeProvider
    server: InMemoryControlPlane
    clock: Clock
    lines: list[str]

    def boot_agents(self) -> None:
        """Machines whose boot time passed start their agent, which registers."""
        for machine in self.provider.advance():
            boot = machine.request.bootstrap
            self.server.register(boot.worker_id, boot.queues, boot.access_key)

    def step(self, seconds: float = 10.0):
        self.clock.advance(seconds)
        self.boot_agents()
        for worker in list(self.server.worker_docs):
            self.server.report(worker)
        return self.scaler.tick()


@pytest.fixture()
def world_factory(clock):
    def build(policy: Policy, **config) -> World:
        boot_s = config.pop("boot_s", 30.0)
        provider = FakeProvider(boot_s=lambda _r: boot_s)
        server = InMemoryControlPlane()
        lines: list[str] = []
        cfg = AutoscalerConfig(name="test", provider="fake", policy=policy, poll_s=10, drain_s=15,
                               orphan_grace_s=60, credential_ttl_s=3600, **config)
        scaler = Autoscaler(cfg, provider, server, MemoryStateFile(), Hosts("http://api", "http://files", "http://web"),
                            echo=lines.append)
        server.ensure_queues(scaler.queue_names())
        return World(scaler, provider, server, clock, lines)

    return build

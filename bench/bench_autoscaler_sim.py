"""A day of bursty work against the autoscaler, simulated: Shipyard's policy beside ClearML's.

The same seeded world runs under each controller: tasks arrive (a diurnal base rate plus
sweeps of dozens of tasks at once), machines boot in 1-5 minutes, spot machines are
preempted (4 % per hour) and the GPU spot market refuses every request for three hours,
spot prices drift under their configured ceiling. Shipyard's controller is the real thing
(autoscaler.loop.Autoscaler with its policy, ledger, drain and re-queue) over the in-memory
server and the fake provider, on a simulated clock; ClearML's is its published algorithm
(clearml/automation/auto_scaler.py: poll every 5 min, spin down after 15 min idle, stuck
after 30 min, instance counts as the only cap, no spot fallback, no re-queue of tasks on
reclaimed machines).

    python bench/bench_autoscaler_sim.py [--seed 7] [--hours 24]

Prints one row per controller and month: with $100 or only $25 of the month's budget left
(and Shipyard once with no caps at all, to show what the caps hold back): total cost, tasks
done (a preempted task ClearML never re-queues is never done), p50/p95 queue wait (enqueue to
the start of the run that finished), budget violations (seconds above the $/hour caps,
dollars over the month), peak $/h, launches, on-demand launches, preemptions, and the share
of the money spent on machines that were running a task.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoscaler.config import AutoscalerConfig, parse_config  # noqa: E402
from autoscaler.control_memory import IN_PROGRESS, InMemoryControlPlane  # noqa: E402
from autoscaler.loop import Autoscaler, Hosts  # noqa: E402
from autoscaler.model import Market  # noqa: E402
from autoscaler.provider import RUNNING, TERMINATED, AgentBootstrap, LaunchRequest  # noqa: E402
from autoscaler.providers.fake import FakeProvider  # noqa: E402
from autoscaler.state import MemoryStateFile  # noqa: E402

DAY0 = 1_782_864_000.0          # 2026-07-01 00:00 UTC
STEP_S = 10.0
AGENT_START_S = 20.0            # from "running" to the agent's registration
PREEMPT_PER_H = 0.04
DROUGHT_H = (13, 16)            # no GPU spot capacity in these hours (unless --no-drought)
MONTH_CAP = 3000.0
MONTH_SPENT = {"room": 2900.0, "tight": 2975.0}  # spent before the day: $100 left, or only $25

CONFIG = {
    "name": "sim", "provider": "local", "poll_s": 10, "idle_timeout_s": 300, "spinup_timeout_s": 900,
    "spot_fallback_after": 3, "spot_retry_after_s": 1800, "drain_s": 15, "orphan_grace_s": 60,
    "budget": {"max_per_hour": 8.0, "queues": {"gpu": 6.0}, "max_per_month": MONTH_CAP},
    "resources": {
        "gpu": {"instance_type": "g5.xlarge", "price_on_demand": 1.006, "price_spot": 0.45, "spot": True},
        "cpu": {"instance_type": "c6i.2xlarge", "price_on_demand": 0.34, "price_spot": 0.15, "spot": True},
    },
    "queues": {"gpu": [["gpu", 8]], "cpu": [["cpu", 12]]},
}


@dataclass
class Job:
    id: str
    queue: str
    arrives: float
    duration: float
    started: float | None = None
    ends: float | None = None
    done: bool = False


def workload(rng: random.Random, hours: float) -> list[Job]:
    """Diurnal Poisson arrivals plus sweeps (bursts of 10-40 tasks within two minutes)."""
    jobs: list[Job] = []
    spec = {"gpu": (4.0, 1200.0, 0.8), "cpu": (10.0, 300.0, 0.9)}  # per hour at peak, median s, sigma
    for queue, (peak, median, sigma) in spec.items():
        t = DAY0
        while t < DAY0 + hours * 3600:
            hour = (t - DAY0) / 3600 % 24
            rate = peak * (0.25 + 0.75 * max(0.0, math.sin(math.pi * (hour - 7) / 14)))
            t += rng.expovariate(rate / 3600)
            jobs.append(Job("", queue, t, min(4 * 3600, rng.lognormvariate(math.log(median), sigma))))
        for _ in range(3):
            start = DAY0 + rng.uniform(8, 20) * 3600
            for _ in range(rng.randint(10, 40)):
                jobs.append(Job("", queue, start + rng.uniform(0, 120),
                                min(4 * 3600, rng.lognormvariate(math.log(median), sigma))))
    jobs = sorted((j for j in jobs if j.arrives < DAY0 + hours * 3600), key=lambda j: j.arrives)
    for index, job in enumerate(jobs):
        job.id = f"{job.queue}-{index:04d}"
    return jobs


class Clock:
    def __init__(self) -> None:
        self.t = DAY0

    def now(self) -> float:
        return self.t


@dataclass
class Metrics:
    cost: float = 0.0
    busy_cost: float = 0.0
    over_hour_s: float = 0.0
    over_queue_s: float = 0.0
    preemptions: int = 0
    launches: int = 0
    on_demand: int = 0
    fallback_launches: int = 0
    max_rate: float = 0.0
    month_over: float = 0.0
    counted: set = field(default_factory=set)


class World:
    """Tasks, agents and prices: everything that is not the controller."""

    def __init__(self, seed: int, hours: float, clock: Clock, month_spent: float, drought: bool):
        self.rng = random.Random(seed)
        self.jobs = workload(random.Random(seed), hours)
        self.by_id = {j.id: j for j in self.jobs}
        self.clock, self.metrics = clock, Metrics()
        self.server = InMemoryControlPlane()
        self.provider = FakeProvider(boot_s=self._boot_s, refuse_spot=self._refuse_spot)
        self._next_job = 0
        self._agents_at: dict[str, float] = {}
        self.config = parse_config(CONFIG)
        self.month_spent, self.drought = month_spent, drought

    def _boot_s(self, request: LaunchRequest) -> float:
        return self.rng.uniform(120, 300) if request.resource.name == "gpu" else self.rng.uniform(60, 180)

    def _refuse_spot(self, request: LaunchRequest) -> bool:
        hour = (self.clock.t - DAY0) / 3600 % 24
        return self.drought and request.resource.name == "gpu" and DROUGHT_H[0] <= hour < DROUGHT_H[1]

    def spot_price(self, resource: str) -> float:
        ceiling = self.config.policy.resources[resource].price_spot or 0.0
        return ceiling * (0.8 + 0.2 * math.sin((self.clock.t - DAY0) / 7200.0) ** 2)

    def step(self) -> None:
        now = self.clock.t
        while self._next_job < len(self.jobs) and self.jobs[self._next_job].arrives <= now:
            job = self.jobs[self._next_job]
            self.server.enqueue(job.queue, job.id)
            self._next_job += 1
        for machine in self.provider.advance():
            self._agents_at[machine.id] = now + AGENT_START_S
        for machine in self.provider.live():
            due = self._agents_at.get(machine.id)
            if due is not None and due <= now:
                boot = machine.request.bootstrap
                self.server.register(boot.worker_id, boot.queues, boot.access_key)
                del self._agents_at[machine.id]
        self._run_agents(now)
        self._preempt()
        self._charge()

    def _run_agents(self, now: float) -> None:
        for worker in list(self.server.worker_docs.values()):
            self.server.report(worker.id)
            if worker.task and self.by_id[worker.task].ends <= now:
                job = self.by_id[worker.task]
                self.server.finish(worker.id)
                job.done = True
            if not worker.task:
                taken = self.server.claim(worker.id)
                if taken:
                    job = self.by_id[taken]
                    job.started, job.ends = now, now + job.duration

    def _preempt(self) -> None:
        for machine in self.provider.live():
            if machine.request.market is Market.SPOT and machine.state == RUNNING \
                    and self.rng.random() < PREEMPT_PER_H * STEP_S / 3600:
                self.provider.preempt(machine.id)
                self.server.drop_worker(machine.request.bootstrap.worker_id)
                self.metrics.preemptions += 1

    def _charge(self) -> None:
        m, budget = self.metrics, self.config.policy.budget
        rate, by_queue = 0.0, {}
        for machine in self.provider.machines.values():
            if machine.id not in m.counted:
                m.counted.add(machine.id)
                m.launches += 1
                m.on_demand += machine.request.market is Market.ON_DEMAND
            if machine.state == TERMINATED:
                continue
            res = machine.request.resource
            price = self.spot_price(res.name) if machine.request.market is Market.SPOT else res.price_on_demand
            rate += price
            by_queue[machine.request.queue] = by_queue.get(machine.request.queue, 0.0) + price
            worker = self.server.worker_docs.get(machine.request.bootstrap.worker_id)
            if worker is not None and worker.task:
                m.busy_cost += price * STEP_S / 3600
        m.cost += rate * STEP_S / 3600
        m.max_rate = max(m.max_rate, rate)
        m.over_hour_s += STEP_S if rate > budget.max_per_hour + 1e-9 else 0.0
        m.over_queue_s += STEP_S if any(r > budget.queue_max_per_hour.get(q, math.inf) + 1e-9
                                        for q, r in by_queue.items()) else 0.0
        m.month_over = max(m.month_over, self.month_spent + m.cost - budget.max_per_month)


class ClearmlController:
    """ClearML's AutoScaler.supervisor(), as published: poll, spin down idle, spin up by counts."""

    def __init__(self, world: World, poll_s: float = 300, idle_s: float = 900, stuck_s: float = 1800):
        self.world, self.poll_s, self.idle_s, self.stuck_s = world, poll_s, idle_s, stuck_s
        self.idle_since: dict[str, float] = {}
        self.next_poll = DAY0
        self._n = 0

    def maybe_tick(self, now: float) -> None:
        if now < self.next_poll:
            return
        self.next_poll = now + self.poll_s
        world, policy = self.world, self.world.config.policy
        workers = world.server.workers()
        machines = {m.request.bootstrap.worker_id: m for m in world.provider.live()}
        for label, machine in machines.items():
            view = workers.get(label)
            if view is None:
                if now - machine.launched_at > self.stuck_s:
                    world.provider.terminate(machine.id)
                continue
            if view.task:
                self.idle_since.pop(label, None)
            elif now - self.idle_since.setdefault(label, now) >= self.idle_s:
                world.provider.terminate(machine.id)
                world.server.forget_worker(label)
        states = world.server.queue_states(policy.queues)
        live = [m for m in world.provider.live()]
        for queue, rules in policy.queues.items():
            idle = sum(1 for m in live if queue in m.request.bootstrap.queues
                       and (w := workers.get(m.request.bootstrap.worker_id)) is not None and not w.task)
            spinning = sum(1 for m in live if queue in m.request.bootstrap.queues
                           and m.request.bootstrap.worker_id not in workers)
            needed = states[queue].depth - idle - spinning
            for rule in rules:
                running = sum(1 for m in live if m.request.resource.name == rule.resource)
                for _ in range(max(0, min(needed, rule.max_instances - running))):
                    self._launch(policy.resources[rule.resource], queue)
                    needed -= 1

    def _launch(self, resource, queue: str) -> None:
        self._n += 1
        label = f"clearml-{resource.name}-{self._n}"
        key = self.world.server.mint(label, 10 * 24 * 3600)  # ClearML: a long-lived key in user data
        market = Market.SPOT if resource.spot else Market.ON_DEMAND
        boot = AgentBootstrap(label, (queue,), "", "", "", key.access_key, key.secret_key)
        with contextlib.suppress(Exception):  # a refused spot request: ClearML logs it and retries next poll
            self.world.provider.launch(LaunchRequest(label, resource, queue, market, boot))


def simulate(controller: str, seed: int, hours: float, *, budget: bool = True, month: str = "room",
             drought: bool = True) -> dict:
    clock = Clock()
    world = World(seed, hours, clock, MONTH_SPENT[month], drought)
    label = controller
    with mock.patch("shipyard.clock.now", clock.now), mock.patch("shipyard.clock.monotonic", clock.now):
        if controller == "shipyard":
            config: AutoscalerConfig = world.config if budget else parse_config({**CONFIG, "budget": {}})
            label += (f", ${MONTH_CAP - MONTH_SPENT[month]:.0f} left this month" if budget else ", no caps")
            scaler = Autoscaler(config, world.provider, world.server, MemoryStateFile(), Hosts("", "", ""),
                                echo=lambda _line: None)
            scaler.state.ledger.month, scaler.state.ledger.spent = "2026-07", MONTH_SPENT[month]
            tick = scaler.tick
        else:
            label += f", ${MONTH_CAP - MONTH_SPENT[month]:.0f} left this month"
            clearml = ClearmlController(world)
            tick = lambda: clearml.maybe_tick(clock.t)  # noqa: E731
        end = DAY0 + hours * 3600
        while clock.t < end + 6 * 3600:
            world.step()
            tick()
            clock.t += STEP_S
            if clock.t > end and not world.provider.live() and all(
                    j.done or world.server.tasks[j.id].status == IN_PROGRESS for j in world.jobs):
                break
    m = world.metrics
    done = [j for j in world.jobs if j.done]
    return {"controller": label, "cost": m.cost, "done": len(done), "total": len(world.jobs),
            "waits": _waits(done), "gpu_waits": _waits([j for j in done if j.queue == "gpu"]),
            "over_hour_s": m.over_hour_s, "over_queue_s": m.over_queue_s, "month_over": max(0.0, m.month_over),
            "max_rate": m.max_rate, "launches": m.launches, "on_demand": m.on_demand, "preemptions": m.preemptions,
            "utilization": m.busy_cost / m.cost if m.cost else 0.0}


def _waits(jobs: list[Job]) -> tuple[float, float]:
    waits = sorted(j.started - j.arrives for j in jobs)
    if not waits:
        return float("nan"), float("nan")
    return statistics.median(waits), waits[int(0.95 * (len(waits) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--no-drought", action="store_true", help="GPU spot capacity all day")
    args = parser.parse_args()
    run = {"seed": args.seed, "hours": args.hours, "drought": not args.no_drought}
    rows = [simulate("shipyard", **run), simulate("shipyard", month="tight", **run),
            simulate("shipyard", budget=False, **run), simulate("clearml", **run),
            simulate("clearml", month="tight", **run)]
    budget = CONFIG["budget"]
    drought = f"no GPU spot {DROUGHT_H[0]}:00-{DROUGHT_H[1]}:00" if run["drought"] else "GPU spot all day"
    print(f"seed {args.seed}, {args.hours:g} h of arrivals ({rows[0]['total']} tasks), {drought}; caps "
          f"${budget['max_per_hour']}/h overall, gpu queue ${budget['queues']['gpu']}/h, ${MONTH_CAP:.0f}/month\n")
    print("| controller | cost | tasks done | wait p50 / p95 | gpu wait p50 / p95 | s over $/h caps (all, gpu) "
          "| $ over month | peak $/h | launches | on-demand | preempted | busy share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['controller']} | ${r['cost']:.2f} | {r['done']}/{r['total']} "
              f"| {r['waits'][0]:.0f} / {r['waits'][1]:.0f} s | {r['gpu_waits'][0]:.0f} / {r['gpu_waits'][1]:.0f} s "
              f"| {r['over_hour_s']:.0f}, {r['over_queue_s']:.0f} | ${r['month_over']:.2f} | ${r['max_rate']:.2f} "
              f"| {r['launches']} | {r['on_demand']} | {r['preemptions']} | {r['utilization']:.0%} |")


if __name__ == "__main__":
    main()

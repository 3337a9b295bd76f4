"""A day of a 5-person team on 8 GPUs, simulated: FIFO (today), fair share, fair share + packing.

The same seeded trace runs under each policy:

    alice   an HPO sweep of 30 one-GPU trials at 09:30 (30-60 min each), and a few tasks of her own
    bob     one task an hour from 09:00 to 18:00, 1-2 GPUs, 1-3 h
    carol   three 4-GPU trainings (2-4 h) through the day
    dave    short one-GPU debug runs (5-20 min) every 10-30 min from 10:00 to 17:00
    erin    an evening batch at 17:30: eight 2-GPU tasks of 1.5-2.5 h

Every task asks for whole GPUs (80 GB each). Each one-GPU task also has a measured peak memory
(lognormal, median 14 GB) and a compute use (15-70 % when small, 60-95 % when large); 70 % of
them have that measurement known before they run (a clone or trial of a measured parent: what
Shipyard's agents report), which is what packing needs.

Policies (the decisions are server/fairshare/policy.py's, the ones the server runs):

    fifo          queue order, first fit: an entry that fits the free GPUs starts (policy.fill
                  with no quota: every entity ranks alike, so queue order decides)
    fair          quotas alice 2, bob 2, carol 2, dave 1, erin 1 (borrowing on), half-life 2 h,
                  preemption (policy.choose_victims) with a 60 s grace; a preempted task loses the
                  progress since its last checkpoint (every 15 min) and goes back first in line
    fair+pack     fair, and a one-GPU task with a known measurement shares a GPU when its
                  measured peak + 10 % fits the memory left (best fit); tasks sharing a GPU slow
                  down when their compute use adds up past 100 %. A packed task counts as a whole
                  GPU against its user's quota, and only tasks alone on their GPUs are preempted

    python bench/bench_fairness.py [--seed 7] [--step 60]
    python bench/bench_fairness.py --pop 500     # the server's pop, FIFO vs fair share (below)

Reports, per policy: GPU compute utilisation (the compute the tasks used over 8 GPUs, from the
first arrival to the last completion), the share of GPU time allocated, each user's wait p50/p95
in minutes (time from arrival to completion beyond the task's own run time: queueing, preemption
losses, packing slowdown), and Jain's fairness index two ways:

    jain      of shares: at every minute where more GPUs are asked for than exist, each active
              user's GPUs held over its weighted max-min fair share of the 8 (weights: the team's
              quotas above, the same yardstick for every policy), capped at 1; Jain's index of
              those, averaged over the contended minutes. 1.0: everyone gets their share.
    jain-sd   of the users' mean 1/slowdown (run time / (completion - arrival)): 1.0 when every
              user's tasks are slowed alike, however much (FIFO slows everyone alike; fair share
              deliberately slows the user who floods the queue)
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.fairshare import policy  # noqa: E402
from server.fairshare.policy import Entry, Quota, Running, Standing, Usage  # noqa: E402

GPUS, GPU_MB = 8, 80_000
HOUR, MIN = 3600.0, 60.0
QUOTAS = {"alice": Quota(2), "bob": Quota(2), "carol": Quota(2), "dave": Quota(1), "erin": Quota(1)}
HALF_LIFE_S = 2 * HOUR
CHECKPOINT_S, GRACE_S, MARGIN = 15 * MIN, 60.0, 1.10


@dataclass
class Task:
    id: str
    user: str
    arrival: float
    service: float            # seconds at full speed
    gpus: int
    mem_mb: float             # measured peak (one-GPU tasks)
    util: float               # compute use, 0-1
    known: bool               # measurement known before it runs (packable)
    done: float = 0.0         # progress, seconds at full speed
    end: float | None = None
    preemptions: int = 0
    since_ckpt: float = 0.0


def _task(rng: random.Random, tid: str, user: str, at: float, service: float, gpus: int) -> Task:
    mem = min(78_000.0, max(2_000.0, rng.lognormvariate(math.log(14_000), 0.7))) if gpus == 1 else GPU_MB
    util = rng.uniform(0.15, 0.7) if mem < 30_000 else rng.uniform(0.6, 0.95)
    return Task(tid, user, at, service, gpus, mem, util, known=gpus == 1 and rng.random() < 0.7)


def trace(seed: int) -> list[Task]:
    rng = random.Random(seed)
    tasks: list[Task] = []

    def add(user: str, at: float, service: float, gpus: int) -> None:
        tasks.append(_task(rng, f"{user}-{len(tasks)}", user, at, service, gpus))

    for _ in range(30):
        add("alice", 9.5 * HOUR + rng.uniform(0, 60), rng.uniform(30, 60) * MIN, 1)
    for _ in range(3):
        add("alice", rng.uniform(11, 16) * HOUR, rng.uniform(0.5, 2) * HOUR, 1)
    for hour in range(9, 18):
        add("bob", (hour + rng.random()) * HOUR, rng.uniform(1, 3) * HOUR, rng.choice((1, 2)))
    for at in (8.5, 12, 15):
        add("carol", at * HOUR + rng.uniform(0, 1800), rng.uniform(2, 4) * HOUR, 4)
    at = 10 * HOUR
    while at < 17 * HOUR:
        add("dave", at, rng.uniform(5, 20) * MIN, 1)
        at += rng.uniform(10, 30) * MIN
    for _ in range(8):
        add("erin", 17.5 * HOUR + rng.uniform(0, 300), rng.uniform(1.5, 2.5) * HOUR, 2)
    return sorted(tasks, key=lambda t: t.arrival)


@dataclass
class Gpu:
    free_mb: float = GPU_MB
    tasks: list[str] = field(default_factory=list)


class Cluster:
    """Placement: whole GPUs, or (packing) a one-GPU task on any GPU whose memory left fits it."""

    def __init__(self, packing: bool):
        self.packing = packing
        self.gpus = [Gpu() for _ in range(GPUS)]
        self.where: dict[str, list[int]] = {}

    def packable(self, task: Task) -> bool:
        """Known, one GPU, and its peak plus the margin fits a GPU (else it takes a whole one)."""
        return self.packing and task.known and task.gpus == 1 and task.mem_mb * MARGIN <= GPU_MB

    def slots(self, task: Task) -> list[int] | None:
        if self.packable(task):
            fits = [i for i, g in enumerate(self.gpus) if g.free_mb >= task.mem_mb * MARGIN]
            return [min(fits, key=lambda i: self.gpus[i].free_mb)] if fits else None   # best fit
        whole = [i for i, g in enumerate(self.gpus) if not g.tasks]
        return whole[:task.gpus] if len(whole) >= task.gpus else None

    def place(self, task: Task, slots: list[int]) -> None:
        need = task.mem_mb * MARGIN if self.packable(task) else GPU_MB
        for i in slots:
            self.gpus[i].free_mb -= need
            self.gpus[i].tasks.append(task.id)
        self.where[task.id] = slots

    def remove(self, task: Task) -> None:
        need = task.mem_mb * MARGIN if self.packable(task) else GPU_MB
        for i in self.where.pop(task.id):
            self.gpus[i].free_mb += need
            self.gpus[i].tasks.remove(task.id)

    def alone(self, task_id: str) -> bool:
        return all(self.gpus[i].tasks == [task_id] for i in self.where[task_id])

    def whole_free(self) -> int:
        return sum(1 for g in self.gpus if not g.tasks)


class Sim:
    def __init__(self, tasks: list[Task], fair: bool, packing: bool):
        self.tasks = {t.id: t for t in tasks}
        self.arrivals = list(tasks)
        self.fair, self.cluster = fair, Cluster(packing)
        self.quotas = dict(QUOTAS) if fair else {}
        self.waiting: list[Entry] = []
        self.running: dict[str, float] = {}          # task -> start of this run
        self.usage = {u: Usage() for u in QUOTAS}
        self.compute = self.allocated = 0.0
        self.share_jain: list[float] = []   # Jain's index of the shares received, per contended step

    # -- scheduling ---------------------------------------------------------------------------
    def standings(self, now: float) -> dict[str, Standing]:
        out = {}
        for user in QUOTAS:
            held = sum(1 if self.cluster.packable(t) else t.gpus for t in self._running_tasks() if t.user == user)
            quota = self.quotas.get(user, policy.NO_QUOTA)
            out[user] = Standing(quota.gpus, held, policy.usage_now(self.usage[user], now, HALF_LIFE_S),
                                 float(quota.gpus or 1))
        return out

    def _running_tasks(self) -> list[Task]:
        return [self.tasks[t] for t in self.running]

    def start_what_fits(self, now: float) -> None:
        while True:
            offered = [(i, e) for i, e in enumerate(self.waiting) if self.cluster.slots(self.tasks[e.task])]
            if not offered:
                return
            if self.fair:
                index = policy.pick([e for _, e in offered], self.standings(now), self.quotas)
                if index is None:
                    return
            else:
                index = 0   # FIFO, first fit
            entry = self.waiting.pop(offered[index][0])
            task = self.tasks[entry.task]
            self.cluster.place(task, self.cluster.slots(task) or [])
            self.running[task.id] = now
            self.usage[task.user] = policy.started(self.usage[task.user], task.gpus, now)

    def preempt(self, now: float) -> None:
        held = self.standings(now)
        for user, quota in self.quotas.items():
            heads = [e for e in self.waiting if e.entity == user]
            if not heads or held[user].running >= quota.gpus or self.cluster.slots(self.tasks[heads[0].task]):
                continue
            claims = [Running(t.id, t.user, t.gpus, self.running[t.id]) for t in self._running_tasks()
                      if self.cluster.alone(t.id)]
            for victim in policy.choose_victims(user, heads[0].gpus, self.cluster.whole_free(), claims, self.quotas):
                self.stop(self.tasks[victim.task], now, preempted=True)
            held = self.standings(now)

    def stop(self, task: Task, now: float, preempted: bool = False) -> None:
        self.cluster.remove(task)
        start = self.running.pop(task.id)
        self.usage[task.user] = policy.ended(self.usage[task.user], task.gpus, start, now, HALF_LIFE_S)
        if preempted:
            task.preemptions += 1
            task.done = max(0.0, task.done - task.since_ckpt - GRACE_S)
            task.since_ckpt = 0.0
            self.waiting.insert(0, Entry(task.id, task.user, task.gpus, pinned=True))
        else:
            task.end = now

    # -- time ------------------------------------------------------------------------------
    def advance(self, now: float, step: float) -> bool:
        changed = False
        for gpu in self.cluster.gpus:
            load = sum(self.tasks[t].util for t in gpu.tasks)
            speed = min(1.0, 1.0 / load) if load > 0 else 1.0
            for task_id in gpu.tasks:
                task = self.tasks[task_id]
                share = 1.0 / task.gpus
                task.done += step * speed * share
                task.since_ckpt = (task.since_ckpt + step * speed * share) % CHECKPOINT_S
                self.compute += step * speed * task.util
            self.allocated += step if gpu.tasks else 0.0
        for task in self._running_tasks():
            if task.done >= task.service - 1e-6:
                self.stop(task, now)
                changed = True
        return changed

    def sample_shares(self) -> None:
        """At a step where more GPUs are asked for than exist: each active user's GPUs held (as
        requested) over its weighted max-min fair share of the 8 (weights: the team's quotas, the
        same yardstick for every policy), capped at 1; Jain's index of those."""
        demand = {u: 0 for u in QUOTAS}
        held = {u: 0 for u in QUOTAS}
        for entry in self.waiting:
            demand[entry.entity] += entry.gpus
        for task in self._running_tasks():
            demand[task.user] += task.gpus
            held[task.user] += task.gpus
        if sum(demand.values()) <= GPUS:
            return
        fair = water_fill(demand, {u: float(q.gpus) for u, q in QUOTAS.items()}, GPUS)
        shares = [min(1.0, held[u] / fair[u]) for u in QUOTAS if demand[u] and fair[u] > 0]
        self.share_jain.append(jain(shares))

    def run(self, step: float) -> float:
        now = 0.0
        while self.arrivals or self.waiting or self.running:
            self.sample_shares()
            changed = self.advance(now, step) if self.running else False
            while self.arrivals and self.arrivals[0].arrival <= now:
                task = self.arrivals.pop(0)
                self.waiting.append(Entry(task.id, task.user, task.gpus, preemptible=True))
                changed = True
            if changed:
                if self.fair:
                    self.preempt(now)
                self.start_what_fits(now)
            now += step
            if now > 7 * 24 * HOUR:
                raise RuntimeError(f"not done after a week: {[e.task for e in self.waiting]} can never start")
        return now


def water_fill(demand: dict[str, int], weight: dict[str, float], capacity: float) -> dict[str, float]:
    """Weighted max-min fair shares: capacity split by weight, no user above its demand."""
    fair = {u: 0.0 for u in demand}
    active = {u for u, d in demand.items() if d > 0}
    left = float(capacity)
    while active and left > 1e-9:
        total = sum(weight[u] for u in active)
        give = {u: left * weight[u] / total for u in active}
        left = 0.0
        for user in list(active):
            room = demand[user] - fair[user]
            if give[user] >= room:
                fair[user] = float(demand[user])
                left += give[user] - room
                active.discard(user)
            else:
                fair[user] += give[user]
    return fair


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if values else 1.0


def report(name: str, sim: Sim) -> dict:
    tasks = list(sim.tasks.values())
    first = min(t.arrival for t in tasks)
    last = max(t.end or 0.0 for t in tasks)
    span = GPUS * (last - first)
    per_user: dict[str, dict] = {}
    for user in QUOTAS:
        mine = [t for t in tasks if t.user == user]
        waits = [((t.end or 0.0) - t.arrival - t.service) / MIN for t in mine]
        per_user[user] = {"p50": _p(waits, 0.5), "p95": _p(waits, 0.95),
                          "speed": statistics.mean(t.service / ((t.end or 0.0) - t.arrival) for t in mine)}
    return {"name": name, "util": sim.compute / span, "alloc": sim.allocated / span, "users": per_user,
            "jain": statistics.mean(sim.share_jain) if sim.share_jain else 1.0,
            "jain_slowdown": jain([u["speed"] for u in per_user.values()]),
            "preemptions": sum(t.preemptions for t in tasks), "makespan_h": (last - first) / HOUR}


def pop_latency(tasks: int) -> None:
    """A real server (SQLite), `tasks` queued by 5 users (tasks of the admin key: the users are
    projects with quotas, so a task's entity is its project), then every task claimed with a lease
    and ended; p50/p99 of queues.get_next_task, with no quota (the FIFO pop) and with quotas (the
    fair pop: a window of 64 entries, the usage rows, the delete)."""
    import tempfile

    from tests.helpers import start_server

    for label, quotas in (("fifo (no quota)", None), ("fair share (5 quotas)", True)):
        with tempfile.TemporaryDirectory() as tmp:
            server = start_server(Path(tmp) / "srv")
            try:
                api = server.api()
                projects = [api.call("projects.create", {"name": f"p{i}"})["id"] for i in range(5)]
                if quotas:
                    for i, project in enumerate(projects):
                        api.call("quotas.set", {"project": project, "gpus": 1 + i % 2})
                queue = api.call("queues.create", {"name": "pop"})["id"]
                for n in range(tasks):
                    task = api.call("tasks.create", {"name": f"t{n}", "type": "training",
                                                     "project": projects[n % 5]})["id"]
                    api.call("tasks.enqueue", {"task": task, "queue": queue})
                lat = []
                while True:
                    t0 = time.perf_counter()
                    got = api.call("queues.get_next_task", {"queue": queue, "lease_s": 600, "worker": "w"})
                    lat.append(time.perf_counter() - t0)
                    if not got:
                        break
                    entry = got["entry"]["task"]
                    api.call("tasks.started", {"task": entry, "attempt": got["lease"]["attempt"]})
                    api.call("tasks.completed", {"task": entry, "attempt": got["lease"]["attempt"]})
                lat.sort()
                print(f"{label:24} get_next_task over {tasks} queued: p50 {_p(lat, 0.5) * 1000:.1f} ms, "
                      f"p99 {_p(lat, 0.99) * 1000:.1f} ms (n={len(lat)})")
            finally:
                server.stop()


def compare(seed: int, step: float) -> list[dict]:
    rows = []
    for name, fair, packing in (("fifo", False, False), ("fair", True, False), ("fair+pack", True, True)):
        sim = Sim(trace(seed), fair, packing)
        sim.run(step)
        rows.append(report(name, sim))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--step", type=float, default=60.0, help="simulation step, seconds")
    parser.add_argument("--pop", type=int, default=0, metavar="N",
                        help="measure the server's pop over N queued tasks instead (FIFO vs fair share)")
    args = parser.parse_args(argv)
    if args.pop:
        pop_latency(args.pop)
        return 0
    rows = compare(args.seed, args.step)
    print(f"seed {args.seed}: {len(trace(args.seed))} tasks, {GPUS} GPUs, step {args.step:g}s")
    print(f"{'policy':10} {'util':>6} {'alloc':>6} {'jain':>6} {'jain-sd':>7} {'preempt':>8} {'span h':>7}  "
          + "  ".join(f"{u + ' p50/p95 min':>22}" for u in QUOTAS))
    for row in rows:
        waits = "  ".join(f"{row['users'][u]['p50']:>10.0f} / {row['users'][u]['p95']:>9.0f}" for u in QUOTAS)
        print(f"{row['name']:10} {row['util']:6.1%} {row['alloc']:6.1%} {row['jain']:6.3f} {row['jain_slowdown']:7.3f} "
              f"{row['preemptions']:8d} "
              f"{row['makespan_h']:7.1f}  {waits}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

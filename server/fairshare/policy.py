"""Fair-share decisions, pure: no database, no I/O; the time comes in as an argument (callers ask
shipyard.clock, tests pass their own).

    Quota            an entity's guaranteed GPUs and whether it may borrow idle GPUs beyond them
    Usage            an entity's GPU-seconds, decayed (half-life) to `as_of`, plus what runs now
    decayed          value after `elapsed` seconds of exponential decay
    usage_now        an entity's usage at `now`: the decayed past plus its running claims so far
    started/ended    a claim starts / ends: the Usage that follows (the server stores it, updated
                     on claim and on end, so the hot pop path never reads task history)
    Standing         what ordering needs to know of one entity: guarantee, running GPUs, usage, share
    rank             the order key of an entity: below its guarantee first (furthest below first),
                     then the lowest usage per share (Slurm's multifactor fair-share, 2^(-U/S),
                     without the other factors)
    Entry            a queue entry as the picker sees it (task, entity, GPUs, pinned, preemptible)
    pick             which entry of one queue a worker gets: entities below their guarantee first
                     (furthest below first), then pinned entries (put back at the front by the
                     server: re-queued, preempted) in queue order, then the rest by rank; each
                     entity's own entries keep their queue order; an entry that may not borrow
                     is skipped
    may_run          the borrowing rule: within the guarantee always; beyond it only when the
                     entity may borrow and the task is preemptible
    Running          a claim that holds GPUs now (for victim choice)
    choose_victims   the claims to preempt so that a claimant below its guarantee gets `need` GPUs:
                     from the borrower furthest above its share, newest started first, never a
                     non-preemptible one, never taking a borrower below its own guarantee; none at
                     all when they would not free enough
    fill             the entries that start on `free` GPUs, one `pick` after another (the model
                     that the tests and bench/bench_fairness.py run; the server pops one at a time)

An *entity* is "user:<id>" or "project:<id>" (a task counts against its project's quota when that
project has one, else its user's; see server/fairshare/usage.py). Entities without a quota have a
guarantee of 0, may borrow, and weigh `default_share` in the usage-per-share order.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

__all__ = ["Entry", "Quota", "Running", "Standing", "Usage", "choose_victims", "decayed", "ended", "fill", "may_run",
           "pick", "rank", "started", "usage_now"]


@dataclass(frozen=True)
class Quota:
    gpus: int = 0          # guaranteed GPUs
    borrow: bool = True    # may use idle GPUs beyond the guarantee (preemptible there)


NO_QUOTA = Quota()


@dataclass(frozen=True)
class Usage:
    gpu_seconds: float = 0.0      # ended claims, decayed to as_of
    as_of: float = 0.0
    running_gpus: int = 0         # GPUs of the claims running now
    running_start: float = 0.0    # sum of gpus * start over the running claims


def decayed(value: float, elapsed: float, half_life_s: float) -> float:
    if half_life_s <= 0 or elapsed <= 0:
        return value
    return value * 0.5 ** (elapsed / half_life_s)


def usage_now(usage: Usage, now: float, half_life_s: float) -> float:
    """GPU-seconds at `now`: the decayed past plus the running claims' GPU-seconds so far."""
    running = usage.running_gpus * now - usage.running_start
    return decayed(usage.gpu_seconds, now - usage.as_of, half_life_s) + max(0.0, running)


def started(usage: Usage, gpus: int, at: float) -> Usage:
    return replace(usage, running_gpus=usage.running_gpus + gpus, running_start=usage.running_start + gpus * at)


def ended(usage: Usage, gpus: int, start: float, end: float, half_life_s: float) -> Usage:
    """A claim of `gpus` from `start` ended at `end`: its GPU-seconds join the decayed past."""
    past = decayed(usage.gpu_seconds, end - usage.as_of, half_life_s) if usage.as_of else usage.gpu_seconds
    gpus_left = max(0, usage.running_gpus - gpus)
    return Usage(gpu_seconds=past + gpus * max(0.0, end - start), as_of=end, running_gpus=gpus_left,
                 running_start=usage.running_start - gpus * start if gpus_left else 0.0)


@dataclass(frozen=True)
class Standing:
    guarantee: int = 0
    running: int = 0
    usage: float = 0.0     # GPU-seconds now (usage_now)
    share: float = 1.0     # weight: the guarantee, or default_share without one


def rank(standing: Standing, total_usage: float, total_share: float) -> tuple[int, float]:
    """Smaller goes first. Tier 0: running below the guarantee (the furthest below, as a fraction
    of the guarantee, first). Tier 1: usage per share, both as fractions of their totals."""
    if standing.running < standing.guarantee:
        return 0, standing.running / standing.guarantee
    used = standing.usage / total_usage if total_usage > 0 else 0.0
    share = standing.share / total_share if total_share > 0 else 1.0
    return 1, used / share if share > 0 else float("inf")


@dataclass(frozen=True)
class Entry:
    task: str
    entity: str
    gpus: int = 1
    pinned: bool = False       # put back at the front by the server: keeps its place
    preemptible: bool = True


def may_run(entry: Entry, quota: Quota, running: int) -> bool:
    """Within the guarantee always; beyond it (borrowed GPUs) only a preemptible task of an
    entity that may borrow."""
    if running + entry.gpus <= quota.gpus:
        return True
    return quota.borrow and entry.preemptible


def _totals(standings: Mapping[str, Standing]) -> tuple[float, float]:
    return sum(s.usage for s in standings.values()), sum(s.share for s in standings.values())


def pick(entries: Sequence[Entry], standings: Mapping[str, Standing], quotas: Mapping[str, Quota]) -> int | None:
    """The index of the entry to hand out next, or None when every entry has to wait."""
    total_usage, total_share = _totals(standings)

    def key(index: int) -> tuple[int, int, float, int]:
        entry = entries[index]
        standing = standings.get(entry.entity, Standing())
        tier, order = rank(standing, total_usage, total_share)
        if tier == 0:            # below its guarantee: before everything else
            return 0, 0, order, index
        return (1, 0, 0.0, index) if entry.pinned else (1, 1, order, index)

    for index in sorted(range(len(entries)), key=key):
        entry = entries[index]
        if may_run(entry, quotas.get(entry.entity, NO_QUOTA), standings.get(entry.entity, Standing()).running):
            return index
    return None


@dataclass(frozen=True)
class Running:
    task: str
    entity: str
    gpus: int
    started: float
    preemptible: bool = True
    preempting: bool = False   # already asked to preempt: its GPUs are on their way back


def _excess(running: Iterable[Running], quotas: Mapping[str, Quota]) -> dict[str, int]:
    held: dict[str, int] = {}
    for claim in running:
        held[claim.entity] = held.get(claim.entity, 0) + claim.gpus
    return {entity: gpus - quotas.get(entity, NO_QUOTA).gpus for entity, gpus in held.items()}


def choose_victims(claimant: str, need: int, free: int, running: Sequence[Running],
                   quotas: Mapping[str, Quota], usage: Mapping[str, float] | None = None) -> list[Running]:
    """The claims to preempt so that `claimant` (below its guarantee, with a task needing `need`
    GPUs) can run; [] when it is not entitled, when enough is free or on its way, or when the
    borrowers cannot free enough without going below their own guarantees."""
    usage = usage or {}
    excess = _excess((c for c in running if not c.preempting), quotas)
    guarantee = quotas.get(claimant, NO_QUOTA).gpus
    held = excess.get(claimant, -guarantee) + guarantee
    if guarantee - held < need:
        return []
    missing = need - free - sum(c.gpus for c in running if c.preempting)
    pool = [c for c in running if c.entity != claimant and c.preemptible and not c.preempting]
    victims: list[Running] = []
    while missing > 0:
        fits = [c for c in pool if c.gpus <= excess.get(c.entity, 0)]
        if not fits:
            return []
        claim = min(fits, key=lambda c: (-excess[c.entity], -usage.get(c.entity, 0.0), -c.started, c.task))
        pool.remove(claim)
        victims.append(claim)
        excess[claim.entity] -= claim.gpus
        missing -= claim.gpus
    return victims


def fill(entries: Sequence[Entry], standings: Mapping[str, Standing], quotas: Mapping[str, Quota],
         free: int) -> list[int]:
    """The entries that start now on `free` GPUs, in the order `pick` hands them out (only entries
    that fit what is still free are offered; each start counts in its entity's running GPUs)."""
    current = dict(standings)
    chosen: list[int] = []
    while True:
        offered = [i for i, e in enumerate(entries) if i not in chosen and e.gpus <= free]
        index = pick([entries[i] for i in offered], current, quotas)
        if index is None:
            return chosen
        entry = entries[offered[index]]
        chosen.append(offered[index])
        free -= entry.gpus
        before = current.get(entry.entity, Standing(guarantee=quotas.get(entry.entity, NO_QUOTA).gpus))
        current[entry.entity] = replace(before, running=before.running + entry.gpus)

"""The fair-share decisions (server/fairshare/policy.py), as tables and as properties.

Tables: decay and usage, the rank, `pick` (guarantee first, pinned entries, borrowing rules) and
`choose_victims` (furthest above share, newest first, never non-preemptible, never below a
borrower's own guarantee, nothing when it would not free enough). Properties (hypothesis) run a
small model of the server - fill free GPUs with `fill`, then preempt for a waiting guarantee with
`choose_victims`, until nothing changes: no GPU is ever over-committed, and no entity below its
guarantee waits while another is above its own.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.fairshare.policy import (
    Entry,
    Quota,
    Running,
    Standing,
    Usage,
    choose_victims,
    decayed,
    ended,
    fill,
    may_run,
    pick,
    rank,
    started,
    usage_now,
)

HOUR = 3600.0


@pytest.mark.parametrize("value, elapsed, half_life, expected", [
    (100.0, 0.0, HOUR, 100.0),
    (100.0, HOUR, HOUR, 50.0),
    (100.0, 2 * HOUR, HOUR, 25.0),
    (100.0, 5 * HOUR, 0.0, 100.0),     # no half-life: no decay
    (100.0, -5.0, HOUR, 100.0),        # a clock that went back does not inflate usage
])
def test_decay(value, elapsed, half_life, expected):
    assert decayed(value, elapsed, half_life) == pytest.approx(expected)


def test_usage_counts_running_claims_and_decays_ended_ones():
    usage = started(Usage(as_of=0.0), gpus=2, at=1000.0)
    assert usage_now(usage, 1000.0 + HOUR, HOUR) == pytest.approx(2 * HOUR)   # running: not decayed yet
    usage = ended(usage, gpus=2, start=1000.0, end=1000.0 + HOUR, half_life_s=HOUR)
    assert usage.running_gpus == 0 and usage.gpu_seconds == pytest.approx(2 * HOUR)
    assert usage_now(usage, 1000.0 + 2 * HOUR, HOUR) == pytest.approx(HOUR)   # one half-life later


def test_two_running_claims_end_one_at_a_time():
    usage = started(started(Usage(as_of=0.0), 1, 100.0), 3, 200.0)
    assert usage_now(usage, 300.0, 0.0) == pytest.approx(1 * 200 + 3 * 100)
    usage = ended(usage, 1, 100.0, 300.0, 0.0)
    assert (usage.running_gpus, usage_now(usage, 400.0, 0.0)) == (3, pytest.approx(200 + 3 * 200))


@pytest.mark.parametrize("standing, expected", [
    (Standing(guarantee=4, running=1), (0, 0.25)),
    (Standing(guarantee=4, running=0), (0, 0.0)),
    (Standing(guarantee=4, running=4, usage=50.0, share=4.0), (1, (50 / 100) / (4 / 8))),
    (Standing(guarantee=0, running=0, usage=0.0, share=1.0), (1, 0.0)),
])
def test_rank(standing, expected):
    tier, value = rank(standing, total_usage=100.0, total_share=8.0)
    assert (tier, value) == (expected[0], pytest.approx(expected[1]))


A, B, C = "user:a", "user:b", "user:c"


@pytest.mark.parametrize("entries, standings, quotas, expected", [
    # below its guarantee goes before a queue full of another user's tasks
    ([Entry("b1", B), Entry("b2", B), Entry("a1", A)],
     {A: Standing(2, 0, 0.0, 2.0), B: Standing(0, 6, 9.0, 1.0)}, {A: Quota(2)}, 2),
    # among users at or above their guarantee, the least usage per share first
    ([Entry("b1", B), Entry("c1", C)],
     {B: Standing(0, 1, 100.0, 1.0), C: Standing(0, 1, 10.0, 1.0)}, {A: Quota(2)}, 1),
    # the same usage, twice the share: goes first
    ([Entry("b1", B), Entry("a1", A)],
     {A: Standing(1, 1, 50.0, 2.0), B: Standing(0, 0, 50.0, 1.0)}, {A: Quota(1)}, 1),
    # an entry the server put back at the front keeps its place ahead of the fair-share order
    ([Entry("c1", C), Entry("b1", B, pinned=True)],
     {B: Standing(0, 3, 900.0, 1.0), C: Standing(0, 0, 0.0, 1.0)}, {A: Quota(1)}, 1),
    # ... but not ahead of a guarantee that is waiting
    ([Entry("b1", B, pinned=True), Entry("a1", A)],
     {A: Standing(1, 0, 0.0, 1.0), B: Standing(0, 3, 900.0, 1.0)}, {A: Quota(1)}, 1),
    # a user that may not borrow waits once its guarantee is in use
    ([Entry("a1", A), Entry("b1", B)],
     {A: Standing(1, 1, 0.0, 1.0), B: Standing(0, 0, 500.0, 1.0)}, {A: Quota(1, borrow=False)}, 1),
    # a non-preemptible task never runs on borrowed GPUs
    ([Entry("b1", B, preemptible=False), Entry("b2", B)],
     {B: Standing(0, 0, 0.0, 1.0)}, {A: Quota(1)}, 1),
    # ... and is within a guarantee like any other
    ([Entry("a1", A, preemptible=False)], {A: Standing(1, 0, 0.0, 1.0)}, {A: Quota(1)}, 0),
    # nothing may run
    ([Entry("b1", B, preemptible=False)], {B: Standing(0, 0, 0.0, 1.0)}, {A: Quota(1)}, None),
    # each user's own entries keep their queue order
    ([Entry("a1", A), Entry("b1", B), Entry("a2", A)],
     {A: Standing(0, 0, 10.0, 1.0), B: Standing(0, 0, 20.0, 1.0)}, {C: Quota(1)}, 0),
])
def test_pick(entries, standings, quotas, expected):
    assert pick(entries, standings, quotas) == expected


@pytest.mark.parametrize("entry, quota, running, expected", [
    (Entry("t", A, 2), Quota(2), 0, True),
    (Entry("t", A, 2), Quota(2), 1, True),            # borrows one: allowed by default
    (Entry("t", A, 2), Quota(2, borrow=False), 1, False),
    (Entry("t", A, 1, preemptible=False), Quota(2), 2, False),
    (Entry("t", A, 1, preemptible=False), Quota(0), 0, False),
])
def test_may_run(entry, quota, running, expected):
    assert may_run(entry, quota, running) is expected


def _victims(*args, **kw) -> list[str]:
    return [v.task for v in choose_victims(*args, **kw)]


def test_victims_newest_first_from_the_furthest_above_share():
    running = [Running("b-old", B, 1, 10.0), Running("b-new", B, 1, 50.0), Running("b-mid", B, 1, 30.0),
               Running("c1", C, 1, 60.0)]
    quotas = {A: Quota(2), C: Quota(0)}
    assert _victims(A, 2, 0, running, quotas) == ["b-new", "b-mid"]


def test_victims_spread_as_the_excess_shrinks():
    running = [Running("b1", B, 1, 10.0), Running("b2", B, 1, 20.0), Running("c1", C, 1, 30.0)]
    quotas = {A: Quota(2), B: Quota(1)}   # B borrows 1, C borrows 1
    assert sorted(_victims(A, 2, 0, running, quotas)) == ["b2", "c1"]


@pytest.mark.parametrize("need, free, running, quotas, expected", [
    (1, 1, [Running("b1", B, 1, 1.0)], {A: Quota(1)}, []),                 # a GPU is free already
    (1, 0, [Running("b1", B, 1, 1.0, preemptible=False)], {A: Quota(1)}, []),  # never non-preemptible
    (1, 0, [Running("b1", B, 1, 1.0)], {A: Quota(1), B: Quota(1)}, []),   # B is within its guarantee
    (2, 0, [Running("b1", B, 2, 1.0)], {A: Quota(2), B: Quota(1)}, []),   # would take B below its own
    (2, 0, [Running("a1", A, 1, 1.0), Running("b1", B, 1, 1.0)], {A: Quota(2)}, []),  # A is entitled to 1
    (1, 0, [Running("b1", B, 1, 1.0, preempting=True), Running("b2", B, 1, 2.0)], {A: Quota(1)}, []),
    (2, 0, [Running("b1", B, 1, 1.0)], {A: Quota(2)}, []),                # cannot free enough: none
    (2, 1, [Running("b1", B, 1, 1.0), Running("b2", B, 1, 2.0)], {A: Quota(2)}, ["b2"]),
])
def test_victims_table(need, free, running, quotas, expected):
    assert _victims(A, need, free, running, quotas) == expected


# -- properties --------------------------------------------------------------------------------


def _standings(running: list[Running], quotas: dict[str, Quota]) -> dict[str, Standing]:
    out = {e: Standing(guarantee=q.gpus, share=float(q.gpus or 1)) for e, q in quotas.items()}
    for claim in running:
        before = out.get(claim.entity, Standing())
        out[claim.entity] = Standing(before.guarantee, before.running + claim.gpus, before.usage, before.share)
    return out


def _preempt_once(capacity, quotas, running, waiting) -> bool:
    free = capacity - sum(c.gpus for c in running)
    held = _standings(running, quotas)
    for entity, quota in quotas.items():
        heads = [e for e in waiting if e.entity == entity]
        if not heads or held.get(entity, Standing()).running >= quota.gpus:
            continue
        victims = choose_victims(entity, heads[0].gpus, free, running, quotas)
        for victim in victims:
            running.remove(victim)
            waiting.insert(0, Entry(victim.task, victim.entity, victim.gpus, pinned=True))
        if victims:
            return True
    return False


def _settle(capacity: int, quotas: dict[str, Quota], waiting: list[Entry]) -> tuple[list[Running], list[Entry]]:
    running: list[Running] = []
    for step in range(200):
        free = capacity - sum(c.gpus for c in running)
        chosen = fill(waiting, _standings(running, quotas), quotas, free)
        for index in chosen:
            entry = waiting[index]
            running.append(Running(entry.task, entry.entity, entry.gpus, float(step), entry.preemptible))
        waiting = [e for i, e in enumerate(waiting) if i not in chosen]
        assert sum(c.gpus for c in running) <= capacity   # never over-committed
        if not _preempt_once(capacity, quotas, running, waiting) and not chosen:
            return running, waiting
    raise AssertionError("the model did not settle")


USERS = ["user:a", "user:b", "user:c", "user:d"]


@st.composite
def scenarios(draw, max_gpus: int = 1):
    capacity = draw(st.integers(1, 8))
    guarantees = draw(st.lists(st.integers(0, 3), min_size=len(USERS), max_size=len(USERS)))
    quotas, left = {}, capacity
    for user, gpus, borrow in zip(USERS, guarantees, draw(st.lists(st.booleans(), min_size=4, max_size=4)), strict=True):
        take = min(gpus, left)
        left -= take
        quotas[user] = Quota(take, borrow)
    tasks = draw(st.lists(st.tuples(st.sampled_from(USERS), st.integers(1, max_gpus), st.booleans()),
                          max_size=24))
    waiting = [Entry(f"t{i}", user, gpus, preemptible=not fixed) for i, (user, gpus, fixed) in enumerate(tasks)]
    return capacity, quotas, waiting


@settings(max_examples=100, deadline=None)
@given(scenarios(max_gpus=3))
def test_never_over_committed(scenario):
    capacity, quotas, waiting = scenario
    running, _ = _settle(capacity, quotas, waiting)
    assert sum(c.gpus for c in running) <= capacity
    for claim in running:   # borrowed GPUs only for tasks that may be preempted, of users that may borrow
        if not claim.preemptible:
            held = sum(c.gpus for c in running if c.entity == claim.entity and not c.preemptible)
            assert held <= quotas[claim.entity].gpus


@settings(max_examples=100, deadline=None)
@given(scenarios(max_gpus=1))
def test_no_guarantee_waits_while_another_borrows(scenario):
    capacity, quotas, waiting = scenario
    running, left = _settle(capacity, quotas, waiting)
    held = _standings(running, quotas)
    starved = [e for e in {w.entity for w in left} if held.get(e, Standing()).running < quotas[e].gpus]
    above = [e for e, s in held.items() if s.running > quotas[e].gpus]
    assert not (starved and above), (starved, above, running, left)
    assert not starved or sum(c.gpus for c in running) == capacity

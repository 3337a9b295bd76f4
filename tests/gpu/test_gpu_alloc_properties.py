"""Property-based tests of the allocator and the queue picker.

Allocator: for any sequence of acquires and releases across queue specs, allocations are
disjoint, never exceed the pool, ranges respect their bounds, and releasing everything leaves
every device free (no leak). Picker: every queue it offers fits; it never deadlocks (with
nothing running, a queue with tasks is always offered); and a queue with tasks is passed over
by at most `patience + queues - 1` GPU tasks while it is blocked (no starvation).
"""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from agent.gpus.alloc import Allocation, GpuAllocator, QueuePicker, QueueSpec, devices_of
from agent.gpus.inventory import FakeInventory


@st.composite
def pools(draw: st.DrawFn) -> GpuAllocator:
    n = draw(st.integers(0, 8))
    mig = draw(st.dictionaries(st.integers(0, max(n - 1, 0)), st.integers(0, 7), max_size=n))
    return GpuAllocator(devices_of(FakeInventory(n, mig=mig).devices()))


@st.composite
def specs_for(draw: st.DrawFn, size: int, count: tuple[int, int] = (1, 6)) -> list[QueueSpec]:
    n = draw(st.integers(*count))
    specs = []
    for i in range(n):
        low = draw(st.integers(0, size))
        high = draw(st.integers(low, max(low, size)))
        specs.append(QueueSpec(f"q{i}", low, high))
    return specs


class AllocatorMachine(RuleBasedStateMachine):
    live = Bundle("live")

    def __init__(self) -> None:
        super().__init__()
        self.alloc: GpuAllocator | None = None
        self.specs: list[QueueSpec] = []
        self.released: list[Allocation] = []

    @rule(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        if self.alloc is None:
            self.alloc = data.draw(pools())
            self.specs = data.draw(specs_for(len(self.alloc.devices) + 1))   # some specs never fit

    @rule(target=live, data=st.data())
    def acquire(self, data: st.DataObject) -> Allocation | None:
        if self.alloc is None:
            return None
        spec = data.draw(st.sampled_from(self.specs))
        free_before = self.alloc.free_count()
        got = self.alloc.try_acquire(spec)
        if spec.min_gpus > free_before:
            assert got is None
            return None
        assert got is not None and got.queue == spec.name
        assert len(got.devices) == min(spec.max_gpus, free_before) >= spec.min_gpus
        return got

    @rule(allocation=consumes(live))
    def release(self, allocation: Allocation | None) -> None:
        if self.alloc is None or allocation is None:
            return
        assert self.alloc.release(allocation)
        self.released.append(allocation)

    @rule(data=st.data())
    def release_again(self, data: st.DataObject) -> None:
        if self.alloc is None or not self.released:
            return
        before = (self.alloc.free(), self.alloc.held())
        assert not self.alloc.release(data.draw(st.sampled_from(self.released)))
        assert (self.alloc.free(), self.alloc.held()) == before

    @invariant()
    def disjoint_and_within_the_pool(self) -> None:
        if self.alloc is None:
            return
        held = [d for a in self.alloc.held() for d in a.devices]
        assert len(held) == len(set(held))                                   # no GPU in two allocations
        assert set(held) <= set(self.alloc.devices)
        assert set(held).isdisjoint(self.alloc.free())
        assert len(held) + self.alloc.free_count() == len(self.alloc.devices)  # nothing lost, nothing made up

    def teardown(self) -> None:
        if self.alloc is None:
            return
        for allocation in self.alloc.held():
            assert self.alloc.release(allocation)
        assert self.alloc.free() == self.alloc.devices and self.alloc.held() == ()   # no leak


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(0, 8), patience=st.integers(1, 4), round_robin=st.booleans(),
       peek=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_picker_fits_never_deadlocks_and_bounds_waiting(data: st.DataObject, size: int, patience: int,
                                                        round_robin: bool, peek: bool, seed: int) -> None:
    """`peek=False`: the daemon cannot peek queues, so the picker assumes they all have tasks."""
    specs = data.draw(specs_for(size, (1, 5)))
    rng = random.Random(seed)
    alloc = GpuAllocator(devices_of(FakeInventory(size).devices()))
    picker = QueuePicker(specs, size, round_robin=round_robin, patience=patience)
    bound = patience + len(specs) - 1
    bypassed = {s.name: 0 for s in specs}        # the test's own count, independent of the picker's
    running: list[Allocation] = []
    for _step in range(150):
        if running and rng.random() < 0.45:      # some task ends
            assert alloc.release(running.pop(rng.randrange(len(running))))
            continue
        waiting = {s.name for s in specs if rng.random() < 0.8}
        free = alloc.free_count()
        pick = picker.pick(free, waiting.__contains__ if peek else None)
        assert all(spec.min_gpus <= free for spec in pick.order)
        if not running and waiting:
            assert {s.name for s in pick.order} & waiting, "nothing runs, tasks wait, yet none is offered"
        served = next((s for s in pick.order if s.name in waiting), None)
        for spec in specs:
            if spec.name not in waiting:
                bypassed[spec.name] = 0
        if served is None:
            continue
        got = alloc.try_acquire(served)
        assert got is not None
        running.append(got)
        picker.served(served.name, pick)
        bypassed[served.name] = 0
        if served.uses_gpus:
            for spec in specs:
                if spec.name in waiting and spec.min_gpus > free and spec is not served:
                    bypassed[spec.name] += 1
                    assert bypassed[spec.name] <= bound, f"{spec.name} passed over {bypassed[spec.name]} times"


@settings(max_examples=200, deadline=None)
@given(data=st.data(), size=st.integers(1, 8), patience=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_round_robin_serves_every_queue(data: st.DataObject, size: int, patience: int, seed: int) -> None:
    """Round-robin, all queues always have tasks, tasks end at random: each queue starts a task
    within a bounded number of starts, `whole-pool` queues included. (Strict priority, the
    default, lets a higher queue that fits go first for ever, by design; only GPU-blocked
    queues are protected there, by the bound above.)"""
    specs = data.draw(specs_for(size, (1, 5)))
    rng = random.Random(seed)
    alloc = GpuAllocator(devices_of(FakeInventory(size).devices()))
    picker = QueuePicker(specs, size, round_robin=True, patience=patience)
    last = {s.name: (0, 0) for s in specs}      # (all starts, GPU starts) when it last started
    started = gpu_started = 0
    running: list[Allocation] = []
    for _step in range(400):
        pick = picker.pick(alloc.free_count())
        if not pick.order or (running and rng.random() < 0.5):
            assert running, "deadlock: nothing runs and nothing is offered"
            assert alloc.release(running.pop(rng.randrange(len(running))))
            continue
        spec = pick.order[0]
        got = alloc.try_acquire(spec)
        assert got is not None
        running.append(got)
        picker.served(spec.name, pick)
        started += 1
        gpu_started += spec.uses_gpus
        last[spec.name] = (started, gpu_started)
        for other in specs:
            if other.uses_gpus:   # CPU tasks may start while it waits for its GPUs to be released
                assert gpu_started - last[other.name][1] <= patience + 2 * (len(specs) - 1), other
            else:                 # a CPU-only queue always fits: only queues ahead in the rotation go first
                assert started - last[other.name][0] <= len(specs), other

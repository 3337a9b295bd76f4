"""QueuePicker scenarios: strict priority, round-robin, and holding GPUs for a starved big job."""
from __future__ import annotations

import pytest

from agent.gpus.alloc import Allocation, GpuAllocator, QueuePicker, QueueSpec, devices_of
from agent.gpus.inventory import FakeInventory

SINGLE, DUAL, QUAD, CPU = (QueueSpec("single", 1, 1), QueueSpec("dual", 2, 2), QueueSpec("quad", 4, 4),
                           QueueSpec("cpu", 0, 0))


def names(specs: tuple[QueueSpec, ...]) -> list[str]:
    return [s.name for s in specs]


def test_priority_order_when_everything_fits() -> None:
    picker = QueuePicker([QUAD, DUAL, SINGLE, CPU], 8)
    pick = picker.pick(8)
    assert names(pick.order) == ["quad", "dual", "single", "cpu"] and pick.holding_for is None
    picker.served("quad", pick)
    assert names(picker.pick(3).order) == ["dual", "single", "cpu"]   # quad no longer fits
    assert names(picker.pick(3).order) == ["dual", "single", "cpu"]   # strict: no rotation


def test_round_robin_sends_the_served_queue_to_the_back() -> None:
    picker = QueuePicker([QUAD, DUAL, SINGLE], 8, round_robin=True)
    served = []
    for _ in range(4):
        pick = picker.pick(8)
        served.append(pick.order[0].name)
        picker.served(pick.order[0].name, pick)
    assert served == ["quad", "dual", "single", "quad"]
    picker.served("single", picker.pick(8))
    assert names(picker.pick(8).order) == ["dual", "quad", "single"]


def test_a_big_job_is_not_starved_by_a_stream_of_small_ones() -> None:
    """4 GPUs, `single=1` first in priority and never empty, `quad=4` waiting: after `patience`
    single tasks start ahead of it, no new single task starts until quad has its four GPUs."""
    alloc = GpuAllocator(devices_of(FakeInventory(4).devices()))
    picker = QueuePicker([SINGLE, QUAD], 4, patience=3)
    running: list[Allocation] = []
    log = []
    for step in range(12):
        if step % 2 and running:          # the oldest task ends every other step
            alloc.release(running.pop(0))
        pick = picker.pick(alloc.free_count())
        if not pick.order:
            log.append(f"hold({alloc.free_count()} free)")
            continue
        spec = pick.order[0]
        got = alloc.try_acquire(spec)
        assert got is not None
        running.append(got)
        picker.served(spec.name, pick)
        log.append(f"{spec.name}[{got.label}]")
        if spec is QUAD:
            break
    # While four are free, priority picks single; the three starts made while quad could not
    # fit starve it, and the freed GPUs are kept for it until it fits.
    assert log == ["single[0]", "single[0]", "single[1]", "single[0]", "single[2]",
                   "hold(2 free)", "hold(2 free)", "hold(3 free)", "hold(3 free)", "quad[0,1,2,3]"]


def test_hold_lets_cpu_queues_run_and_ends_when_the_queue_empties() -> None:
    picker = QueuePicker([SINGLE, QUAD, CPU], 4, patience=1)
    waiting = {"single", "quad", "cpu"}
    pick = picker.pick(3, waiting.__contains__)
    assert names(pick.order) == ["single", "cpu"] and pick.blocked == {"quad"}
    picker.served("single", pick)                 # quad passed over once: starved (patience 1)
    assert picker.starved() == ("quad",)
    pick = picker.pick(2, waiting.__contains__)
    assert pick.holding_for == QUAD and names(pick.order) == ["cpu"] and pick.held_out == {"single"}
    picker.served("cpu", pick)                    # a CPU task does not delay quad
    assert picker.pick(4, waiting.__contains__).order == (QUAD, CPU, SINGLE)   # once quad fits, it goes first
    waiting.discard("quad")                       # someone else took quad's task: stop holding
    pick = picker.pick(2, waiting.__contains__)
    assert pick.holding_for is None and names(pick.order) == ["single", "cpu"] and picker.starved() == ()


def test_cpu_tasks_do_not_count_against_gpu_queues() -> None:
    picker = QueuePicker([CPU, QUAD], 4, patience=1)
    for _ in range(5):
        pick = picker.pick(0)
        picker.served("cpu", pick)
    assert picker.starved() == ()


def test_queues_peeked_only_when_blocked_or_starved() -> None:
    asked: list[str] = []

    def has_tasks(name: str) -> bool:
        asked.append(name)
        return True

    picker = QueuePicker([SINGLE, DUAL, QUAD], 4)
    picker.pick(2, has_tasks)
    assert asked == ["quad"]


def test_picker_rejects_what_could_never_run() -> None:
    with pytest.raises(ValueError, match="quad"):
        QueuePicker([QUAD], 2)
    with pytest.raises(ValueError, match="patience"):
        QueuePicker([SINGLE], 2, patience=0)


def test_a_head_with_no_task_blocks_nobody_without_peeks() -> None:
    """Without peeks (has_tasks=None) an empty big queue still becomes the head; once it fits,
    the queues after it are offered too, and a claim from one of them drops the head."""
    picker = QueuePicker([SINGLE, QUAD], 4, patience=2)
    for free in (3, 2):
        picker.served("single", picker.pick(free))
    assert picker.starved() == ("quad",)
    assert picker.pick(3).order == ()                         # hold: GPUs accumulate for quad
    pick = picker.pick(4)
    assert pick.order == (QUAD, SINGLE)
    picker.served("single", pick)                             # quad had nothing: single got the GPU
    assert picker.starved() == () and picker.pick(3).order == (SINGLE,)

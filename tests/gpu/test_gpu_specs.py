"""Table tests: `--gpus`, queue GPU specs, the daemon's GPU plan."""
from __future__ import annotations

import pytest

from agent.gpus.alloc import GpuSpecError, QueueSpec, parse_gpus, parse_queue_spec, parse_queue_specs, plan_gpus
from agent.gpus.inventory import FakeInventory, Gpu
from shipyard.errors import ConfigError

EIGHT = FakeInventory(8).devices()
MIG = FakeInventory(2, mig={1: 3}).devices()     # GPU 0 whole; GPU 1 in MIG mode: 1:0, 1:1, 1:2
NONE: list[Gpu] = []


def labels(spec: str, gpus: list[Gpu]) -> list[str]:
    return [d.label for d in parse_gpus(spec, gpus)]


@pytest.mark.parametrize("spec, gpus, expected", [
    ("all", EIGHT, [str(i) for i in range(8)]),
    (" ALL ", EIGHT, [str(i) for i in range(8)]),
    ("all", NONE, []),
    ("", EIGHT, []),
    ("none", EIGHT, []),
    ("0", EIGHT, ["0"]),
    ("0,1", EIGHT, ["0", "1"]),
    ("3,1", EIGHT, ["1", "3"]),
    ("0-3", EIGHT, ["0", "1", "2", "3"]),
    ("0-1, 6", EIGHT, ["0", "1", "6"]),
    ("5-5", EIGHT, ["5"]),
    ("GPU-fa6e0000-0000-4000-8000-000000000002", EIGHT, ["2"]),
    ("all", MIG, ["0", "1:0", "1:1", "1:2"]),
    ("1", MIG, ["1:0", "1:1", "1:2"]),
    ("1:2,0", MIG, ["0", "1:2"]),
    ("MIG-fa6e0001-0000-4000-8000-000000000001", MIG, ["1:1"]),
    ("GPU-fa6e0000-0000-4000-8000-000000000001", MIG, ["1:0", "1:1", "1:2"]),
])
def test_gpus_spec(spec: str, gpus: list[Gpu], expected: list[str]) -> None:
    assert labels(spec, gpus) == expected


@pytest.mark.parametrize("spec, gpus, message", [
    ("8", EIGHT, "there is no GPU 8; this machine has GPU 0, GPU 1"),
    ("0", NONE, "NVML sees no NVIDIA GPU"),
    ("0-9", EIGHT, "no GPU 8"),
    ("3-1", EIGHT, "runs backwards"),
    ("0,,1", EIGHT, "empty item"),
    ("0,0", EIGHT, "names GPU 0 twice"),
    ("0-2,1", EIGHT, "names GPU 1 twice"),
    ("1,1:0", MIG, "names GPU 1:0 twice"),
    ("0:0", MIG, "no MIG instance 0:0; this machine has GPU 0, GPU 1 (MIG 1:0, 1:1, 1:2)"),
    ("1:3", MIG, "no MIG instance 1:3"),
    ("GPU-nope", EIGHT, "no GPU or MIG instance has UUID GPU-nope"),
    ("-1", EIGHT, "not a GPU index"),
    ("gpu0", EIGHT, "not a GPU index"),
    ("0.5", EIGHT, "not a GPU index"),
])
def test_bad_gpus_spec(spec: str, gpus: list[Gpu], message: str) -> None:
    with pytest.raises(GpuSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_gpus(spec, gpus)


def test_spec_errors_are_config_errors() -> None:
    assert issubclass(GpuSpecError, ConfigError) and GpuSpecError.exit_code == 2


@pytest.mark.parametrize("text, pool, expected", [
    ("quad=4", 8, ("quad", 4, 4)),
    ("dual=2", 8, ("dual", 2, 2)),
    (" single = 1 ", 8, ("single", 1, 1)),
    ("any=1-4", 8, ("any", 1, 4)),
    ("any=1-16", 4, ("any", 1, 4)),       # a maximum above the pool is capped (same config, smaller box)
    ("cpu=0", 8, ("cpu", 0, 0)),
    ("cpu=0", 0, ("cpu", 0, 0)),
    ("opt=0-2", 8, ("opt", 0, 2)),
    ("default", 8, ("default", 8, 8)),    # a plain name: the whole pool, as clearml-agent without dynamic GPUs
    ("default", 0, ("default", 0, 0)),    # ... which on a CPU-only daemon is no GPU
    ("a=b=2", 8, ("a=b", 2, 2)),
    ("0123456789abcdef0123456789abcdef=1", 8, ("0123456789abcdef0123456789abcdef", 1, 1)),
])
def test_queue_spec(text: str, pool: int, expected: tuple[str, int, int]) -> None:
    assert parse_queue_spec(text, pool) == QueueSpec(*expected)


@pytest.mark.parametrize("text, pool, message", [
    ("quad=4", 2, "needs 4 GPU\\(s\\) but this daemon has 2"),
    ("any=3-4", 2, "needs 3 GPU"),
    ("one=1", 0, "needs 1 GPU\\(s\\) but this daemon has 0"),
    ("half=0.5", 8, "fractions of a GPU are not supported"),
    ("half=.25", 8, "fractions"),
    ("x=", 8, "must be N or MIN-MAX"),
    ("x=two", 8, "must be N or MIN-MAX"),
    ("x=-1", 8, "must be N or MIN-MAX"),
    ("x=1-", 8, "must be N or MIN-MAX"),
    ("x=4-1", 8, "runs backwards"),
    ("=2", 8, "no queue name"),
    ("  ", 8, "no queue name"),
])
def test_bad_queue_spec(text: str, pool: int, message: str) -> None:
    with pytest.raises(GpuSpecError, match=message):
        parse_queue_spec(text, pool)


def test_queue_listed_twice() -> None:
    with pytest.raises(GpuSpecError, match="'dual' is listed twice"):
        parse_queue_specs(["dual=2", "dual=1"], 8)


def test_plan_dynamic_slots() -> None:
    plan = plan_gpus("0-3", cpu_only=False, queues=["quad=4", "dual=2", "single=1"], devices=EIGHT)
    assert plan.managed and [d.label for d in plan.pool] == ["0", "1", "2", "3"]
    assert plan.queues == (QueueSpec("quad", 4, 4), QueueSpec("dual", 2, 2), QueueSpec("single", 1, 1))
    assert plan.gpu_indices == plan.stats_indices == (0, 1, 2, 3)


def test_plan_cpu_only() -> None:
    plan = plan_gpus(None, cpu_only=True, queues=["cpu"], devices=EIGHT)
    assert plan.managed and plan.pool == () and plan.queues == (QueueSpec("cpu", 0, 0),)
    assert plan.stats_indices == ()
    allocation = plan.allocator().try_acquire(plan.queues[0])
    assert allocation is not None
    assert plan.env_for(allocation) == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                        "NVIDIA_VISIBLE_DEVICES": "none"}
    with pytest.raises(GpuSpecError, match="needs 1 GPU"):
        plan_gpus(None, cpu_only=True, queues=["gpu=1"], devices=EIGHT)


def test_plan_without_gpu_flags_leaves_gpus_alone() -> None:
    plan = plan_gpus(None, cpu_only=False, queues=["default", "other"], devices=EIGHT)
    assert not plan.managed and plan.pool == () and plan.stats_indices is None   # report every GPU
    allocation = plan.allocator().try_acquire(plan.queues[0])
    assert allocation is not None and plan.env_for(allocation) == {}
    with pytest.raises(GpuSpecError, match=r"queue GPU counts \(dual=2\) need --gpus"):
        plan_gpus(None, cpu_only=False, queues=["default", "dual=2"], devices=EIGHT)


def test_plan_conflicting_flags_and_all_on_a_cpu_box() -> None:
    with pytest.raises(GpuSpecError, match="exclude each other"):
        plan_gpus("0", cpu_only=True, queues=["q"], devices=EIGHT)
    plan = plan_gpus("all", cpu_only=False, queues=["default"], devices=NONE)
    assert plan.managed and plan.pool == () and plan.queues == (QueueSpec("default", 0, 0),)
    with pytest.raises(GpuSpecError, match="needs 1 GPU"):
        plan_gpus("all", cpu_only=False, queues=["single=1"], devices=NONE)

"""GpuAllocator and the task environment, on fake inventories of 0, 1 and 8 GPUs and MIG."""
from __future__ import annotations

import threading

import pytest

from agent.gpus.alloc import (
    Allocation,
    Device,
    GpuAllocator,
    QueueSpec,
    devices_of,
    docker_gpu_args,
    parse_gpus,
    visible_devices_env,
)
from agent.gpus.inventory import FakeInventory

QUAD, DUAL, SINGLE, ANY, CPU = (QueueSpec("quad", 4, 4), QueueSpec("dual", 2, 2), QueueSpec("single", 1, 1),
                                QueueSpec("any", 1, 4), QueueSpec("cpu", 0, 0))


def pool(n: int, **kw: object) -> GpuAllocator:
    return GpuAllocator(devices_of(FakeInventory(n, **kw).devices()))  # type: ignore[arg-type]


def labels(allocation: Allocation | None) -> str:
    assert allocation is not None
    return allocation.label


def test_zero_gpus_only_cpu_tasks_fit() -> None:
    alloc = pool(0)
    assert alloc.free() == () and not alloc.fits(SINGLE) and alloc.try_acquire(SINGLE) is None
    assert alloc.fits(CPU) and labels(alloc.try_acquire(CPU)) == "cpu"
    assert labels(alloc.try_acquire(CPU)) == "cpu"       # CPU tasks never block each other
    assert alloc.try_acquire(QueueSpec("opt", 0, 2)) is not None


def test_one_gpu_is_taken_in_turn() -> None:
    alloc = pool(1)
    first = alloc.try_acquire(SINGLE)
    assert labels(first) == "0" and alloc.free() == () and not alloc.fits(SINGLE)
    assert alloc.try_acquire(SINGLE) is None and alloc.try_acquire(ANY) is None
    assert labels(alloc.try_acquire(CPU)) == "cpu"
    assert first is not None and alloc.release(first)
    assert labels(alloc.try_acquire(SINGLE)) == "0"


def test_eight_gpus_dynamic_slots() -> None:
    alloc = pool(8)
    quad, dual, single = alloc.try_acquire(QUAD), alloc.try_acquire(DUAL), alloc.try_acquire(SINGLE)
    assert (labels(quad), labels(dual), labels(single)) == ("0,1,2,3", "4,5", "6")
    assert alloc.try_acquire(DUAL) is None and alloc.fits(SINGLE) and not alloc.fits(DUAL)
    assert labels(alloc.try_acquire(ANY)) == "7"          # a range takes what is free
    assert alloc.try_acquire(ANY) is None
    assert dual is not None and alloc.release(dual)
    assert labels(alloc.try_acquire(ANY)) == "4,5"
    assert quad is not None and alloc.release(quad)
    assert labels(alloc.try_acquire(ANY)) == "0,1,2,3"   # up to its maximum


def test_release_is_idempotent_and_never_frees_someone_elses_gpus() -> None:
    alloc = pool(2)
    first = alloc.try_acquire(SINGLE)
    assert first is not None and alloc.release(first)
    second = alloc.try_acquire(SINGLE)
    assert second is not None and second.devices == first.devices
    assert not alloc.release(first)                        # stale: GPU 0 now belongs to `second`
    assert alloc.held() == (second,) and alloc.free_count() == 1
    forged = Allocation(second.id, "other", (Device(1, "GPU-x"),))
    assert not alloc.release(forged) and alloc.held() == (second,)
    assert alloc.release(second) and not alloc.release(second) and alloc.free_count() == 2


def test_pool_rejects_duplicates() -> None:
    device = Device(0, "GPU-a")
    with pytest.raises(ValueError):
        GpuAllocator([device, device])


def test_mig_instances_are_units() -> None:
    gpus = FakeInventory(2, mig={0: 3}).devices()
    alloc = GpuAllocator(parse_gpus("all", gpus))
    assert [d.label for d in alloc.free()] == ["0:0", "0:1", "0:2", "1"]
    a, b = alloc.try_acquire(SINGLE), alloc.try_acquire(SINGLE)
    assert (labels(a), labels(b)) == ("0:0", "0:1")
    assert a is not None and a.gpu_indices == (0,)
    env = visible_devices_env(a)
    assert env["CUDA_VISIBLE_DEVICES"] == gpus[0].mig[0].uuid == env["NVIDIA_VISIBLE_DEVICES"]
    rest = alloc.try_acquire(DUAL)
    assert labels(rest) == "0:2,1" and rest is not None and rest.gpu_indices == (0, 1)
    assert visible_devices_env(rest)["CUDA_VISIBLE_DEVICES"] == f"{gpus[0].mig[2].uuid},{gpus[1].uuid}"


def test_visible_devices_env() -> None:
    gpus = FakeInventory(4).devices()
    alloc = GpuAllocator(parse_gpus("1-3", gpus))
    dual = alloc.try_acquire(DUAL)
    assert dual is not None
    assert visible_devices_env(dual) == {"CUDA_VISIBLE_DEVICES": "1,2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                         "NVIDIA_VISIBLE_DEVICES": "1,2"}
    by_uuid = f"{gpus[1].uuid},{gpus[2].uuid}"
    assert visible_devices_env(dual, use_uuids=True) == {"CUDA_VISIBLE_DEVICES": by_uuid,
                                                         "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                                         "NVIDIA_VISIBLE_DEVICES": by_uuid}
    cpu = alloc.try_acquire(CPU)
    assert cpu is not None
    assert visible_devices_env(cpu) == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                        "NVIDIA_VISIBLE_DEVICES": "none"}


def test_docker_gpu_args() -> None:
    gpus = FakeInventory(2, mig={1: 2}).devices()
    alloc = GpuAllocator(parse_gpus("all", gpus))
    whole, mig, cpu = alloc.try_acquire(SINGLE), alloc.try_acquire(SINGLE), alloc.try_acquire(CPU)
    assert whole is not None and mig is not None and cpu is not None
    assert docker_gpu_args(whole) == ["--gpus", '"device=0"', "-e", "NVIDIA_VISIBLE_DEVICES=0"]
    uuid = gpus[1].mig[0].uuid
    assert docker_gpu_args(mig) == ["--gpus", f'"device={uuid}"', "-e", f"NVIDIA_VISIBLE_DEVICES={uuid}"]
    assert docker_gpu_args(cpu) == ["-e", "NVIDIA_VISIBLE_DEVICES=none"]


def test_wait_released_wakes_on_release() -> None:
    alloc = pool(1)
    held = alloc.try_acquire(SINGLE)
    assert held is not None and not alloc.wait_released(0.01)
    timer = threading.Timer(0.05, alloc.release, [held])
    timer.start()
    assert alloc.wait_released(5)
    timer.join()


def test_threads_never_share_a_gpu() -> None:
    alloc = pool(8)
    in_use: set[Device] = set()
    guard = threading.Lock()
    errors: list[str] = []

    def worker(spec: QueueSpec) -> None:
        for _ in range(300):
            got = alloc.try_acquire(spec)
            if got is None:
                continue
            with guard:
                if in_use & set(got.devices):
                    errors.append(f"{got.label} given twice")
                in_use.update(got.devices)
            with guard:
                in_use.difference_update(got.devices)
            alloc.release(got)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (QUAD, DUAL, SINGLE, ANY) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and alloc.free_count() == 8 and alloc.held() == ()

"""Which GPUs each task gets: `--gpus`, queue GPU specs, the allocator, and the task's env.

Pure: no NVML and no I/O. The inventory's `devices()` (agent.gpu) is read once at start.

`--gpus` (the daemon's GPU set, its *pool*)
    all                  every GPU NVML sees (none on a CPU box: tasks run CPU-only)
    "" | none            CPU-only, as `--cpu-only`
    0,1  0-3  0-3,6      GPU indices (NVML order == CUDA order under CUDA_DEVICE_ORDER=PCI_BUS_ID)
    0:1                  MIG instance 1 of GPU 0
    GPU-… | MIG-…        a GPU or a MIG instance by UUID (as `nvidia-smi -L` prints them)

`--queue` (each queue's share; ClearML's --dynamic-gpus grammar, fractions aside)
    name                 the whole pool: one task at a time gets every GPU of the daemon, which
                         is exactly what clearml-agent does with `--gpus 0,1 --queue name`
    name=N               exactly N GPUs
    name=A-B             at least A; as many more as are free, up to B
    name=0               no GPU: the task runs with CUDA_VISIBLE_DEVICES="" (hidden GPUs)
    ClearML's fractions (`name=0.25`) are refused: partition GPUs with MIG instead.

MIG model. The unit the allocator hands out is a `Device`: a whole GPU, or one MIG instance
of a GPU whose MIG mode is on (the parent itself is never handed out: CUDA cannot use it whole
while MIG is on). `--gpus 0` on a GPU in MIG mode means all its instances; "N GPUs" in a queue
spec means N devices. CUDA addresses MIG instances by UUID only, so an allocation holding one
is always written as UUIDs. CUDA runs one process on one MIG instance: give MIG pools
`name=1` queues (a larger share only helps a job that starts one process per instance).

Allocation: `GpuAllocator.try_acquire(spec)` takes the first free devices in pool order, at
least `min` of them, up to `max`; devices are never in two live allocations, and `release`
is idempotent (a stale or repeated release is a no-op, it never frees someone else's GPUs).
`set_blocked(indices)`: GPUs leased to a person or in use by processes the daemon did not start
(agent/daemon/gpuwatch.py) count as not free; tasks already on them keep running.

Fairness: `QueuePicker` orders the queues a daemon should claim from. Queues keep the
daemon's order (strict priority, ClearML's default) or rotate (`--order-fairness`: the queue
served last goes to the back, as agent.poller does). Priority alone starves big jobs: while
`single=1` has work, every freed GPU goes to it and `quad=4` never sees four free at once.
So a queue with tasks that is passed over for GPU reasons - *blocked* (it needs more GPUs than
are free) or *held out* (below) - counts the GPU tasks started meanwhile; after `patience` of
them it is *starved* and joins a FIFO. While a starved queue heads the FIFO, no other queue
that takes GPUs starts (those that fit are *held out*); `name=0` queues keep their turn, as
they cannot delay it. Freed GPUs accumulate until the head fits; then it is offered first and
the held-out queues after it, so a head whose queue turned out empty blocks nobody (a claim
from a later queue tells the picker so, and it drops the head). Tested bounds,
for K queues: a queue with tasks is passed over by at most `patience + K - 1` GPU tasks while
it is blocked (both modes); with round-robin, a GPU queue starts within `patience + 2(K-1)`
GPU task starts and a `name=0` queue within K starts. Strict priority lets a higher queue
that fits go first for ever, by design; only GPU-blocked queues are protected there.
"""
from __future__ import annotations

import itertools
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agent.gpus.inventory import Gpu
from shipyard.errors import ConfigError

__all__ = ["Allocation", "Device", "GpuAllocator", "GpuPlan", "GpuSpecError", "Pick", "QueuePicker", "QueueSpec",
           "devices_of", "docker_gpu_args", "parse_gpus", "parse_queue_spec", "parse_queue_specs", "plan_gpus",
           "visible_devices_env"]


class GpuSpecError(ConfigError):
    """A `--gpus` or `--queue name=N` value this machine cannot satisfy, or that does not parse."""


@dataclass(frozen=True)
class Device:
    """What the allocator hands out: a whole GPU, or one MIG instance of GPU `index`."""

    index: int                  # the GPU's NVML index (the parent's, for a MIG instance)
    uuid: str                   # "GPU-…" or "MIG-…"
    mig_index: int | None = None

    @property
    def label(self) -> str:     # "3", or "0:1" for MIG instance 1 of GPU 0 (NVIDIA's notation)
        return str(self.index) if self.mig_index is None else f"{self.index}:{self.mig_index}"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    min_gpus: int
    max_gpus: int

    @property
    def uses_gpus(self) -> bool:
        return self.max_gpus > 0


@dataclass(frozen=True)
class Allocation:
    id: int
    queue: str
    devices: tuple[Device, ...]

    @property
    def label(self) -> str:     # for logs and worker ids: "0,1", "0:1,0:2" or "cpu"
        return ",".join(d.label for d in self.devices) or "cpu"

    @property
    def gpu_indices(self) -> tuple[int, ...]:   # the physical GPUs touched, for GPU stats
        return tuple(sorted({d.index for d in self.devices}))


# -- parsing ----------------------------------------------------------------------------------
def devices_of(gpus: Sequence[Gpu]) -> tuple[Device, ...]:
    """Every allocatable device: whole GPUs, and the MIG instances of GPUs in MIG mode."""
    found: list[Device] = []
    for gpu in sorted(gpus, key=lambda g: g.index):
        if gpu.mig:
            found.extend(Device(gpu.index, m.uuid, m.index) for m in sorted(gpu.mig, key=lambda m: m.index))
        else:
            found.append(Device(gpu.index, gpu.uuid))
    return tuple(found)


def _describe(gpus: Sequence[Gpu]) -> str:
    if not gpus:
        return "NVML sees no NVIDIA GPU on this machine"
    return "this machine has " + ", ".join(
        f"GPU {g.index}" + (f" (MIG {', '.join(f'{g.index}:{m.index}' for m in g.mig)})" if g.mig else "")
        for g in sorted(gpus, key=lambda g: g.index))


def _item_devices(item: str, gpus: Sequence[Gpu], spec: str) -> list[Device]:
    by_index = {g.index: g for g in gpus}
    units = devices_of(gpus)

    def whole(index: int) -> list[Device]:
        if index not in by_index:
            raise GpuSpecError(f"--gpus {spec!r}: there is no GPU {index}; {_describe(gpus)}")
        return [d for d in units if d.index == index]

    if re.fullmatch(r"\d+", item):
        return whole(int(item))
    if m := re.fullmatch(r"(\d+)-(\d+)", item):
        first, last = int(m[1]), int(m[2])
        if first > last:
            raise GpuSpecError(f"--gpus {spec!r}: range {item!r} runs backwards")
        return [d for index in range(first, last + 1) for d in whole(index)]
    if m := re.fullmatch(r"(\d+):(\d+)", item):
        found = [d for d in units if d.index == int(m[1]) and d.mig_index == int(m[2])]
        if not found:
            raise GpuSpecError(f"--gpus {spec!r}: there is no MIG instance {item}; {_describe(gpus)}")
        return found
    if item.startswith(("GPU-", "MIG-")):
        parent = next((g for g in gpus if g.uuid == item), None)
        found = whole(parent.index) if parent else [d for d in units if d.uuid == item]
        if not found:
            raise GpuSpecError(f"--gpus {spec!r}: no GPU or MIG instance has UUID {item}")
        return found
    raise GpuSpecError(f"--gpus {spec!r}: {item!r} is not a GPU index, range (0-3), MIG id (0:1) or UUID")


def parse_gpus(spec: str, gpus: Sequence[Gpu]) -> tuple[Device, ...]:
    """The devices `--gpus spec` names, in (index, MIG index) order; () means CPU-only."""
    text = spec.strip()
    if text.lower() in ("", "none"):
        return ()
    if text.lower() == "all":
        return devices_of(gpus)
    chosen: list[Device] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise GpuSpecError(f"--gpus {spec!r}: empty item")
        for device in _item_devices(item, gpus, spec):
            if device in chosen:
                raise GpuSpecError(f"--gpus {spec!r} names GPU {device.label} twice")
            chosen.append(device)
    return tuple(sorted(chosen, key=lambda d: (d.index, -1 if d.mig_index is None else d.mig_index)))


def parse_queue_spec(text: str, pool_size: int) -> QueueSpec:
    """`name`, `name=N` or `name=A-B` against a pool of `pool_size` devices."""
    name, eq, count = text.strip().rpartition("=") if "=" in text else (text.strip(), "", "")
    name = name.strip()
    if not name:
        raise GpuSpecError(f"queue spec {text!r} has no queue name")
    if not eq:
        return QueueSpec(name, pool_size, pool_size)
    count = count.strip()
    if m := re.fullmatch(r"(\d+)(?:-(\d+))?", count):
        low = int(m[1])
        high = int(m[2]) if m[2] is not None else low
    elif re.fullmatch(r"\d*\.\d+(-\d*\.?\d+)?", count):
        raise GpuSpecError(f"queue spec {text!r}: fractions of a GPU are not supported; use MIG instances")
    else:
        raise GpuSpecError(f"queue spec {text!r}: the GPU count must be N or MIN-MAX, e.g. {name}=2 or {name}=1-4")
    if low > high:
        raise GpuSpecError(f"queue spec {text!r}: the range runs backwards")
    if low > pool_size:
        raise GpuSpecError(f"queue {name!r} needs {low} GPU(s) but this daemon has {pool_size}; "
                           f"its tasks could never start")
    return QueueSpec(name, low, min(high, pool_size))


def parse_queue_specs(texts: Iterable[str], pool_size: int) -> tuple[QueueSpec, ...]:
    specs = tuple(parse_queue_spec(text, pool_size) for text in texts)
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise GpuSpecError(f"queue {spec.name!r} is listed twice")
        seen.add(spec.name)
    return specs


@dataclass(frozen=True)
class GpuPlan:
    """The daemon's GPU setup. `managed=False` (neither --gpus nor --cpu-only): GPUs are left
    alone, as clearml-agent does: tasks inherit the daemon's environment, one at a time."""

    pool: tuple[Device, ...]
    queues: tuple[QueueSpec, ...]
    managed: bool

    @property
    def gpu_indices(self) -> tuple[int, ...]:   # the physical GPUs of the pool
        return tuple(sorted({d.index for d in self.pool}))

    @property
    def stats_indices(self) -> tuple[int, ...] | None:
        """For `inventory.stats()`: the pool's GPUs; None (every GPU) when GPUs are unmanaged."""
        return self.gpu_indices if self.managed else None

    def allocator(self) -> GpuAllocator:
        return GpuAllocator(self.pool)

    def picker(self, *, round_robin: bool = False, patience: int = 3) -> QueuePicker:
        return QueuePicker(self.queues, len(self.pool), round_robin=round_robin, patience=patience)

    def env_for(self, allocation: Allocation, *, use_uuids: bool = False) -> dict[str, str]:
        return visible_devices_env(allocation, use_uuids=use_uuids) if self.managed else {}


def plan_gpus(gpus: str | None, *, cpu_only: bool, queues: Sequence[str], devices: Sequence[Gpu]) -> GpuPlan:
    """Check `--gpus`/`--cpu-only`/`--queue` against the inventory's devices; raise GpuSpecError."""
    if gpus is not None and cpu_only:
        raise GpuSpecError("--gpus and --cpu-only exclude each other")
    if gpus is None and not cpu_only:
        counted = [q for q in queues if "=" in q]
        if counted:
            raise GpuSpecError(f"queue GPU counts ({', '.join(counted)}) need --gpus (e.g. --gpus all)")
        return GpuPlan((), parse_queue_specs(queues, 0), managed=False)
    pool = () if cpu_only else parse_gpus(gpus or "", devices)
    return GpuPlan(pool, parse_queue_specs(queues, len(pool)), managed=True)


# -- allocation -------------------------------------------------------------------------------
class GpuAllocator:
    """Leases disjoint sets of devices from a pool. Thread-safe."""

    def __init__(self, devices: Sequence[Device]):
        if len(set(devices)) != len(devices):
            raise ValueError("a device is listed twice in the pool")
        self.devices = tuple(devices)
        self._held: dict[int, Allocation] = {}
        self._in_use: set[Device] = set()
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        self._blocked: frozenset[int] = frozenset()

    def set_blocked(self, indices: Iterable[int]) -> None:
        """GPUs (NVML indices) no new allocation may take, until set otherwise."""
        with self._changed:
            self._blocked = frozenset(indices)
            self._changed.notify_all()

    def _available(self) -> list[Device]:
        return [d for d in self.devices if d not in self._in_use and d.index not in self._blocked]

    def free(self) -> tuple[Device, ...]:
        with self._changed:
            return tuple(self._available())

    def free_count(self) -> int:
        with self._changed:
            return len(self._available())

    def held(self) -> tuple[Allocation, ...]:
        with self._changed:
            return tuple(self._held.values())

    def fits(self, spec: QueueSpec) -> bool:
        return self.free_count() >= spec.min_gpus

    def try_acquire(self, spec: QueueSpec) -> Allocation | None:
        """At least `min_gpus` free devices (as many as are free, up to `max_gpus`), or None."""
        with self._changed:
            free = self._available()
            if len(free) < spec.min_gpus:
                return None
            allocation = Allocation(next(self._ids), spec.name, tuple(free[:min(spec.max_gpus, len(free))]))
            self._held[allocation.id] = allocation
            self._in_use.update(allocation.devices)
            return allocation

    def release(self, allocation: Allocation) -> bool:
        """Give the devices back; False (and nothing changes) if it was already released."""
        with self._changed:
            if self._held.get(allocation.id) != allocation:
                return False
            del self._held[allocation.id]
            self._in_use.difference_update(allocation.devices)
            self._changed.notify_all()
            return True

    def wait_released(self, timeout: float) -> bool:
        """Block until some allocation is released or `timeout` passes; True if one was."""
        with self._changed:
            return self._changed.wait(timeout)


# -- the task's environment -------------------------------------------------------------------
def _ids(allocation: Allocation, use_uuids: bool) -> str:
    by_uuid = use_uuids or any(d.mig_index is not None for d in allocation.devices)
    return ",".join(d.uuid if by_uuid else str(d.index) for d in allocation.devices)


def visible_devices_env(allocation: Allocation, *, use_uuids: bool = False) -> dict[str, str]:
    """What a task's process must see: its devices only, named by index (or UUID; always UUIDs
    for MIG). No devices: CUDA_VISIBLE_DEVICES="" hides every GPU from CUDA.

    In docker mode the container re-numbers its GPUs from 0, so pass `use_uuids=True` for the
    env inside the container (indices would name the wrong GPUs, or none)."""
    ids = _ids(allocation, use_uuids)
    return {"CUDA_VISIBLE_DEVICES": ids, "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "NVIDIA_VISIBLE_DEVICES": ids or "none"}


def docker_gpu_args(allocation: Allocation, *, use_uuids: bool = False) -> list[str]:
    """`docker run` arguments giving the container exactly these devices (argv items, no shell).

    NVIDIA_VISIBLE_DEVICES=none also covers hosts whose default runtime is nvidia, where an
    image's own NVIDIA_VISIBLE_DEVICES=all (nvidia/cuda sets it) would expose every GPU."""
    ids = _ids(allocation, use_uuids)
    if not ids:
        return ["-e", "NVIDIA_VISIBLE_DEVICES=none"]
    return ["--gpus", f'"device={ids}"', "-e", f"NVIDIA_VISIBLE_DEVICES={ids}"]


# -- fairness between queues ------------------------------------------------------------------
@dataclass(frozen=True)
class Pick:
    order: tuple[QueueSpec, ...]        # claim from these, first first; each fits the free GPUs now
    blocked: frozenset[str]             # queues with tasks that did not fit
    holding_for: QueueSpec | None       # a starved queue the free GPUs are being kept for
    held_out: frozenset[str] = frozenset()   # GPU queues that fit but come after `holding_for`


class QueuePicker:
    """Orders the queues to claim from (see the module docstring). Not thread-safe: call it
    from the one loop that claims tasks."""

    def __init__(self, specs: Sequence[QueueSpec], pool_size: int, *, round_robin: bool = False, patience: int = 3):
        if patience < 1:
            raise ValueError("patience must be at least 1")
        too_big = [s.name for s in specs if s.min_gpus > pool_size]
        if too_big:
            raise ValueError(f"queues {too_big} need more GPUs than the pool's {pool_size}")
        self.specs = tuple(specs)
        self.round_robin = round_robin
        self.patience = patience
        self._rotation = list(specs)            # round-robin: the queue served last goes to the back
        self._skips = {s.name: 0 for s in specs}
        self._starved: deque[str] = deque()

    def pick(self, free: int, has_tasks: Callable[[str], bool] | None = None) -> Pick:
        """`has_tasks(name)` peeks a queue (e.g. queues.get_num_entries); it is asked only about
        queues that do not fit or are starved. None assumes every queue has tasks."""
        waiting = has_tasks or (lambda _name: True)
        blocked = frozenset(s.name for s in self.specs if s.min_gpus > free and waiting(s.name))
        for name in list(self._starved):
            if name not in blocked and not waiting(name):
                self._forget(name)
        for spec in self.specs:
            if spec.min_gpus > free and spec.name not in blocked:
                self._forget(spec.name)
        fitting = [s for s in self._rotation if s.min_gpus <= free]
        head = self._spec(self._starved[0]) if self._starved else None
        if head is None:
            return Pick(tuple(fitting), blocked, None)
        # CPU-only queues keep their turn (they cannot delay the head). Other GPU queues wait;
        # once the head fits they follow it, so a head with no task to start blocks nobody.
        order = tuple(s for s in fitting if s == head or not s.uses_gpus)
        held_out = tuple(s for s in fitting if s.uses_gpus and s != head)
        if head.min_gpus <= free:
            order += held_out
        return Pick(order, blocked, head, frozenset(s.name for s in held_out))

    def served(self, queue: str, pick: Pick) -> None:
        """A task from `queue` started (claimed after `pick`)."""
        spec = self._spec(queue)
        self._forget(queue)
        head = pick.holding_for
        if head is not None and head in pick.order and spec.uses_gpus and head != spec:
            self._forget(head.name)     # claims go in order: the head was tried first and had no task
        if self.round_robin:
            self._rotation.remove(spec)
            self._rotation.append(spec)
        if not spec.uses_gpus:
            return
        for name in (pick.blocked | pick.held_out) - {queue}:
            self._skips[name] += 1
            if self._skips[name] >= self.patience and name not in self._starved:
                self._starved.append(name)

    def starved(self) -> tuple[str, ...]:
        return tuple(self._starved)

    def _forget(self, name: str) -> None:
        self._skips[name] = 0
        if name in self._starved:
            self._starved.remove(name)

    def _spec(self, name: str) -> QueueSpec:
        return next(s for s in self.specs if s.name == name)

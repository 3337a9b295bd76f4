"""What the daemon may run at once: slots.

* `SingleSlot` - one task at a time, from any queue (ClearML's default daemon).
* `ServiceSlots(n)` - up to n tasks at once from any queue (`--services-mode N`).
* `GpuSlots` - each queue asks for a number (or range) of GPUs; a task is claimed only when
  its GPUs are free, and every run holds a disjoint set (`--gpus 0-7 --queue quad=4 dual=2`).
  Tasks of single-GPU queues that carry a memory request share GPUs (agent/gpus/packing.py):
  a queue whose head task fits a shared GPU is claimable even when no GPU is free.

The daemon asks `claimable(queues)` before claiming and `acquire(queue)` right after; since
only the daemon's main thread acquires, a queue that was claimable is still satisfiable.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, cast

from agent.daemon.poller import Queue
from agent.gpus.packing import Member, PackedGpus, hints, request_of

if TYPE_CHECKING:
    from agent.gpus.alloc import Allocation, GpuPlan, Pick
    from agent.gpus.inventory import GpuInventory


@dataclass
class Slot:
    name: str
    gpus: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    token: object = None   # the pool's own handle (e.g. a GPU allocation)
    request_mb: int | None = None   # packed on a shared GPU with this memory request


class SlotPool(Protocol):
    capacity: int

    def claimable(self, queues: list[Queue]) -> list[Queue]: ...

    def acquire(self, queue: Queue, request_mb: int | None = None) -> Slot: ...

    def release(self, slot: Slot) -> None: ...


class ServiceSlots:
    """n interchangeable slots. SingleSlot is ServiceSlots(1)."""

    def __init__(self, n: int = 1, env: dict[str, str] | None = None):
        if n < 1:
            raise ValueError("need at least one slot")
        self.capacity = n
        self.env = dict(env or {})
        self._free = [f"slot{i}" for i in range(n)]

    def claimable(self, queues: list[Queue]) -> list[Queue]:
        return list(queues) if self._free else []

    def acquire(self, queue: Queue, request_mb: int | None = None) -> Slot:  # noqa: ARG002 - no GPUs to pack
        return Slot(self._free.pop(0), env=dict(self.env))

    def release(self, slot: Slot) -> None:
        self._free.append(slot.name)


def SingleSlot(env: dict[str, str] | None = None) -> ServiceSlots:  # noqa: N802 - reads as a kind
    return ServiceSlots(1, env)


class GpuSlots:
    """Dynamic GPU slots: each queue's spec says how many GPUs a task takes (agent/gpu_alloc.py).
    `claimable` returns the queues that fit the free GPUs now, in the picker's order (priority
    or round-robin, with starvation protection for queues that need many GPUs)."""

    def __init__(self, plan: GpuPlan, queues: list[Queue], *, round_robin: bool = False,
                 has_tasks: Callable[[Queue], bool] | None = None, max_cpu_tasks: int = 1,
                 memory_mb: Mapping[int, int] | None = None, margin_mb: int = 1024,
                 head_request: Callable[[Queue], int | None] | None = None):
        if len(queues) != len(plan.queues):
            raise ValueError("one resolved queue per queue spec")
        self.plan = plan
        self.allocator = plan.allocator()
        self.picker = plan.picker(round_robin=round_robin)
        self._by_name = {spec.name: queue for spec, queue in zip(plan.queues, queues, strict=True)}
        self._spec = {queue.id: spec for spec, queue in zip(plan.queues, queues, strict=True)}
        self._has_tasks = has_tasks
        self._last_pick: Pick | None = None
        self.max_cpu_tasks = max_cpu_tasks
        self._cpu_running = 0
        self.capacity = max(1, len(plan.pool)) + max_cpu_tasks
        self.memory_mb = dict(memory_mb or {})
        self.packed = PackedGpus(margin_mb)
        self.head_request = head_request     # a queue's first task's request (peeked only to pack)

    def claimable(self, queues: list[Queue]) -> list[Queue]:
        queue_has_tasks = self._has_tasks
        has_tasks = (lambda name: queue_has_tasks(self._by_name[name])) if queue_has_tasks else None
        self._last_pick = self.picker.pick(self.allocator.free_count(), has_tasks=has_tasks)
        order = [self._by_name[spec.name] for spec in self._last_pick.order]
        if self._cpu_running >= self.max_cpu_tasks:  # `=0` queues always fit: cap them here
            order = [q for q in order if self._spec[q.id].uses_gpus]
        return order + self._packable([q for q in queues if q not in order])

    def _packable(self, others: list[Queue]) -> list[Queue]:
        """Single-GPU queues left out for want of a free GPU whose head task fits a shared one."""
        if self.head_request is None or not self.packed.shared:
            return []
        found = []
        for queue in others:
            spec = self._spec.get(queue.id)
            if spec is None or (spec.min_gpus, spec.max_gpus) != (1, 1):
                continue
            request = self.head_request(queue)
            if request is not None and self.packed.fits_somewhere(request):
                found.append(queue)
        return found

    def acquire(self, queue: Queue, request_mb: int | None = None) -> Slot:
        spec = self._spec[queue.id]
        packs = request_mb is not None and (spec.min_gpus, spec.max_gpus) == (1, 1)
        member = self.packed.join(request_mb) if packs and request_mb is not None else None
        if member is not None:
            host = self.packed.shared[member.gpu].host
            return self._packed_slot(host, member)
        allocation = self.allocator.try_acquire(spec)
        if allocation is None:  # cannot happen: only the claiming loop acquires, after `claimable`
            raise RuntimeError(f"no GPUs free for queue {queue.name} although it was claimable")
        if self._last_pick is not None:
            self.picker.served(spec.name, self._last_pick)
        if not spec.uses_gpus:
            self._cpu_running += 1
        device = allocation.devices[0] if len(allocation.devices) == 1 else None
        total = self.memory_mb.get(device.index, 0) if device is not None and device.mig_index is None else 0
        if packs and device is not None and request_mb is not None and request_mb + self.packed.margin_mb <= total:
            return self._packed_slot(allocation, self.packed.open(device.index, total, allocation, request_mb))
        return Slot(f"gpu{allocation.label}", gpus=tuple(allocation.gpu_indices),
                    env=self.plan.env_for(allocation), token=allocation)

    def _packed_slot(self, host: Allocation, member: Member) -> Slot:
        env = {**self.plan.env_for(host), **hints(member.request_mb, self.memory_mb[member.gpu])}
        return Slot(f"gpu{host.label}+{member.id}", gpus=tuple(host.gpu_indices), env=env, token=member,
                    request_mb=member.request_mb)

    def release(self, slot: Slot) -> None:
        if isinstance(slot.token, Member):
            host = self.packed.leave(slot.token)
            if host is not None:
                self.allocator.release(host)
            return
        allocation = cast("Allocation", slot.token)  # set by acquire() above
        if allocation is not None and not allocation.gpu_indices and self._cpu_running:
            self._cpu_running -= 1
        self.allocator.release(allocation)


@dataclass
class SlotSetup:
    """What `shipyard daemon`'s flags mean for slots: the queue names to resolve, the pool to
    build once they are resolved, and the GPU stats for status reports."""
    queue_names: list[str]
    make_pool: Callable[[list[Queue]], SlotPool]
    gpu_stats: Callable[[], dict] | None
    exact_order: bool = False
    inventory: GpuInventory | None = None     # for the daemon's GPU watch (people's processes, leases, peaks)


def slot_setup(api, names: list[str], *, gpus: str | None, cpu_only: bool, services: int | None,
               order_fairness: bool, margin_mb: int = 1024) -> SlotSetup:
    from agent.gpus.alloc import plan_gpus
    from agent.gpus.inventory import inventory_from_env

    inventory = inventory_from_env()
    plan = plan_gpus(gpus, cpu_only=cpu_only, queues=names, devices=inventory.devices())
    gpu_stats = (lambda: inventory.stats(plan.stats_indices)) if inventory.devices() else None
    if not plan.managed:   # GPUs left alone: the watch only measures (no slots to step aside with)
        return SlotSetup(names, lambda _queues: ServiceSlots(services or 1), gpu_stats,
                         inventory=inventory if inventory.devices() else None)

    def has_tasks(queue: Queue) -> bool:
        return api.call("queues.get_num_entries", {"queue": queue.id}).get("num", 0) > 0

    def head_request(queue: Queue) -> int | None:
        entries = api.call("queues.get_by_id", {"queue": queue.id}).get("queue", {}).get("entries") or []
        if not entries:
            return None
        rows = api.call("tasks.get_all", {"id": [entries[0]["task"]], "only_fields": ["runtime"]}).get("tasks") or []
        return request_of(rows[0]) if rows else None

    memory = {gpu.index: gpu.memory_total_mb for gpu in inventory.devices()}

    def make(queues: list[Queue]) -> SlotPool:
        return GpuSlots(plan, queues, round_robin=order_fairness, has_tasks=has_tasks,
                        max_cpu_tasks=max(1, services or 1), memory_mb=memory, margin_mb=margin_mb,
                        head_request=head_request)

    return SlotSetup([spec.name for spec in plan.queues], make, gpu_stats, exact_order=True,
                     inventory=inventory if inventory.devices() else None)

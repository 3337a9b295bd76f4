"""Right-sized packing: several tasks on one GPU when their memory requests fit it.

A task's request is `runtime.gpu_memory_request_mb` (tasks.clone sets it from the parent's
measured `runtime.gpu_memory_peak_mb`, so clones and HPO trials inherit it; a person may set it).
A task without one gets whole GPUs, as before. Only single-GPU queues (`name=1`) pack.

    place(rooms, request, margin)   pure: the GPU to put a request on, or None. A GPU is never
                                    committed beyond `total - margin`; among those that fit, the
                                    fullest wins (best fit), so empty GPUs stay whole for big tasks.
    PackedGpus                      the daemon's shared GPUs: each holds one whole-GPU allocation
                                    (agent/gpus/alloc.py) for as long as any member runs on it.
    usage_line(runtime)             `shipyard task show`: request vs measured peak, flagging a
                                    request far above use (FAR_ABOVE times and 1 GiB more).
    hints(request, total)           the env a packed task gets: its budget, and the knobs the
                                    frameworks honour (PyTorch's allocator, JAX's fraction, TF's growth).

Thread-safety: the daemon's claiming loop joins members; task threads leave through the slot pool,
which holds its own lock around `leave`.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

REQUEST_FIELD = "gpu_memory_request_mb"   # in the task's runtime
EXCEEDED_FIELD = "gpu_request_exceeded_mb"   # set when a packed task used more; its next run is alone


@dataclass(frozen=True)
class Room:
    gpu: int
    total_mb: int
    committed_mb: int


def fits(room: Room, request_mb: int, margin_mb: int) -> bool:
    return request_mb > 0 and room.committed_mb + request_mb + margin_mb <= room.total_mb


def place(rooms: Iterable[Room], request_mb: int, margin_mb: int) -> int | None:
    """The GPU for `request_mb`: the fullest one it still fits on; None when none has room."""
    fitting = [r for r in rooms if fits(r, request_mb, margin_mb)]
    if not fitting:
        return None
    return min(fitting, key=lambda r: (r.total_mb - r.committed_mb - request_mb, r.gpu)).gpu


def request_of(task: Mapping[str, Any]) -> int | None:
    """The task's memory request in MB, or None (whole GPUs): none set, or it outgrew one before."""
    runtime = task.get("runtime") or {}
    if runtime.get(EXCEEDED_FIELD):
        return None
    value = runtime.get(REQUEST_FIELD)
    try:
        number = int(float(str(value)))
    except ValueError:
        return None
    return number if number > 0 else None


FAR_ABOVE = 2.0
PEAK_FIELD = "gpu_memory_peak_mb"   # written by the daemon's GPU watch (agent/daemon/gpuwatch.py)


def usage_line(runtime: Mapping[str, Any]) -> str | None:
    """"request 20000 MB, measured peak 3000 MB (request far above use)"; None when neither is known."""
    request, peak = runtime.get(REQUEST_FIELD), runtime.get(PEAK_FIELD)
    if not request and not peak:
        return None
    parts = [f"request {request} MB" if request else "no request (whole GPUs)",
             f"measured peak {peak} MB" if peak else "not measured yet"]
    line = ", ".join(parts)
    if isinstance(request, (int, float)) and isinstance(peak, (int, float)) and peak > 0 \
            and request >= FAR_ABOVE * peak and request - peak >= 1024:
        line += f" (request far above use: {request / peak:.1f}x)"
    if runtime.get(EXCEEDED_FIELD):
        line += f"; outgrew its request once ({runtime[EXCEEDED_FIELD]} MB), runs alone"
    return line


def hints(request_mb: int, total_mb: int) -> dict[str, str]:
    """Env for a packed task. Only budgets and allocator behaviour: nothing here can enforce them,
    the GPU watch does (a task above its request is stopped and re-run alone)."""
    fraction = max(0.01, min(1.0, request_mb / total_mb))
    return {
        "SHIPYARD_GPU_MEMORY_REQUEST_MB": str(request_mb),
        "SHIPYARD_GPU_MEMORY_FRACTION": f"{fraction:.3f}",   # e.g. torch.cuda.set_per_process_memory_fraction
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",   # less fragmentation, less over-reservation
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{fraction:.3f}",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    }


@dataclass
class Shared:
    gpu: int
    total_mb: int
    host: Any                                   # the whole-GPU allocation kept while members run
    members: dict[int, int] = field(default_factory=dict)   # member id -> request MB

    def room(self) -> Room:
        return Room(self.gpu, self.total_mb, sum(self.members.values()))


@dataclass(frozen=True)
class Member:
    id: int
    gpu: int
    request_mb: int


class PackedGpus:
    def __init__(self, margin_mb: int):
        self.margin_mb = margin_mb
        self.shared: dict[int, Shared] = {}
        self._ids = itertools.count(1)

    def rooms(self) -> list[Room]:
        return [s.room() for s in self.shared.values()]

    def fits_somewhere(self, request_mb: int) -> bool:
        return place(self.rooms(), request_mb, self.margin_mb) is not None

    def join(self, request_mb: int) -> Member | None:
        gpu = place(self.rooms(), request_mb, self.margin_mb)
        return None if gpu is None else self._add(self.shared[gpu], request_mb)

    def open(self, gpu: int, total_mb: int, host: Any, request_mb: int) -> Member:
        """A whole GPU just allocated becomes shared, with its first member."""
        shared = self.shared.setdefault(gpu, Shared(gpu, total_mb, host))
        return self._add(shared, request_mb)

    def leave(self, member: Member) -> Any | None:
        """The member is gone; the host allocation to release when it was the last one."""
        shared = self.shared.get(member.gpu)
        if shared is None or shared.members.pop(member.id, None) is None:
            return None
        if shared.members:
            return None
        del self.shared[member.gpu]
        return shared.host

    def _add(self, shared: Shared, request_mb: int) -> Member:
        member = Member(next(self._ids), shared.gpu, request_mb)
        shared.members[member.id] = request_mb
        return member

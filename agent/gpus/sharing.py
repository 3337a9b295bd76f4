"""Who else uses the daemon's GPUs: people's processes, explicit leases, and each task's own use.

    Lease / LeaseBook   `shipyard gpu lease 1 --for 2h` writes <work_dir>/gpu-leases.json; the
                        daemon reads it on every sample. A leased GPU takes no new task until the
                        lease ends or `shipyard gpu release 1` removes it. The file is the whole
                        channel between the CLI and the daemon (same machine, same work dir).
    GpuProcess          one process NVML lists on a GPU (pid, GPU index, memory).
    Sharing             per sample: a process that is not one of the daemon's tasks (its
                        environment names no running task) marks its GPU *foreign*; the GPU
                        stays out of the daemon's hands until it has been free of such processes
                        for `idle_s` (agent.foreign_gpu_idle_s). Processes of the daemon's tasks
                        add to that task's measured peak memory (`peaks`). Running tasks are
                        never touched: the daemon only steps aside for new ones.

Nothing here calls NVML or the server; agent/daemon/gpuwatch.py feeds it and acts on it.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.errors import ConfigError

LEASE_FILE = "gpu-leases.json"
UNSEEN = "?"
"""`owner(pid)` for a pid this daemon cannot see (another pid namespace, e.g. the daemon runs in a
container): neither a task nor a person, ignored - stepping aside for every GPU would be worse."""


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu: int                        # the GPU's NVML index
    memory_mb: int
    utilization_pct: float | None = None


@dataclass(frozen=True)
class Lease:
    gpu: int
    until: float                    # epoch seconds
    by: str

    def describe(self) -> str:
        return f"GPU {self.gpu} leased by {self.by} until {time.strftime('%Y-%m-%d %H:%M', time.localtime(self.until))}"


class LeaseBook:
    """The lease file (JSON {gpu: {until, by}}), written atomically; expired leases read as absent."""

    def __init__(self, work_dir: Path):
        self.path = Path(work_dir) / LEASE_FILE

    def read(self, now: float | None = None) -> dict[int, Lease]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"GPU lease file {self.path} is unreadable ({exc}); remove it or fix it") from None
        moment = time.time() if now is None else now
        leases = {int(gpu): Lease(int(gpu), float(item["until"]), str(item.get("by") or "?"))
                  for gpu, item in raw.items()}
        return {gpu: lease for gpu, lease in leases.items() if lease.until > moment}

    def lease(self, gpu: int, seconds: float, by: str, now: float | None = None) -> Lease:
        if seconds <= 0:
            raise ConfigError(f"--for must be a positive duration, got {seconds:g}s")
        lease = Lease(gpu, (time.time() if now is None else now) + seconds, by)
        self._write({**self.read(now), gpu: lease})
        return lease

    def release(self, gpu: int) -> bool:
        leases = self.read()
        found = leases.pop(gpu, None) is not None
        self._write(leases)
        return found

    def _write(self, leases: Mapping[int, Lease]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + f".{os.getpid()}")
        partial.write_text(json.dumps({str(g): {"until": v.until, "by": v.by} for g, v in sorted(leases.items())}))
        partial.replace(self.path)


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d` or plain seconds -> seconds; ConfigError otherwise."""
    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    scale = units.get(value[-1:], 0)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ConfigError(f"--for {text!r}: expected a duration such as 90m or 2h") from None
    if seconds <= 0:
        raise ConfigError(f"--for {text!r}: the duration must be positive")
    return seconds


@dataclass
class Sharing:
    """What the samples showed. `owner(pid)` -> the daemon's task id for a process, None for
    someone else's, UNSEEN for one it cannot see."""

    idle_s: float
    foreign_seen: dict[int, float] = field(default_factory=dict)    # GPU -> last time a foreign process was on it
    foreign_pids: dict[int, tuple[int, ...]] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)              # task -> peak MB over its processes

    def observe(self, processes: Iterable[GpuProcess], owner: Callable[[int], str | None], now: float) -> None:
        per_task: dict[str, int] = {}
        foreign: dict[int, list[int]] = {}
        for proc in processes:
            task = owner(proc.pid)
            if task == UNSEEN:
                continue
            if task is None:
                foreign.setdefault(proc.gpu, []).append(proc.pid)
            else:
                per_task[task] = per_task.get(task, 0) + proc.memory_mb
        for gpu, pids in foreign.items():
            self.foreign_seen[gpu] = now
            self.foreign_pids[gpu] = tuple(sorted(pids))
        for gpu in set(self.foreign_pids) - set(foreign):
            self.foreign_pids[gpu] = ()
        for task, used in per_task.items():
            self.peaks[task] = max(self.peaks.get(task, 0), used)

    def stepped_aside(self, now: float) -> dict[int, str]:
        """GPU -> why no new task goes there (a person's process now, or lately)."""
        out = {}
        for gpu, seen in self.foreign_seen.items():
            if now - seen < self.idle_s:
                pids = self.foreign_pids.get(gpu) or ()
                out[gpu] = (f"in use by process(es) {', '.join(map(str, pids))} this agent did not start" if pids
                            else f"used by another process {now - seen:.0f}s ago; free again after {self.idle_s:g}s idle")
        return out

    def forget(self, task: str) -> int | None:
        return self.peaks.pop(task, None)


def blocked_gpus(sharing: Sharing, leases: Mapping[int, Lease], now: float) -> dict[int, str]:
    """Every GPU the daemon must not start new tasks on, and why."""
    out = sharing.stepped_aside(now)
    out.update({gpu: lease.describe() for gpu, lease in leases.items()})
    return out


def status_tags(blocked: Mapping[int, str], leases: Mapping[int, Lease]) -> list[str]:
    """The worker's system_tags that show leases and stepped-aside GPUs (`shipyard list`, workers page)."""
    tags = [f"gpu-leased:{gpu}:{lease.by}:{int(lease.until)}" for gpu, lease in sorted(leases.items())]
    tags += [f"gpu-foreign:{gpu}" for gpu in sorted(blocked) if gpu not in leases]
    return tags

"""GPU inventory: which NVIDIA GPUs (and MIG instances) this machine has, and their readings.

    GpuInventory (protocol)
    ├── NvmlInventory    the real one, through NVML (`pynvml` from nvidia-ml-py). Without the
    │                    library, the driver or a GPU it reports zero GPUs, logs why once, and
    │                    the agent runs CPU-only as on any other box.
    └── FakeInventory    in memory: tests, and `SHIPYARD_FAKE_GPUS=<n>` (a test hook, below)

`processes()` lists what runs on the GPUs (pid, GPU index, memory; agent/gpus/sharing.py uses it
to see people's processes and to measure each task's peak memory). The fake reads them from the
file `SHIPYARD_FAKE_GPU_PROCS` names: one `pid gpu memory_mb [utilization_pct]` per line; lines of
dead pids are ignored, and a fake GPU's utilization is the highest its live lines give.
`cuda_version()` is the newest CUDA version the driver supports ("12.4"), or None without a
driver; the environment builder matches torch wheels to it (sandbox/torch_resolve.py).

`devices()` is read once when the daemon starts (to resolve `--gpus` and the queue specs, see
agent.gpu_alloc); `stats(indices)` is sampled by the status reporter and returns ClearML's
machine_stats GPU fields for the daemon's GPUs, in the units clearml-agent sends:

    gpu_usage        percent busy, 0-100        one number per GPU, in the order of `indices`
    gpu_memory_used  MB (MiB) in use
    gpu_memory_free  MB (MiB) free (total - used)
    gpu_temperature  degrees Celsius

No GPUs (or a failed reading) gives `{}`: the fields are left out of the report, as
clearml-agent does on a CPU box. Like clearml-agent, readings switch themselves off after 3
failures in a row.

NVML numbers GPUs in PCI bus order, which is the order CUDA uses under
CUDA_DEVICE_ORDER=PCI_BUS_ID; so an index here is the index a task's CUDA_VISIBLE_DEVICES names.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from agent.gpus.sharing import GpuProcess
from shipyard.errors import ConfigError
from shipyard.signals import process_alive

__all__ = ["FAKE_CUDA_ENV", "FAKE_GPU_PROCS_ENV", "FAKE_GPUS_ENV", "FakeInventory", "Gpu", "GpuInventory", "MigDevice",
           "NvmlInventory",
           "inventory_from_env"]

log = logging.getLogger("shipyard.agent.gpu")

FAKE_GPUS_ENV = "SHIPYARD_FAKE_GPUS"
FAKE_GPU_PROCS_ENV = "SHIPYARD_FAKE_GPU_PROCS"
FAKE_CUDA_ENV = "SHIPYARD_FAKE_CUDA"
FAKE_CUDA_DEFAULT = "12.4"
"""The CUDA version fake GPUs' driver supports unless SHIPYARD_FAKE_CUDA says another."""
_MB = 1024 * 1024
_MAX_FAILURES = 3


@dataclass(frozen=True)
class MigDevice:
    """One MIG instance of a GPU in MIG mode. CUDA addresses it by `uuid` ("MIG-…") only."""

    uuid: str
    name: str
    memory_total_mb: int
    parent_index: int
    index: int = 0          # NVML's MIG device index on its parent: "<parent_index>:<index>"


@dataclass(frozen=True)
class Gpu:
    index: int              # NVML index == CUDA index under CUDA_DEVICE_ORDER=PCI_BUS_ID
    uuid: str               # "GPU-…"
    name: str
    memory_total_mb: int
    memory_used_mb: int
    utilization_pct: float
    temperature_c: float
    pci_bus_id: str
    mig: tuple[MigDevice, ...] = ()   # non-empty only while MIG mode is on

    @property
    def memory_free_mb(self) -> int:
        return max(0, self.memory_total_mb - self.memory_used_mb)


class GpuInventory(Protocol):
    def devices(self) -> list[Gpu]:
        """Every GPU this machine has, by index; [] on a machine without NVIDIA GPUs."""
        ...

    def stats(self, indices: Sequence[int] | None = None) -> dict[str, list[float]]:
        """machine_stats GPU fields for these GPU indices (None: all); {} when there are none."""
        ...

    def processes(self) -> list[GpuProcess]:
        """The processes on every GPU ([] when unknown)."""
        ...

    def cuda_version(self) -> str | None:
        """The newest CUDA version the driver supports ("12.4"); None without GPUs or driver."""
        ...


def stats_of(gpus: Sequence[Gpu]) -> dict[str, list[float]]:
    """ClearML's machine_stats GPU fields from readings (shared by both inventories)."""
    if not gpus:
        return {}
    return {
        "gpu_usage": [float(g.utilization_pct) for g in gpus],
        "gpu_memory_used": [float(g.memory_used_mb) for g in gpus],
        "gpu_memory_free": [float(g.memory_free_mb) for g in gpus],
        "gpu_temperature": [float(g.temperature_c) for g in gpus],
    }


# -- the real one ---------------------------------------------------------------------------
class NvmlInventory:
    """GPUs through NVML. `nvml` is the `pynvml` module; tests pass a stand-in."""

    def __init__(self, nvml: Any | None = None):
        self._nvml = nvml
        self._lock = threading.Lock()
        self._started = False
        self._failures = 0
        self.unavailable_reason: str | None = None   # why there are no GPUs, once known

    def _library(self) -> Any | None:
        """The initialised NVML module, or None (logged once) when there is no usable NVML."""
        with self._lock:
            if self._started or self.unavailable_reason is not None:
                return self._nvml if self._started else None
            try:
                if self._nvml is None:
                    import pynvml
                    self._nvml = pynvml
                self._nvml.nvmlInit()
            except ImportError as exc:
                self._unavailable(f"nvidia-ml-py is not installed ({exc})")
                return None
            except Exception as exc:  # pynvml.NVMLError: no libnvidia-ml, no driver, no device
                self._unavailable(f"NVML did not start: {_describe(exc)}")
                return None
            self._started = True
            return self._nvml

    def _unavailable(self, reason: str) -> None:
        self.unavailable_reason = reason
        log.info("no NVIDIA GPUs: %s; running CPU-only", reason)

    def devices(self) -> list[Gpu]:
        nvml = self._library()
        if nvml is None:
            return []
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            log.warning("NVML could not count GPUs: %s", _describe(exc))
            return []
        found = []
        for index in range(count):
            try:
                found.append(self._read_gpu(nvml, index, with_mig=True))
            except Exception as exc:  # a GPU that fell off the bus: leave it out, say so
                log.warning("GPU %d is not readable through NVML, leaving it out: %s", index, _describe(exc))
        return found

    def stats(self, indices: Sequence[int] | None = None) -> dict[str, list[float]]:
        nvml = self._library()
        if nvml is None or self._failures >= _MAX_FAILURES:
            return {}
        try:
            wanted = range(int(nvml.nvmlDeviceGetCount())) if indices is None else indices
            readings = [self._read_gpu(nvml, index, with_mig=False) for index in wanted]
        except Exception as exc:
            self._failures += 1
            log.warning("GPU readings failed (%d/%d): %s", self._failures, _MAX_FAILURES, _describe(exc))
            if self._failures >= _MAX_FAILURES:
                log.error("GPU readings failed %d times in a row; GPU statistics are off", _MAX_FAILURES)
            return {}
        self._failures = 0
        return stats_of(readings)

    def processes(self) -> list[GpuProcess]:
        nvml = self._library()
        if nvml is None or self._failures >= _MAX_FAILURES:
            return []
        found: list[GpuProcess] = []
        try:
            for index in range(int(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                for read in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
                    for proc in _optional([], read, handle):
                        used = getattr(proc, "usedGpuMemory", None)   # None when the driver will not say
                        found.append(GpuProcess(int(proc.pid), index, int(used or 0) // _MB))
        except Exception as exc:
            log.warning("NVML could not list GPU processes: %s", _describe(exc))
            return []
        return found

    def cuda_version(self) -> str | None:
        nvml = self._library()
        if nvml is None or not self.devices():
            return None
        try:
            version = int(nvml.nvmlSystemGetCudaDriverVersion())   # e.g. 12040
        except Exception as exc:
            log.warning("NVML could not tell the driver's CUDA version: %s", _describe(exc))
            return None
        return f"{version // 1000}.{version % 1000 // 10}"

    def close(self) -> None:
        with self._lock:
            nvml, self._started = (self._nvml if self._started else None), False
            if nvml is not None:
                try:
                    nvml.nvmlShutdown()
                except Exception as exc:
                    log.debug("nvmlShutdown: %s", _describe(exc))

    @staticmethod
    def _read_gpu(nvml: Any, index: int, *, with_mig: bool) -> Gpu:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        # Utilization and temperature are "not supported" on some boards and on MIG parents.
        rates = _optional(None, nvml.nvmlDeviceGetUtilizationRates, handle)
        temperature = _optional(0, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
        pci = _optional(None, nvml.nvmlDeviceGetPciInfo, handle)
        return Gpu(index=index, uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                   name=_text(nvml.nvmlDeviceGetName(handle)),
                   memory_total_mb=int(memory.total) // _MB, memory_used_mb=int(memory.used) // _MB,
                   utilization_pct=float(rates.gpu if rates is not None else 0), temperature_c=float(temperature),
                   pci_bus_id=_text(pci.busId) if pci is not None else "",
                   mig=NvmlInventory._read_mig(nvml, handle, index) if with_mig else ())

    @staticmethod
    def _read_mig(nvml: Any, handle: Any, parent: int) -> tuple[MigDevice, ...]:
        mode = _optional(None, nvml.nvmlDeviceGetMigMode, handle)   # [current, pending]
        if not mode or mode[0] != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
            return ()
        instances = []
        for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            mig = _optional(None, nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
            if mig is None:   # NVML_ERROR_NOT_FOUND: no instance in this slot
                continue
            instances.append(MigDevice(uuid=_text(nvml.nvmlDeviceGetUUID(mig)), name=_text(nvml.nvmlDeviceGetName(mig)),
                                       memory_total_mb=int(nvml.nvmlDeviceGetMemoryInfo(mig).total) // _MB,
                                       parent_index=parent, index=slot))
        return tuple(instances)


def _optional(default: Any, read: Callable[..., Any], *args: Any) -> Any:
    try:
        return read(*args)
    except Exception:  # pynvml.NVMLError_NotSupported / _NotFound and friends
        return default


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- the in-memory one ----------------------------------------------------------------------
class FakeInventory:
    """`n` made-up GPUs. `mig`: MIG instances per GPU (one number for all, or {index: count})."""

    def __init__(self, n: int = 0, *, mig: int | Mapping[int, int] = 0, memory_total_mb: int = 81_559,
                 name: str = "Fake GPU", procs_file: str | None = None, cuda: str = FAKE_CUDA_DEFAULT):
        if n < 0:
            raise ValueError(f"a fake inventory needs n >= 0 GPUs, got {n}")
        counts = mig if isinstance(mig, Mapping) else {i: mig for i in range(n)}
        self._lock = threading.Lock()
        self.procs_file = procs_file
        self._cuda = cuda
        self._gpus = [self._make(i, name, memory_total_mb, counts.get(i, 0)) for i in range(n)]

    @staticmethod
    def _make(index: int, name: str, memory_mb: int, mig_count: int) -> Gpu:
        slices = tuple(MigDevice(uuid=f"MIG-fa6e{index:04x}-0000-4000-8000-{slot:012x}",
                                 name=f"{name} MIG 1g.{memory_mb // max(mig_count, 1) // 1024}gb",
                                 memory_total_mb=memory_mb // max(mig_count, 1), parent_index=index, index=slot)
                       for slot in range(mig_count))
        return Gpu(index=index, uuid=f"GPU-fa6e0000-0000-4000-8000-{index:012x}", name=name,
                   memory_total_mb=memory_mb, memory_used_mb=0, utilization_pct=0.0, temperature_c=30.0,
                   pci_bus_id=f"00000000:{0x10 + index:02X}:00.0", mig=slices)

    def devices(self) -> list[Gpu]:
        with self._lock:
            return list(self._gpus)

    def stats(self, indices: Sequence[int] | None = None) -> dict[str, list[float]]:
        procs = self.processes()
        with self._lock:
            gpus = self._gpus if indices is None else [self._gpus[i] for i in indices if 0 <= i < len(self._gpus)]
        if procs:
            gpus = [_with_processes(g, [p for p in procs if p.gpu == g.index]) for g in gpus]
        return stats_of(gpus)

    def processes(self) -> list[GpuProcess]:
        if not self.procs_file:
            return []
        try:
            text = Path(self.procs_file).read_text()
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and all(p.replace(".", "", 1).isdigit() for p in parts) and process_alive(int(parts[0])):
                found.append(GpuProcess(int(parts[0]), int(parts[1]), int(parts[2]),
                                        float(parts[3]) if len(parts) > 3 else None))
        return found

    def cuda_version(self) -> str | None:
        return self._cuda if self._gpus else None

    def set_reading(self, index: int, *, utilization_pct: float | None = None, memory_used_mb: int | None = None,
                    temperature_c: float | None = None) -> None:
        """Change what the fake GPU `index` reads (tests of the stats path)."""
        with self._lock:
            gpu = self._gpus[index]
            self._gpus[index] = replace(
                gpu, utilization_pct=gpu.utilization_pct if utilization_pct is None else utilization_pct,
                memory_used_mb=gpu.memory_used_mb if memory_used_mb is None else memory_used_mb,
                temperature_c=gpu.temperature_c if temperature_c is None else temperature_c)


def _with_processes(gpu: Gpu, procs: Sequence[GpuProcess]) -> Gpu:
    """A fake GPU's reading with its listed processes: their memory, their highest utilization."""
    if not procs:
        return gpu
    util = max((p.utilization_pct or 0.0) for p in procs)
    return replace(gpu, memory_used_mb=gpu.memory_used_mb + sum(p.memory_mb for p in procs),
                   utilization_pct=max(gpu.utilization_pct, util))


def inventory_from_env(environ: Mapping[str, str] | None = None) -> GpuInventory:
    """The machine's inventory; `SHIPYARD_FAKE_GPUS=<n>` swaps in n fake GPUs, whose driver
    supports CUDA `SHIPYARD_FAKE_CUDA` (major.minor, default FAKE_CUDA_DEFAULT).

    The variable is a TEST HOOK: it lets end-to-end tests drive `--gpus` and dynamic GPU
    slots on a machine without GPUs (tasks get CUDA_VISIBLE_DEVICES naming GPUs that do not
    exist). Never set it on a real worker.
    """
    env = os.environ if environ is None else environ
    value = env.get(FAKE_GPUS_ENV, "").strip()
    if not value:
        return NvmlInventory()
    if not value.isdigit():
        raise ConfigError(f"{FAKE_GPUS_ENV} must be a number of fake GPUs, got {value!r}")
    cuda = env.get(FAKE_CUDA_ENV, "").strip() or FAKE_CUDA_DEFAULT
    if not re.fullmatch(r"\d+\.\d+", cuda):
        raise ConfigError(f"{FAKE_CUDA_ENV} must be a CUDA version like 12.4, got {cuda!r}")
    log.warning("%s=%s: using %s fake GPUs (driver CUDA %s; a test hook; never set it on a real worker)",
                FAKE_GPUS_ENV, value, value, cuda)
    return FakeInventory(int(value), procs_file=env.get(FAKE_GPU_PROCS_ENV) or None, cuda=cuda)


_DRIVER_CUDA: dict[str, str | None] = {}


def driver_cuda_version() -> str | None:
    """The CUDA version this machine's driver supports (the inventory `inventory_from_env` picks),
    read once per process: the driver does not change under a running agent."""
    if "cuda" not in _DRIVER_CUDA:
        _DRIVER_CUDA["cuda"] = inventory_from_env().cuda_version()
    return _DRIVER_CUDA["cuda"]

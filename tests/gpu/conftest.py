"""A stand-in for the `pynvml` module, so NvmlInventory's reading code runs without a GPU."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


class NotFound(NVMLError):
    pass


@dataclass
class FakeBoard:
    uuid: str
    name: str
    total_mb: int
    used_mb: int = 0
    util: int | None = 0            # None: "not supported" (as on a GPU in MIG mode)
    temp: int = 40
    bus_id: bytes = b"00000000:00:00.0"
    mig: dict[int, FakeBoard] | None = None   # slot -> instance; None: MIG mode off / unsupported
    procs: list[tuple[int, int | None]] = field(default_factory=list)   # (pid, used bytes or None)
    lost: bool = False              # every call on it fails (a GPU that fell off the bus)


@dataclass
class FakeNvml:
    boards: list[FakeBoard] = field(default_factory=list)
    init_error: Exception | None = None
    calls: list[str] = field(default_factory=list)
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVMLError = NVMLError

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeBoard:
        return self._ok(self.boards[index])

    @staticmethod
    def _ok(board: FakeBoard) -> FakeBoard:
        if board.lost:
            raise NVMLError("GPU is lost")
        return board

    def nvmlDeviceGetUUID(self, h: FakeBoard) -> str:
        return self._ok(h).uuid

    def nvmlDeviceGetName(self, h: FakeBoard) -> bytes:   # old bindings return bytes
        return self._ok(h).name.encode()

    def nvmlDeviceGetMemoryInfo(self, h: FakeBoard) -> Any:
        b = self._ok(h)
        return SimpleNamespace(total=b.total_mb << 20, used=b.used_mb << 20, free=(b.total_mb - b.used_mb) << 20)

    def nvmlDeviceGetUtilizationRates(self, h: FakeBoard) -> Any:
        if self._ok(h).util is None:
            raise NotSupported("Not Supported")
        return SimpleNamespace(gpu=h.util, memory=0)

    def nvmlDeviceGetTemperature(self, h: FakeBoard, sensor: int) -> int:
        return self._ok(h).temp

    def nvmlDeviceGetPciInfo(self, h: FakeBoard) -> Any:
        return SimpleNamespace(busId=self._ok(h).bus_id)

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeBoard) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self._ok(h).procs]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: FakeBoard) -> list[Any]:
        raise NotSupported("Not Supported")

    def nvmlDeviceGetMigMode(self, h: FakeBoard) -> list[int]:
        if self._ok(h).mig is None:
            raise NotSupported("Not Supported")
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: FakeBoard) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: FakeBoard, slot: int) -> FakeBoard:
        instance = (h.mig or {}).get(slot)
        if instance is None:
            raise NotFound("Not Found")
        return instance


@pytest.fixture()
def fake_nvml() -> FakeNvml:
    """Two boards: GPU 0 plain and busy; GPU 1 in MIG mode with instances in slots 0 and 2."""
    mig = {slot: FakeBoard(f"MIG-1111-{slot}", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864) for slot in (0, 2)}
    return FakeNvml([
        FakeBoard("GPU-aaaa", "NVIDIA H100 80GB HBM3", 81559, used_mb=1024, util=57, temp=61,
                  bus_id=b"00000000:1B:00.0"),
        FakeBoard("GPU-bbbb", "NVIDIA A100-SXM4-40GB", 40960, used_mb=11, util=None, temp=33,
                  bus_id=b"00000000:3D:00.0", mig=mig),
    ])

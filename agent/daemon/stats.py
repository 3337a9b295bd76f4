"""Machine statistics for workers.status_report, in ClearML's `machine_stats` fields.

Sampled by the reporter thread; the window average is sent. GPU fields come from the GPU
inventory when one is attached (the GPU issue plugs in there).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import psutil

_MB = 1024 * 1024


class StatsSampler:
    def __init__(self, disk_path: Path | None = None, gpu_stats: Callable[[], dict] | None = None):
        self.disk_path = str(disk_path or Path.home())
        self.gpu_stats = gpu_stats
        self._last_io = self._io_counters()
        self._last_time = time.monotonic()
        psutil.cpu_percent(percpu=True)  # prime: the first call returns 0.0

    @staticmethod
    def _io_counters() -> tuple[float, float, float, float]:
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        return (disk.read_bytes if disk else 0, disk.write_bytes if disk else 0,
                net.bytes_recv if net else 0, net.bytes_sent if net else 0)

    def _disk_free_percent(self) -> float:
        path = Path(self.disk_path)
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return round(100.0 - psutil.disk_usage(str(path)).percent, 1)
        except OSError:
            return 0.0

    def sample(self) -> dict:
        now = time.monotonic()
        io = self._io_counters()
        elapsed = max(now - self._last_time, 1e-3)
        rates = [max(0.0, (b - a) / elapsed / _MB) for a, b in zip(self._last_io, io, strict=True)]
        self._last_io, self._last_time = io, now
        memory = psutil.virtual_memory()
        cpus = psutil.cpu_percent(percpu=True) or [0.0]
        stats = {
            "cpu_usage": [round(sum(cpus) / len(cpus), 2)],
            "memory_used": round((memory.total - memory.available) / _MB, 1),
            "memory_free": round(memory.available / _MB, 1),
            "disk_free_home": self._disk_free_percent(),
            "disk_read": round(rates[0], 3), "disk_write": round(rates[1], 3),
            "network_rx": round(rates[2], 3), "network_tx": round(rates[3], 3),
        }
        if self.gpu_stats is not None:
            stats.update(self.gpu_stats())
        return stats

"""GpuInventory: NVML on this (GPU-less) machine, NVML through a stand-in, the fake, the env hook."""
from __future__ import annotations

import logging
import os
import sys

import pytest

from agent.gpus.inventory import FakeInventory, Gpu, MigDevice, NvmlInventory, inventory_from_env
from agent.gpus.sharing import GpuProcess
from shipyard.errors import ConfigError
from tests.gpu.conftest import FakeNvml

FIELDS = {"gpu_usage", "gpu_memory_used", "gpu_memory_free", "gpu_temperature"}


def test_nvml_on_a_machine_without_gpus_is_empty_and_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    real = NvmlInventory()
    if real.devices():
        pytest.skip("this machine has NVIDIA GPUs")
    with caplog.at_level(logging.INFO, logger="shipyard.agent.gpu"):
        assert real.devices() == [] and real.stats() == {} and real.stats([0]) == {}
    assert real.unavailable_reason
    real.close()


def test_missing_library_degrades_to_zero_gpus(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)   # makes `import pynvml` raise ImportError
    inventory = NvmlInventory()
    with caplog.at_level(logging.INFO, logger="shipyard.agent.gpu"):
        assert inventory.devices() == [] and inventory.devices() == [] and inventory.stats() == {}
    assert "not installed" in (inventory.unavailable_reason or "")
    assert len([r for r in caplog.records if "no NVIDIA GPUs" in r.message]) == 1


def test_driver_error_degrades_to_zero_gpus(fake_nvml: FakeNvml) -> None:
    fake_nvml.init_error = fake_nvml.NVMLError("Driver Not Loaded")
    inventory = NvmlInventory(fake_nvml)
    assert inventory.devices() == [] and inventory.stats() == {}
    assert "Driver Not Loaded" in (inventory.unavailable_reason or "")
    assert fake_nvml.calls == ["init"]   # tried once, not on every call


def test_nvml_reads_gpus_and_mig_instances(fake_nvml: FakeNvml) -> None:
    gpus = NvmlInventory(fake_nvml).devices()
    assert gpus[0] == Gpu(0, "GPU-aaaa", "NVIDIA H100 80GB HBM3", 81559, 1024, 57.0, 61.0, "00000000:1B:00.0")
    assert gpus[1].utilization_pct == 0.0 and gpus[1].pci_bus_id == "00000000:3D:00.0"
    assert gpus[1].mig == (
        MigDevice("MIG-1111-0", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864, parent_index=1, index=0),
        MigDevice("MIG-1111-2", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 4864, parent_index=1, index=2))


def test_nvml_stats_are_clearml_fields_in_mb_percent_and_celsius(fake_nvml: FakeNvml) -> None:
    inventory = NvmlInventory(fake_nvml)
    assert inventory.stats([1, 0]) == {"gpu_usage": [0.0, 57.0], "gpu_memory_used": [11.0, 1024.0],
                                       "gpu_memory_free": [40949.0, 80535.0], "gpu_temperature": [33.0, 61.0]}
    assert inventory.stats()["gpu_usage"] == [57.0, 0.0]
    assert inventory.stats([]) == {}
    inventory.close()
    assert fake_nvml.calls == ["init", "shutdown"]


def test_a_lost_gpu_is_left_out_and_stats_switch_off_after_three_failures(fake_nvml: FakeNvml) -> None:
    fake_nvml.boards[0].lost = True
    inventory = NvmlInventory(fake_nvml)
    assert [g.index for g in inventory.devices()] == [1]
    assert [inventory.stats([0]) for _ in range(3)] == [{}, {}, {}]
    fake_nvml.boards[0].lost = False
    assert inventory.stats([0]) == {}   # off for good, as clearml-agent does


def test_one_failure_does_not_switch_stats_off(fake_nvml: FakeNvml) -> None:
    inventory = NvmlInventory(fake_nvml)
    fake_nvml.boards[0].lost = True
    assert inventory.stats([0]) == {} and inventory.stats([0]) == {}
    fake_nvml.boards[0].lost = False
    assert inventory.stats([0])["gpu_usage"] == [57.0]
    fake_nvml.boards[0].lost = True
    assert inventory.stats([0]) == {} and inventory.stats([0]) == {}
    fake_nvml.boards[0].lost = False
    assert inventory.stats([0])["gpu_usage"] == [57.0]   # the count restarts after a good reading


@pytest.mark.parametrize("n", [0, 1, 8])
def test_fake_inventory(n: int) -> None:
    inventory = FakeInventory(n)
    gpus = inventory.devices()
    assert [g.index for g in gpus] == list(range(n))
    assert len({g.uuid for g in gpus}) == n and all(g.uuid.startswith("GPU-") for g in gpus)
    assert all(not g.mig for g in gpus)
    assert inventory.stats() == ({} if n == 0 else {"gpu_usage": [0.0] * n, "gpu_memory_used": [0.0] * n,
                                                    "gpu_memory_free": [81559.0] * n, "gpu_temperature": [30.0] * n})


def test_fake_inventory_mig_and_readings() -> None:
    inventory = FakeInventory(2, mig={1: 7}, memory_total_mb=40960)
    gpus = inventory.devices()
    assert gpus[0].mig == ()
    assert [(m.parent_index, m.index) for m in gpus[1].mig] == [(1, i) for i in range(7)]
    assert all(m.uuid.startswith("MIG-") and m.memory_total_mb == 40960 // 7 for m in gpus[1].mig)
    assert len({m.uuid for m in gpus[1].mig} | {g.uuid for g in gpus}) == 9
    inventory.set_reading(1, utilization_pct=99, memory_used_mb=40000, temperature_c=80)
    assert inventory.stats([1]) == {"gpu_usage": [99.0], "gpu_memory_used": [40000.0], "gpu_memory_free": [960.0],
                                    "gpu_temperature": [80.0]}
    assert set(FakeInventory(1, mig=2).stats()) == FIELDS
    with pytest.raises(ValueError):
        FakeInventory(-1)


def test_inventory_from_env() -> None:
    assert isinstance(inventory_from_env({}), NvmlInventory)
    assert isinstance(inventory_from_env({"SHIPYARD_FAKE_GPUS": ""}), NvmlInventory)
    fake = inventory_from_env({"SHIPYARD_FAKE_GPUS": "8"})
    assert isinstance(fake, FakeInventory) and len(fake.devices()) == 8
    assert inventory_from_env({"SHIPYARD_FAKE_GPUS": "0"}).devices() == []
    with pytest.raises(ConfigError, match="SHIPYARD_FAKE_GPUS"):
        inventory_from_env({"SHIPYARD_FAKE_GPUS": "two"})


def test_nvml_lists_gpu_processes(fake_nvml: FakeNvml, tmp_path) -> None:
    fake_nvml.boards[0].procs = [(4242, 3 << 30), (4343, None)]   # None: the driver will not say
    assert NvmlInventory(fake_nvml).processes() == [GpuProcess(4242, 0, 3072), GpuProcess(4343, 0, 0)]
    listed = tmp_path / "procs"
    listed.write_text(f"{os.getpid()} 1 2048 40\n999999999 0 100\nnot a line\n")
    fake = FakeInventory(2, procs_file=str(listed))
    assert fake.processes() == [GpuProcess(os.getpid(), 1, 2048, 40.0)]      # dead pids drop out
    assert fake.stats()["gpu_usage"] == [0.0, 40.0] and fake.stats()["gpu_memory_used"] == [0.0, 2048.0]

"""The CUDA version the driver supports, from NVML (a stand-in), the fake inventory and its env hook."""
from __future__ import annotations

import pytest

from agent.gpus.inventory import FakeInventory, NvmlInventory, inventory_from_env
from shipyard.errors import ConfigError
from tests.gpu.conftest import FakeNvml


def test_fake_inventory_and_nvml_report_the_drivers_cuda(fake_nvml: FakeNvml, monkeypatch):
    assert FakeInventory(2, cuda="12.2").cuda_version() == "12.2"
    assert FakeInventory(0).cuda_version() is None
    assert inventory_from_env({"SHIPYARD_FAKE_GPUS": "1", "SHIPYARD_FAKE_CUDA": "11.8"}).cuda_version() == "11.8"
    assert inventory_from_env({"SHIPYARD_FAKE_GPUS": "1"}).cuda_version() == "12.4"
    with pytest.raises(ConfigError, match="SHIPYARD_FAKE_CUDA"):
        inventory_from_env({"SHIPYARD_FAKE_GPUS": "1", "SHIPYARD_FAKE_CUDA": "twelve"})
    monkeypatch.setattr(fake_nvml, "nvmlSystemGetCudaDriverVersion", lambda: 12040, raising=False)
    assert NvmlInventory(fake_nvml).cuda_version() == "12.4"

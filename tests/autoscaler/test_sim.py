"""The simulator (bench/bench_autoscaler_sim.py) in small: deterministic, and the budget holds."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_autoscaler_sim.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("bench_autoscaler_sim", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_four_hours_of_bursts_within_the_budget(sim):
    tight = sim.simulate("shipyard", seed=3, hours=4, month="tight")
    again = sim.simulate("shipyard", seed=3, hours=4, month="tight")
    assert tight == again
    assert tight["over_hour_s"] == 0 and tight["over_queue_s"] == 0 and tight["month_over"] == 0
    assert tight["cost"] <= sim.MONTH_CAP - sim.MONTH_SPENT["tight"]
    room = sim.simulate("shipyard", seed=3, hours=4)
    assert room["done"] == room["total"] > 0 and room["over_hour_s"] == 0

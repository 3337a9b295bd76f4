"""Config loading (the documented example, errors that name the key) and the month ledger."""
from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.budget import Ledger, month_of
from autoscaler.config import load_config, parse_config
from autoscaler.state import ScalerState, StateFile
from shipyard.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "autoscaler.conf"

MINIMAL = {"provider": "local", "resources": {"cpu": {"price_on_demand": 0.1}}, "queues": {"q": [["cpu", 2]]}}


def test_documented_example_loads():
    config = load_config(EXAMPLE)
    policy = config.policy
    assert config.provider == "aws" and config.poll_s <= 10
    assert [(r.resource, r.max_instances) for r in policy.queues["gpu"]] == [("gpu-a10", 8), ("gpu-a100", 1)]
    assert policy.resources["gpu-a10"].spot and policy.resources["gpu-a10"].price_spot == 0.45
    assert policy.resources["cpu"].queues == ("cpu",) and policy.resources["cpu"].warm == 1
    assert policy.budget.max_per_hour == 45.0 and policy.budget.queue_max_per_hour == {"gpu": 40.0}
    assert config.drain_s == 15 and config.agent.api_host.startswith("https://")


def test_minimal_config_defaults():
    config = parse_config(MINIMAL)
    assert config.policy.idle_timeout_s == 300 and config.policy.spot_fallback_after == 3
    assert config.policy.resources["cpu"].queues == ("q",)
    assert config.drain_s == config.agent.long_poll_s + 5


@pytest.mark.parametrize("patch,message", [
    ({"poll_s": 30}, "poll_s: must be a number >= 0.05 and <= 10"),
    ({"idle_timout_s": 5}, "unknown key(s) idle_timout_s"),
    ({"provider": "gcp"}, "provider: must be 'aws' or 'local'"),
    ({"resources": {"cpu": {"price_on_demand": "cheap"}}}, "resources.cpu.price_on_demand: must be a number"),
    ({"resources": {"cpu": {"price_on_demand": 1, "spot": True}}}, "resources.cpu.price_spot: required"),
    ({"resources": {"cpu": {}}}, "resources.cpu.price_on_demand: required"),
    ({"queues": {"q": [["gpu", 1]]}}, "queues.q[0].resource: unknown resource type 'gpu'"),
    ({"budget": {"queues": {"nope": 1}}}, "budget.queues.nope: not a configured queue"),
    ({"provider": "aws"}, "resources.cpu.image_id: required with provider = aws"),
])
def test_config_errors_name_the_key(patch, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, **patch})
    assert message in str(err.value)


def ts(year: int, month: int, day: int, hour: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, 0, 0)))


def test_ledger_accrues_instance_hours_and_splits_at_the_month_boundary():
    ledger = Ledger()
    ledger.charge("gpu", 2.0, ts(2026, 5, 31, 22), ts(2026, 5, 31, 23))
    assert ledger.month == "2026-05" and ledger.spent == pytest.approx(2.0)
    ledger.charge("gpu", 2.0, ts(2026, 5, 31, 23), ts(2026, 6, 1, 1))  # one hour each side
    assert ledger.month == "2026-06" and ledger.spent == pytest.approx(2.0)
    assert ledger.history["2026-05"] == pytest.approx(4.0)
    assert ledger.by_queue == {"gpu": pytest.approx(2.0)}
    assert ledger.current(ts(2026, 6, 15)) == pytest.approx(2.0) and ledger.current(ts(2026, 7, 1)) == 0.0
    assert month_of(ts(2026, 12, 31, 23)) == "2026-12"


def test_state_survives_a_restart(tmp_path):
    state = ScalerState()
    state.ledger.charge("q", 1.5, ts(2026, 5, 1), ts(2026, 5, 1, 2))
    state.spot_failures["gpu"] = [1.0, 2.0]
    StateFile(tmp_path / "s.json").save(state)
    again = StateFile(tmp_path / "s.json").load()
    assert again.ledger.spent == pytest.approx(3.0) and again.spot_failures == {"gpu": [1.0, 2.0]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError):
        StateFile(tmp_path / "bad.json").load()


def test_one_autoscaler_per_state_file(tmp_path):
    fd = StateFile(tmp_path / "s.json").lock()
    try:
        with pytest.raises(ConfigError, match="another autoscaler"):
            StateFile(tmp_path / "s.json").lock()
    finally:
        os.close(fd)
    os.close(StateFile(tmp_path / "s.json").lock())


def test_cli_needs_a_config_and_status_works_without_a_server(tmp_path):
    from tests.helpers import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SHIPYARD_"))}
    env.update({"HOME": str(tmp_path), "CLEARML_API_HOST": f"http://127.0.0.1:{free_port()}",
                "CLEARML_API_ACCESS_KEY": "A", "CLEARML_API_SECRET_KEY": "B"})

    def shipyard(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shipyard", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    assert shipyard("autoscaler").returncode == 2
    conf = tmp_path / "a.conf"
    conf.write_text(json.dumps({**MINIMAL, "state_file": str(tmp_path / "state.json"),
                                "local": {"work_dir": str(tmp_path / "m")}}))
    done = shipyard("autoscaler", "status", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert "fleet: 0 instance(s)" in done.stdout and "next decisions: unknown (server:" in done.stdout

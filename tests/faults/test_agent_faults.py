"""Agents killed at every phase, a server killed mid-run, network cuts around the lease."""
from __future__ import annotations

import signal
import time

import pytest

from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.faults.common import (
    faulty_agent,
    kill9,
    marker_params,
    no_orphans,
    run_recording_task,
    runs,
    script,
    wait_for,
)
from tests.faults.conftest import record
from tests.faults.proxy import CuttableProxy
from tests.helpers import start_server


@pytest.fixture()
def server(tmp_path):
    srv = start_server(tmp_path / "server", env={"SHIPYARD_REAPER_INTERVAL_S": "0.2"})
    yield srv
    srv.stop()


@pytest.mark.parametrize("phase", ["after_claim", "during_build", "during_run", "during_log_flush"])
def test_agent_killed(server, tmp_path, runs_dir, phase):
    api = server.api()
    marker = f"fault-{phase}-{time.time_ns()}"
    faults = "" if phase == "during_run" else phase
    agent_a = faulty_agent(server, tmp_path, "kills", "agent-a", faults)
    task = create_task(api, f"kill-{phase}", script(run_recording_task(runs_dir, 2.0)), queue="kills",
                       hyperparams=marker_params(marker))
    if phase == "during_run":
        wait_for(lambda: runs(runs_dir, task)[0] == 1)
    else:
        wait_for(lambda: (tmp_path / "agent-a" / "faults" / phase).exists())
    killed_at = time.monotonic()
    kill9(agent_a)
    assert no_orphans(marker), "the task process outlived its agent"
    agent_b = faulty_agent(server, tmp_path, "kills", "agent-b")
    try:
        doc = wait_status(api, task, timeout=120)
        recovered_s = time.monotonic() - killed_at
    finally:
        agent_b.stop()
    starts, ends = runs(runs_dir, task)
    record(f"agent kill -9 {phase.replace('_', ' ')}", 1, int(doc["status"] != "completed"), max(0, ends - 1),
           int(doc["status"] == "completed"), recovered_s)
    assert doc["status"] == "completed", doc["status_reason"]
    assert ends == 1 and starts <= 2
    attempts = doc["shipyard_attempts"]
    assert len(attempts) == 2 and attempts[0]["worker"] == "agent-a:0" and attempts[1]["worker"] == "agent-b:0"
    assert attempts[0]["end"].startswith("infrastructure")
    assert no_orphans(marker)


def test_server_killed_mid_run(tmp_path, runs_dir):
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path / "a", SHIPYARD_LEASE_S="60")
    agent = start_daemon(env, ["srvkill"], tmp_path / "a.log")
    try:
        task = create_task(api, "server-kill", script(run_recording_task(runs_dir, 6.0, ticks=200)), queue="srvkill")
        wait_for(lambda: runs(runs_dir, task)[0] == 1)
        time.sleep(1)
        server.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(3)
        server = start_server(tmp_path / "server", ports=server.ports)
        api = server.api()
        doc = wait_status(api, task, timeout=120)
        ticks = [line for line in task_log(api, task) if line.startswith("tick ")]
        record("server kill -9 and restart mid-run", 1, int(doc["status"] != "completed"), 0,
               int(doc["status"] == "completed"), time.monotonic() - killed_at)
        assert doc["status"] == "completed", doc["status_reason"]
        assert ticks == [f"tick {i}" for i in range(200)]
        assert runs(runs_dir, task) == (1, 1)
    finally:
        agent.stop()
        server.stop()


@pytest.mark.parametrize("cut_s", [1.5, 9.0], ids=["shorter-than-lease", "longer-than-lease"])
def test_network_cut(server, tmp_path, runs_dir, cut_s):
    api = server.api()
    proxy = CuttableProxy(server.ports[0])
    marker = f"fault-cut-{time.time_ns()}"
    env = agent_env(server, tmp_path / "a", SHIPYARD_LEASE_S="4", CLEARML_API_HOST=proxy.url)
    agent = start_daemon(env, ["cut"], tmp_path / "a.log")
    try:
        task = create_task(api, "cut", script(run_recording_task(runs_dir, 6.0, ticks=60)), queue="cut",
                           hyperparams=marker_params(marker))
        wait_for(lambda: runs(runs_dir, task)[0] == 1)
        proxy.cut()
        cut_at = time.monotonic()
        time.sleep(cut_s)
        proxy.restore()
        doc = wait_status(api, task, timeout=120)
        starts, ends = runs(runs_dir, task)
        record(f"network cut {cut_s:g}s (lease 4s)", 1, int(doc["status"] != "completed"), max(0, ends - 1),
               int(doc["status"] == "completed"), time.monotonic() - cut_at)
        assert doc["status"] == "completed", doc["status_reason"]
        assert ends == 1
        if cut_s < 4:
            assert starts == 1 and len(doc["shipyard_attempts"]) == 1
            ticks = [line for line in task_log(api, task) if line.startswith("tick ")]
            assert ticks == [f"tick {i}" for i in range(60)]
        else:  # the agent killed its own child; the server re-queued; the second attempt completed
            assert starts == 2 and len(doc["shipyard_attempts"]) == 2
        assert no_orphans(marker)
    finally:
        agent.stop()
        proxy.close()


def test_build_longer_than_the_lease_keeps_the_task(server, tmp_path, runs_dir):
    """The lease is renewed from the claim on, so a slow environment build does not lose the task."""
    api = server.api()
    agent = faulty_agent(server, tmp_path, "slowbuild", "agent", SHIPYARD_FAULT_DELAY_DURING_BUILD="7")
    try:
        task = create_task(api, "slow-build", script(run_recording_task(runs_dir, 0.1)), queue="slowbuild")
        doc = wait_status(api, task, timeout=120)
        assert doc["status"] == "completed", doc["status_reason"]
        assert len(doc["shipyard_attempts"]) == 1 and runs(runs_dir, task) == (1, 1)
    finally:
        agent.stop()

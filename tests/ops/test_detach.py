"""`shipyard daemon --detached` and `--stop [--force]`: real processes, a real server, real tasks."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.daemon.detach import is_daemon, read_pid
from tests.agent_helpers import agent_env, create_task, make_repo, wait_status

WORKER = "ops-detach:0"


def shipyard(env: dict, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shipyard", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture()
def rig(server, tmp_path):
    env = agent_env(server, tmp_path, CLEARML_WORKER_ID=WORKER)
    files = tmp_path / "work" / "daemons"
    repo, commit = make_repo(tmp_path / "repo", {"slow.py": (
        "import sys, time\nprint('started', flush=True)\ntime.sleep(float(sys.argv[-1]))\nprint('finished')\n")})
    yield {"env": env, "pid_file": files / "ops-detach_0.pid", "log": files / "ops-detach_0.log",
           "script": {"repository": str(repo), "version_num": commit, "entry_point": "slow.py"}}
    pid = read_pid(files / "ops-detach_0.pid")
    if pid is not None and is_daemon(pid):  # a failed test must not leave a daemon behind
        os.kill(pid, 9)


def _start(rig, queue: str) -> int:
    result = shipyard(rig["env"], "daemon", "--create-queue", "--queue", queue, "--detached")
    assert result.returncode == 0, result.stdout + result.stderr
    pid = read_pid(rig["pid_file"])
    assert f"daemon detached: pid {pid}" in result.stdout and is_daemon(pid)
    return pid


def _running_task(api, rig, queue: str, seconds: float) -> str:
    task = create_task(api, f"detach-{queue}", rig["script"], queue=queue,
                       hyperparams={"Args": {"sleep": {"section": "Args", "name": "sleep", "value": str(seconds)}}})
    wait_status(api, task, statuses={"in_progress"}, timeout=60)
    deadline = time.monotonic() + 60
    while "running:" not in rig["log"].read_text():  # started its process, not only claimed
        assert time.monotonic() < deadline, rig["log"].read_text()
        time.sleep(0.1)
    return task


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_daemon(pid):
            return True
        time.sleep(0.1)
    return False


def test_detached_then_stop_drains_the_running_task(api, rig):
    # Given a detached daemon running a task
    pid = _start(rig, "ops-drain")
    task = _running_task(api, rig, "ops-drain", 10)  # outlasts a slow `--stop` start
    # When it is stopped
    stop = shipyard(rig["env"], "daemon", "--stop")
    # Then the task still ends completed, the daemon exits and its pid file goes with it
    assert stop.returncode == 0, stop.stderr
    assert f"sent SIGTERM (drain) to daemon pid {pid}" in stop.stdout
    assert wait_status(api, task, timeout=60)["status"] == "completed"
    assert _gone(pid) and not rig["pid_file"].exists()
    assert "draining: waiting for 1 running task(s)" in rig["log"].read_text()


def test_stop_force_aborts_the_running_task(api, rig):
    pid = _start(rig, "ops-force")
    task = _running_task(api, rig, "ops-force", 300)
    stop = shipyard(rig["env"], "daemon", "--stop", "--force")
    assert stop.returncode == 0, stop.stderr
    assert "SIGTERM twice (abort)" in stop.stdout and f"daemon pid {pid} stopped" in stop.stdout
    # The task is aborted: `stopped`, or with a lease handed back to its queue for another agent.
    doc = wait_status(api, task, statuses={"stopped", "queued", "failed", "completed"}, timeout=60)
    assert doc["status"] in ("stopped", "queued") and "agent_shutdown" in doc["status_reason"], doc
    assert _gone(pid) and not rig["pid_file"].exists()


def test_one_detached_daemon_per_worker_id(rig):
    pid = _start(rig, "ops-once")
    again = shipyard(rig["env"], "daemon", "--queue", "ops-once", "--detached")
    assert again.returncode == 2 and f"already runs (pid {pid})" in again.stderr
    assert shipyard(rig["env"], "daemon", "--stop").returncode == 0
    assert _gone(pid)


def test_stop_without_a_daemon_and_with_a_stale_pid_file(rig):
    absent = shipyard(rig["env"], "daemon", "--stop")
    assert absent.returncode == 0 and "no detached daemon runs" in absent.stdout
    # A pid file left by a daemon killed with -9, its pid now someone else's (this test's)
    rig["pid_file"].parent.mkdir(parents=True, exist_ok=True)
    rig["pid_file"].write_text(f"{os.getpid()}\n")
    stale = shipyard(rig["env"], "daemon", "--stop")
    assert stale.returncode == 0 and "was stale" in stale.stdout
    assert not rig["pid_file"].exists()


def test_a_daemon_that_cannot_start_reports_why(rig):
    env = {**rig["env"], "CLEARML_API_SECRET_KEY": "wrong"}
    result = shipyard(env, "daemon", "--queue", "ops-fail", "--detached")
    assert result.returncode == 4, result.stdout + result.stderr  # AuthError's exit code, from the child
    assert "exited with code 4 before it listened" in result.stderr
    assert not rig["pid_file"].exists()


def test_force_needs_stop(rig):
    result = shipyard(rig["env"], "daemon", "--force")
    assert result.returncode == 2 and "--force goes with --stop" in result.stderr


def test_files_are_named_after_the_worker_id(tmp_path):
    from agent.daemon.detach import DaemonFiles
    from shipyard.client.config import load_settings

    settings = load_settings(env={"HOME": str(tmp_path), "CLEARML_WORKER_ID": "gpu box/1:0",
                                  "SHIPYARD_WORK_DIR": str(tmp_path / "w")})
    files = DaemonFiles.of(settings)
    assert files.pid == Path(tmp_path / "w" / "daemons" / "gpu_box_1_0.pid")
    assert files.log.name == "gpu_box_1_0.log"

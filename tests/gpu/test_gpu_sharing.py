"""GPUs shared with people, end to end on fake GPUs (SHIPYARD_FAKE_GPUS) whose process list is a
file (SHIPYARD_FAKE_GPU_PROCS: `pid gpu memory_mb [util]` lines; dead pids drop out):

* a process the daemon did not start makes it step aside from that GPU (the task waits, queued,
  and starts once the GPU has been idle for agent.foreign_gpu_idle_s);
* `shipyard gpu lease 0 --for 1h` does the same on purpose, shows in `shipyard list`, and
  `shipyard gpu release 0` gives the GPU back;
* the idle-GPU policy stops one task and flags another; a task's own GPU process is measured
  into its runtime.gpu_memory_peak_mb."""
from __future__ import annotations

import subprocess
import time

import pytest

from agent.gpus.idle import IdleRule, IdleTracker, parse_rules
from agent.gpus.sharing import UNSEEN, GpuProcess, Lease, Sharing, blocked_gpus, parse_duration
from tests.agent_helpers import agent_env, create_task, run_cli, start_daemon, task_log, wait_status
from tests.helpers import start_server

QUICK = {"repository": "", "entry_point": "p.py", "diff": "print('ran')\n"}


def _wait_output(daemon, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.output():
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.2)


def _stays_queued(api, task: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "queued"
        time.sleep(0.3)


def test_daemon_steps_aside_for_people_and_leases(tmp_path):
    procs = tmp_path / "gpu-procs.txt"
    person = subprocess.Popen(["sleep", "120"])
    procs.write_text(f"{person.pid} 0 3000 90\n")
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="1", SHIPYARD_FAKE_GPU_PROCS=str(procs),
                    SHIPYARD_STATUS_REPORT_S="0.5", SHIPYARD_FOREIGN_GPU_IDLE_S="1.5", SHIPYARD_LONG_POLL_S="1")
    daemon = start_daemon(env, [], tmp_path / "d.log", "--gpus", "0", "--queue", "q=1")
    try:
        first = create_task(api, "while-a-person-works", QUICK, queue="q")
        _stays_queued(api, first, 3)
        assert "GPU 0: no new task goes there: in use by process(es)" in daemon.output()
        person.kill()
        person.wait()
        assert wait_status(api, first, timeout=60)["status"] == "completed"   # idle 1.5 s after the person left

        assert "leased by ada until" in run_cli(env, "gpu", "lease", "0", "--for", "1h", "--by", "ada")
        _wait_output(daemon, "GPU 0: no new task goes there: GPU 0 leased by ada")
        time.sleep(1.5)    # a claim already waiting on the queue (agent.long_poll_s) may still take one task
        second = create_task(api, "while-leased", QUICK, queue="q")
        _stays_queued(api, second, 2)
        assert "gpu 0 leased by ada until" in run_cli(env, "list")
        assert "GPU 0 leased by ada" in run_cli(env, "gpu", "leases")
        assert "GPU 0 released" in run_cli(env, "gpu", "release", "0")
        assert wait_status(api, second, timeout=60)["status"] == "completed"
    finally:
        person.kill()
        daemon.stop()
        server.stop()


IDLE = ("import os, time\nopen({procs!r}, 'a').write(f'{{os.getpid()}} {{int(os.environ[\"CUDA_VISIBLE_DEVICES\"])}} "
        "{mb} 0\\n')\ntime.sleep({sleep})\nprint('slept')\n")


@pytest.mark.nightly
def test_idle_policy_stops_and_flags_and_peaks_are_measured(tmp_path):
    procs = tmp_path / "gpu-procs.txt"
    procs.write_text("")
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="2", SHIPYARD_FAKE_GPU_PROCS=str(procs),
                    SHIPYARD_STATUS_REPORT_S="0.5",
                    SHIPYARD_QUEUE_IDLE_GPU='{"stopq": "5,0.05,stop", "flagq": "5,0.05,flag"}')
    daemon = start_daemon(env, [], tmp_path / "d.log", "--gpus", "0-1", "--queue", "stopq=1", "flagq=1")
    try:
        script = {"repository": "", "entry_point": "p.py"}
        stopped = create_task(api, "idle-stop", {**script, "diff": IDLE.format(procs=str(procs), mb=700, sleep=120)},
                              queue="stopq")
        flagged = create_task(api, "idle-flag", {**script, "diff": IDLE.format(procs=str(procs), mb=1234, sleep=8)},
                              queue="flagq")
        doc = wait_status(api, stopped, timeout=90)
        assert doc["status"] == "stopped", doc["status_reason"]
        assert "stayed below 5% busy for 0.05 min" in doc["status_reason"]
        assert "idle-GPU policy" in task_log(api, stopped)[-1]
        doc = wait_status(api, flagged, timeout=90)
        assert doc["status"] == "completed", doc["status_reason"]
        assert "stayed below 5% busy" in doc["runtime"]["gpu_idle_flagged"]
        assert doc["runtime"]["gpu_memory_peak_mb"] == 1234
        assert any("flagged: its GPUs stayed below" in line for line in task_log(api, flagged))
    finally:
        daemon.stop()
        server.stop()


def test_sharing_and_idle_decisions():
    sharing = Sharing(idle_s=60)
    ours = {10: "t1", 11: "t1"}
    sharing.observe([GpuProcess(10, 0, 500), GpuProcess(11, 1, 300), GpuProcess(99, 1, 50)], ours.get, now=0)
    assert sharing.peaks == {"t1": 800}
    assert set(blocked_gpus(sharing, {}, now=30)) == {1}
    sharing.observe([GpuProcess(10, 0, 200)], ours.get, now=40)
    assert sharing.peaks == {"t1": 800} and set(blocked_gpus(sharing, {}, now=59)) == {1}
    assert blocked_gpus(sharing, {}, now=61) == {}
    assert set(blocked_gpus(sharing, {0: Lease(0, 500, "ada")}, now=101)) == {0}
    unseen = Sharing(idle_s=60)      # pids of another pid namespace: neither ours nor a person's
    unseen.observe([GpuProcess(5, 0, 10)], lambda _pid: UNSEEN, now=0)
    assert blocked_gpus(unseen, {}, now=1) == {}
    assert parse_duration("2h") == 7200 and parse_duration("90m") == 5400 and parse_duration("30") == 30

    rules = parse_rules({"q": "10,1,stop"})
    assert rules == {"q": IdleRule(10, 1, "stop")}
    tracker = IdleTracker(rules)
    assert [tracker.sample("t", "q", util, now) for util, now in ((0, 0), (50, 30), (0, 40), (5, 99))] == [None] * 4
    assert tracker.sample("t", "q", 0, 100) == rules["q"]   # 60 s below 10 % since t=40
    assert tracker.sample("t", "q", 0, 200) is None         # acted once
    assert tracker.sample("u", "other", 0, 1000) is None    # no rule: off
    for bad in ("10,1", "0,1,stop", "10,1,kill", "x,1,flag"):
        try:
            parse_rules({"q": bad})
        except Exception as exc:  # noqa: BLE001
            assert "agent.queue_idle_gpu['q']" in str(exc)
        else:
            raise AssertionError(bad)

"""End to end: a real server, a real agent daemon, the scheduler in-process (patched clock) and as
`shipyard scheduler run`. Scheduled and triggered clones are run by the agent; a crash between
"clone" and "enqueue", and a restart after downtime, neither lose nor repeat a firing."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from scheduler.launcher import FIRE_TAG_PREFIX
from scheduler.state import FireStatus, StateStore
from scheduler.task_scheduler import TaskScheduler
from scheduler.trigger_scheduler import TriggerScheduler
from shipyard import clock
from shipyard.client.api import ApiClient
from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.helpers import ACCESS_KEY, SECRET_KEY, start_server

QUEUE = "sched-e2e"
ECHO = {"repository": "", "entry_point": "echo.py", "diff": "import sys\nprint('args', ' '.join(sys.argv[1:]))\n"}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("sched-e2e")
    server = start_server(root / "server")
    env = agent_env(server, root)
    daemon = start_daemon(env, [QUEUE], root / "daemon.log")
    client = ApiClient(server.api_url, ACCESS_KEY, SECRET_KEY)
    yield {"server": server, "api": server.api(), "client": client, "env": env, "root": root}
    client.close()
    daemon.stop()
    server.stop()


@pytest.fixture()
def base(rig):
    """A draft to clone: prints its Args."""
    params = {"Args": {"who": {"section": "Args", "name": "who", "value": "base"}}}
    return create_task(rig["api"], f"echo-{time.time_ns()}", ECHO, hyperparams=params)


@pytest.fixture()
def at(monkeypatch):
    """Set the scheduler's clock: at('01:00:01') is 2024-01-01 01:00:01 UTC."""
    def set_time(hhmm: str) -> None:
        moment = datetime.fromisoformat(f"2024-01-01 {hhmm}").replace(tzinfo=timezone.utc).timestamp()
        monkeypatch.setattr(clock, "now", lambda: moment)

    return set_time


def clones(api, base_id):
    return api.call("tasks.get_all", {"parent": [base_id], "only_fields": ["id", "status", "system_tags", "tags"]})[
        "tasks"]


def hourly(rig, state_dir, base_id, client=None, **options):
    tasks = TaskScheduler(client or rig["client"], StateStore.open(state_dir))
    tasks.add_task(name="hourly", schedule_task_id=base_id, queue=QUEUE, cron="0 * * * *",
                   task_parameters={"Args/who": "scheduled", "Args/planned": "${schedule.planned}"}, **options)
    return tasks


def test_a_schedule_enqueues_a_clone_and_the_agent_runs_it(rig, base, tmp_path, at):
    api = rig["api"]
    at("00:59:30")
    assert hourly(rig, tmp_path, base).step() == []
    at("01:00:01")
    [(fire, outcome)] = hourly(rig, tmp_path, base).step()
    assert outcome.status is FireStatus.FIRED
    doc = wait_status(api, outcome.task_id, timeout=180)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "args --who scheduled --planned 2024-01-01T01:00:00.000+00:00" in "\n".join(task_log(api, outcome.task_id))
    assert doc["tags"] == ["hourly"] and any(t.startswith(FIRE_TAG_PREFIX) for t in doc["system_tags"])
    original = api.call("tasks.get_by_id", {"task": base})["task"]
    assert original["status"] == "created" and original["hyperparams"]["Args"]["who"]["value"] == "base"


def test_a_trigger_fires_when_another_task_completes(rig, base, tmp_path):
    api = rig["api"]
    triggers = TriggerScheduler(rig["client"], StateStore.open(tmp_path))
    triggers.add_task_trigger(name="after-upstream", schedule_task_id=base, schedule_queue=QUEUE,
                              trigger_name="^upstream-", trigger_on_status=["completed"],
                              task_parameters={"Args/who": "${task.id}"})
    assert triggers.step() == []
    upstream = create_task(api, f"upstream-{time.time_ns()}", ECHO, queue=QUEUE)
    unrelated = create_task(api, f"other-{time.time_ns()}", ECHO, queue=QUEUE)
    assert wait_status(api, upstream)["status"] == "completed"
    assert wait_status(api, unrelated)["status"] == "completed"
    [(fire, outcome)] = triggers.step()
    assert fire.key.startswith(f"{upstream}@completed@") and outcome.status is FireStatus.FIRED
    assert wait_status(api, outcome.task_id, timeout=180)["status"] == "completed"
    assert f"args --who {upstream}" in "\n".join(task_log(api, outcome.task_id))
    assert triggers.step() == [] and [c["id"] for c in clones(api, base)] == [outcome.task_id]


class Crash(BaseException):
    """The process dies here (not an error the scheduler could handle)."""


class CrashOnEnqueue:
    def __init__(self, client):
        self.client = client

    def call(self, endpoint, data=None, **options):
        if endpoint == "tasks.enqueue":
            raise Crash()
        return self.client.call(endpoint, data, **options)


def test_a_restart_in_the_middle_neither_loses_nor_repeats_a_firing(rig, base, tmp_path, at):
    api = rig["api"]
    at("00:59:30")
    hourly(rig, tmp_path, base).step()
    at("01:00:01")
    with pytest.raises(Crash):  # cloned, then died before the enqueue
        hourly(rig, tmp_path, base, client=CrashOnEnqueue(rig["client"])).step()
    [draft] = clones(api, base)
    assert draft["status"] == "created"

    restarted = hourly(rig, tmp_path, base)
    [(fire, outcome)] = restarted.step()
    assert outcome.task_id == draft["id"] and fire.attempts == 1  # one earlier (interrupted) attempt
    assert [c["id"] for c in clones(api, base)] == [draft["id"]]  # finished, not cloned again
    assert wait_status(api, draft["id"], timeout=180)["status"] == "completed"
    assert restarted.step() == []

    at("04:20:00")  # down from 01:00 to 04:20: 02:00, 03:00 and 04:00 were missed; 'latest' fires one
    [(fire, outcome)] = hourly(rig, tmp_path, base).step()
    assert fire.key == "2024-01-01T04:00:00.000+00:00" and outcome.status is FireStatus.FIRED
    assert hourly(rig, tmp_path, base).step() == []
    assert wait_status(api, outcome.task_id, timeout=180)["status"] == "completed"
    assert len(clones(api, base)) == 2
    history = StateStore.open(tmp_path).history("schedule:hourly")
    assert [(f.key[11:16], f.status.value) for f in history] == [
        ("04:00", "fired"), ("03:00", "skipped"), ("02:00", "skipped"), ("01:00", "fired")]
    assert history[-1].attempts == 2


def _cli(rig, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "shipyard", "scheduler", *args], env=rig["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_the_cli_runs_lists_and_shows_and_a_restart_does_not_repeat(rig, base, tmp_path):
    config = tmp_path / "scheduler.conf"
    config.write_text(json.dumps({
        "scheduler": {"state_dir": "state", "poll_interval_s": 1},
        "schedules": [{"name": "now", "task_id": base, "queue": QUEUE, "cron": "0 0 1 1 *",
                       "execute_immediately": True, "parameters": {"Args/who": "cli"}}],
    }))
    for _ in range(2):
        done = _cli(rig, "run", "--once", "--config", str(config))
        assert done.returncode == 0, done.stderr
    [clone] = clones(rig["api"], base)
    assert wait_status(rig["api"], clone["id"])["status"] == "completed"
    listed = _cli(rig, "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert "now" in listed.stdout and f"fired {clone['id']} (completed)" in listed.stdout
    shown = _cli(rig, "show", "now", "--config", str(config))
    assert shown.returncode == 0 and clone["id"] in shown.stdout and "1 fired" in shown.stdout
    assert _cli(rig, "show", "nope", "--config", str(config)).returncode == 2

    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        running = subprocess.Popen([sys.executable, "-m", "shipyard", "scheduler", "run", "--config", str(config)],
                                   env=rig["env"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "Scheduler: running" not in log_path.read_text() and running.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        second = _cli(rig, "run", "--once", "--config", str(config))
        assert second.returncode == 2 and "another scheduler" in second.stderr
        running.send_signal(signal.SIGTERM)
        assert running.wait(30) == 0, log_path.read_text()
    finally:
        if running.poll() is None:
            running.kill()
    assert "Scheduler: stopped" in log_path.read_text()
    assert len(clones(rig["api"], base)) == 1

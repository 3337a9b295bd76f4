"""The real clearml-agent (3.0.3, its own venv) pulls tasks from a Shipyard queue and runs them.

This is the end-to-end proof of protocol fidelity (CLEARML_API.md §3.12): the agent daemon
registers, polls `queues.get_next_task`, marks the task started, its `execute` child clones a
local git repo, builds a venv with pip, writes back requirements and the resolved commit, runs
the script (which uses the clearml SDK in remote mode), forwards the console to the task log and
marks the task completed / failed, or kills it when the task is aborted (`tasks.stop`).

One server and one daemon serve the whole module (venv mode, one task at a time). No network:
the task venv gets `clearml==2.1.12` from the wheelhouse `python -m tests.peers` downloads
(PIP_NO_INDEX), and the agent's venv cache lives under `$SHIPYARD_PEERS_DIR/agent-cache`.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import peers
from tests.compat.conftest import bad_lines, clean_env, make_repo
from tests.helpers import start_server

pytestmark = [pytest.mark.compat, pytest.mark.slow, pytest.mark.timeout(600)]

TASK_DEADLINE_S = 300
WORKER = f"compat-agent-{os.getpid()}:0"  # unique per run: clearml-agent refuses a second live instance of one id

GOOD_PY = textwrap.dedent("""\
    import sys

    from clearml import Task

    task = Task.init(project_name="ignored-under-agent", task_name="ignored-under-agent")
    params = task.connect({"greeting": "hello", "repeat": 2})
    for i in range(int(params["repeat"])):
        print("AGENT TASK SAYS", params["greeting"], i, flush=True)
        task.get_logger().report_scalar("progress", "steps", float(i + 1), i)
    print("stderr from the task", file=sys.stderr, flush=True)
    task.upload_artifact("summary", artifact_object={"greeting": params["greeting"]})
    print("AGENT TASK DONE", task.id, flush=True)
""")

FAIL_PY = textwrap.dedent("""\
    from clearml import Task

    task = Task.init(project_name="ignored-under-agent", task_name="ignored-under-agent")
    print("ABOUT TO FAIL", flush=True)
    raise RuntimeError("deliberate failure")
""")

LOOP_PY = textwrap.dedent("""\
    import time

    from clearml import Task

    task = Task.init(project_name="ignored-under-agent", task_name="ignored-under-agent")
    for i in range(600):
        print("LOOPING", i, flush=True)
        time.sleep(0.5)
    print("LOOP FINISHED UNEXPECTEDLY", flush=True)
""")


def agent_config(server, home: Path, cache: Path) -> str:
    return peers.clearml_agent_conf(server, WORKER, python_binary=sys.executable, venvs_dir=home / "venvs-builds",
                                    cache_dir=cache, vcs_dir=home / "vcs-cache", cache_entries=4, free_space_gb=0.0,
                                    agent_extra="reload_config: false\n")


class AgentRun:
    """A Shipyard server, a git repo with the task scripts, and a clearml-agent daemon on 'default'."""

    def __init__(self, root: Path, agent_bin: Path, wheels: Path):
        self.root = root
        self.server = start_server(root / "srv")
        self.api = self.server.api()
        self.repo = root / "repo"
        self.sha = make_repo(self.repo, {"good.py": GOOD_PY, "fail.py": FAIL_PY, "loop.py": LOOP_PY})
        self.project = self.api.call("projects.create", {"name": "compat-agent"})["id"]
        self.queue = self.api.call("queues.get_default", {})["id"]
        home = root / "home"
        cache = peers.peers_dir() / "agent-cache"
        cache.mkdir(parents=True, exist_ok=True)
        config = agent_config(self.server, home, cache)
        # pip (run by the agent in the task's venv) installs from the pre-downloaded wheels only
        self.env = clean_env(home, {**self.server.env(), "PIP_CACHE_DIR": str(cache / "pip-cache"),
                                    "PIP_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1",
                                    "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, config_text=config)
        self.log_path = root / "agent.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(agent_bin), "--config-file", self.env["CLEARML_CONFIG_FILE"], "daemon", "--queue", "default",
                 "--foreground"], cwd=root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def enqueue(self, name: str, entry_point: str, params: dict[str, str] | None = None) -> str:
        task = self.api.call("tasks.create", {
            "name": name, "type": "training", "project": self.project,
            "script": {"repository": f"file://{self.repo}", "branch": "main", "entry_point": entry_point,
                       "working_dir": ".", "binary": f"python{sys.version_info.major}.{sys.version_info.minor}",
                       "requirements": {"pip": "clearml==2.1.12\n"}},
            "hyperparams": {"General": {k: {"section": "General", "name": k, "value": v, "type": "str"}
                                        for k, v in (params or {}).items()}},
        })["id"]
        assert self.api.call("tasks.enqueue", {"task": task, "queue": self.queue})["queued"] == 1
        return task

    def status(self, task_id: str) -> dict:
        return self.api.call("tasks.get_all", {"id": [task_id], "only_fields": [
            "status", "status_message", "status_reason"]})["tasks"][0]

    def wait_for(self, task_id: str, statuses: tuple[str, ...], timeout: float = TASK_DEADLINE_S) -> dict:
        deadline = time.monotonic() + timeout
        task = {}
        while time.monotonic() < deadline and self.proc.poll() is None:
            task = self.status(task_id)
            if task["status"] in statuses:
                return task
            time.sleep(1)
        pytest.fail(f"task {task_id} not in {statuses} after {timeout:.0f}s: {task}\n{self.context(task_id)}",
                    pytrace=False)

    def log(self, task_id: str) -> str:
        events = self.api.call("events.get_task_log", {"task": task_id, "batch_size": 10000,
                                                       "navigate_earlier": False, "order": "asc"})["events"]
        return "\n".join(e.get("msg", "") for e in events)

    def agent_output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def context(self, task_id: str) -> str:
        return (f"--- agent output (tail) ---\n{self.agent_output()[-6000:]}\n"
                f"--- task log (tail) ---\n{self.log(task_id)[-4000:]}")

    def stop_agent(self) -> None:
        proc = self.proc
        for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the group (a task process, pip)
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(10)

    def stop(self) -> None:
        self.stop_agent()
        self.server.stop()


@pytest.fixture(scope="module")
def agent(agent_bin, agent_wheels, tmp_path_factory):
    run = AgentRun(tmp_path_factory.mktemp("agent"), agent_bin, agent_wheels)
    yield run
    run.stop()


def test_agent_runs_enqueued_task(agent):
    api = agent.api
    started = time.monotonic()
    task_id = agent.enqueue("agent-run", "good.py", {"greeting": "from-shipyard", "repeat": "3"})
    agent.wait_for(task_id, ("completed", "failed", "stopped"))
    elapsed = time.monotonic() - started
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    task_log = agent.log(task_id)
    context = f"after {elapsed:.0f}s: {task['status']} {task['status_reason']!r}\n{agent.context(task_id)}"

    assert task["status"] == "completed", context
    assert WORKER in [w["id"] for w in api.call("workers.get_all", {})["workers"]]
    # the task's own output, forwarded by the agent, with the server-side parameter values
    for i in range(3):
        assert f"AGENT TASK SAYS from-shipyard {i}" in task_log, context
    assert "stderr from the task" in task_log, context
    assert f"AGENT TASK DONE {task_id}" in task_log, context
    # what the agent wrote back (relies on tasks.edit merging `script`)
    assert task["script"]["version_num"] == agent.sha, context
    assert task["script"]["repository"] == f"file://{agent.repo}"
    assert task["script"]["entry_point"] == "good.py"
    assert "clearml" in json.dumps(task["script"]["requirements"].get("pip")), task["script"]["requirements"]
    assert task["last_worker"] == WORKER
    assert task["runtime"].get("_exec_agent_hostname"), task["runtime"]
    assert task["hyperparams"]["General"]["greeting"]["value"] == "from-shipyard"
    # what the SDK inside the task reported
    hist = api.call("events.scalar_metrics_iter_histogram", {"task": task_id, "key": "iter"})
    assert hist["progress"]["steps"]["y"] == pytest.approx([1.0, 2.0, 3.0]), hist
    artifacts = {a["key"]: a for a in task["execution"]["artifacts"]}
    assert "summary" in artifacts, task["execution"]
    got = api.http.get(artifacts["summary"]["uri"], headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
    assert got.status_code == 200 and json.loads(got.content) == {"greeting": "from-shipyard"}
    assert api.call("queues.get_by_id", {"queue": agent.queue})["queue"]["entries"] == []
    problems = bad_lines(agent.agent_output() + task_log)
    assert not problems, "\n".join(problems) + "\n" + context


def test_agent_marks_failing_task_failed(agent):
    task_id = agent.enqueue("agent-fail", "fail.py")
    final = agent.wait_for(task_id, ("completed", "failed", "stopped"))
    task_log = agent.log(task_id)
    assert final["status"] == "failed", agent.context(task_id)
    assert "ABOUT TO FAIL" in task_log
    assert "RuntimeError: deliberate failure" in task_log, agent.context(task_id)


def test_agent_aborts_task_on_stop(agent):
    api = agent.api
    task_id = agent.enqueue("agent-abort", "loop.py")
    agent.wait_for(task_id, ("in_progress",))
    deadline = time.monotonic() + TASK_DEADLINE_S
    while "LOOPING 2" not in agent.log(task_id):  # the script itself is running (not pip)
        assert time.monotonic() < deadline and agent.status(task_id)["status"] == "in_progress", \
            agent.context(task_id)
        time.sleep(1)
    # an agent-run task with a live worker is not stopped at once: the server flags it and the
    # agent, polling the status, kills the process and reports it stopped
    stop = api.call("tasks.stop", {"task": task_id})
    assert stop["fields"].get("status_message") == "stopping", stop
    final = agent.wait_for(task_id, ("stopped", "failed", "completed"), timeout=90)
    assert final["status"] == "stopped", (final, agent.context(task_id))
    time.sleep(2)
    assert "LOOP FINISHED UNEXPECTEDLY" not in agent.log(task_id)



DEV_PY = textwrap.dedent("""\
    import argparse

    from clearml import Task

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)

    if __name__ == "__main__":
        task = Task.init(project_name="compat-agent", task_name="recorded")
        args = parser.parse_args()
        print("RUNNING WITH LR", args.lr, flush=True)
        task.get_logger().report_scalar("lr", "value", args.lr, 0)
        print("TASK_ID", task.id, flush=True)
""")

CLONE_AND_ENQUEUE_PY = textwrap.dedent("""\
    import sys

    from clearml import Task

    source = Task.get_task(task_id=sys.argv[1])
    clone = Task.clone(source_task=source, name="recorded-clone")
    clone.set_parameters({"Args/lr": 0.25})
    Task.enqueue(clone, queue_name="default")
    print("CLONE_ID", clone.id, flush=True)
""")


def test_agent_reproduces_task_recorded_by_the_sdk(agent, sdk_python, tmp_path):
    """The everyday ClearML loop: run locally with uncommitted changes, clone, override a
    parameter, enqueue; the agent checks out the recorded commit, applies the recorded diff and
    runs it with the server-side parameter."""
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = tmp_path / "work"
    sha = make_repo(work, {"dev.py": DEV_PY}, origin=f"file://{origin}",
                    uncommitted={"dev.py": DEV_PY.replace("RUNNING WITH LR", "RUNNING PATCHED WITH LR")})
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "main"], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(work), "branch", "-q", "--set-upstream-to=origin/main"], check=True,
                   capture_output=True)
    env = clean_env(tmp_path / "sdk-home", agent.server.env())

    def sdk(script: Path, *args: str) -> str:
        proc = subprocess.run([str(sdk_python), str(script), *args], check=False, cwd=work, env=env, timeout=180,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.returncode == 0 and not bad_lines(proc.stdout), proc.stdout
        return proc.stdout

    local = sdk(work / "dev.py", "--lr", "0.5")
    assert "RUNNING PATCHED WITH LR 0.5" in local
    source_id = next(line.split()[1] for line in local.splitlines() if line.startswith("TASK_ID "))
    source = agent.api.call("tasks.get_by_id", {"task": source_id})["task"]
    assert source["script"]["repository"] == f"file://{origin}"
    assert source["script"]["version_num"] == sha and "RUNNING PATCHED" in source["script"]["diff"]

    (tmp_path / "enqueue.py").write_text(CLONE_AND_ENQUEUE_PY)
    out = sdk(tmp_path / "enqueue.py", source_id)
    clone_id = next(line.split()[1] for line in out.splitlines() if line.startswith("CLONE_ID "))
    final = agent.wait_for(clone_id, ("completed", "failed", "stopped"))
    task_log = agent.log(clone_id)
    assert final["status"] == "completed", agent.context(clone_id)
    assert "RUNNING PATCHED WITH LR 0.25" in task_log, agent.context(clone_id)
    clone = agent.api.call("tasks.get_by_id", {"task": clone_id})["task"]
    assert clone["parent"] == source_id
    assert clone["hyperparams"]["Args"]["lr"]["value"] == "0.25"
    assert clone["script"]["version_num"] == sha


def test_agent_picks_up_next_task_and_unregisters(agent):
    # after an abort the daemon is idle again and takes the next task
    task_id = agent.enqueue("agent-again", "good.py", {"repeat": "1"})
    assert agent.wait_for(task_id, ("completed", "failed", "stopped"))["status"] == "completed", \
        agent.context(task_id)
    assert "AGENT TASK SAYS hello 0" in agent.log(task_id)
    agent.stop_agent()  # SIGINT: the daemon unregisters on its way out
    workers = agent.api.call("workers.get_all", {})["workers"]
    assert WORKER not in [w["id"] for w in workers], workers
    # nothing the daemon printed over the whole module points at a protocol problem
    problems = bad_lines(agent.agent_output(), tracebacks=False)
    assert not problems, "\n".join(problems)

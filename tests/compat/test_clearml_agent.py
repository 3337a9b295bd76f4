"""The real clearml-agent (3.0.3, its own venv) pulls a task from a Shipyard queue and runs it.

This is the end-to-end proof of protocol fidelity (CLEARML_API.md §3.12): the agent daemon
registers, polls `queues.get_next_task`, marks the task started, its `execute` child clones a
local git repo, builds a venv with pip, writes back requirements and the resolved commit, runs
the script (which uses the clearml SDK in remote mode), forwards the console to the task log and
marks the task completed.

PyPI must be reachable the first time (the task venv gets `clearml==2.1.12`); pip downloads and
the agent's venv cache live under `$SHIPYARD_PEERS_DIR/agent-cache`, so later runs reuse them.
"""
from __future__ import annotations

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
from tests.helpers import ACCESS_KEY, SECRET_KEY

pytestmark = [pytest.mark.compat, pytest.mark.slow, pytest.mark.timeout(600)]

TASK_DEADLINE_S = 300

TASK_SCRIPT = textwrap.dedent("""\
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


def agent_config(server, home: Path, cache: Path) -> str:
    return textwrap.dedent(f"""\
        api {{
            api_server: {server.api_url}
            web_server: {server.web_url}
            files_server: {server.files_url}
            credentials {{ access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
        }}
        agent {{
            worker_id: "compat-agent:0"
            python_binary: "{sys.executable}"
            package_manager {{
                type: pip
                system_site_packages: false
            }}
            venvs_dir: {home / "venvs-builds"}
            venvs_cache {{
                max_entries: 4
                free_space_threshold_gb: 0.0
                path: {cache / "venvs-cache"}
            }}
            vcs_cache {{ enabled: true, path: {home / "vcs-cache"} }}
            pip_download_cache {{ enabled: true, path: {cache / "pip-download-cache"} }}
            reload_config: false
        }}
        sdk {{
            development {{ report_use_subprocess: false }}
        }}
    """)


def _wait_status(api, task_id: str, deadline: float, agent: subprocess.Popen) -> dict:
    task = {}
    while time.monotonic() < deadline:
        task = api.call("tasks.get_all", {"id": [task_id], "only_fields": ["status", "status_message",
                                                                          "status_reason"]})["tasks"][0]
        if task["status"] in ("completed", "failed", "stopped"):
            return task
        if agent.poll() is not None:
            break
        time.sleep(2)
    return task


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the agent's children (task process) live in the same process group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_agent_runs_enqueued_task(fresh_server, agent_bin, tmp_path):
    server, api = fresh_server, fresh_server.api()
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"agent_task.py": TASK_SCRIPT})

    project = api.call("projects.create", {"name": "compat-agent"})["id"]
    task_id = api.call("tasks.create", {
        "name": "agent-run", "type": "training", "project": project,
        "script": {"repository": f"file://{repo}", "branch": "main", "entry_point": "agent_task.py",
                   "working_dir": ".", "binary": f"python{sys.version_info.major}.{sys.version_info.minor}",
                   "requirements": {"pip": "clearml==2.1.12\n"}},
        "hyperparams": {"General": {"greeting": {"section": "General", "name": "greeting",
                                                 "value": "from-shipyard", "type": "str"},
                                    "repeat": {"section": "General", "name": "repeat", "value": "3",
                                               "type": "int"}}},
    })["id"]
    queue = api.call("queues.get_default", {})
    assert api.call("tasks.enqueue", {"task": task_id, "queue": queue["id"]})["queued"] == 1

    home = tmp_path / "home"
    cache = peers.peers_dir() / "agent-cache"
    cache.mkdir(parents=True, exist_ok=True)
    config = home / "clearml.conf"
    env = clean_env(home, {**server.env(), "PIP_CACHE_DIR": str(cache / "pip-cache"),
                           "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                    config_text=agent_config(server, home, cache))
    env["CLEARML_CONFIG_FILE"] = str(config)
    config.write_text(agent_config(server, home, cache))
    log_path = tmp_path / "agent.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        agent = subprocess.Popen([str(agent_bin), "--config-file", str(config), "daemon", "--queue", "default",
                                  "--foreground"], cwd=tmp_path, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        final = _wait_status(api, task_id, started + TASK_DEADLINE_S, agent)
        workers = api.call("workers.get_all", {})["workers"]
    finally:
        _stop(agent)
    elapsed = time.monotonic() - started
    agent_output = log_path.read_text(errors="replace")
    task = api.call("tasks.get_by_id", {"task": task_id})["task"]
    events = api.call("events.get_task_log", {"task": task_id, "batch_size": 5000,
                                              "navigate_earlier": False, "order": "asc"})["events"]
    task_log = "\n".join(e.get("msg", "") for e in events)
    context = (f"after {elapsed:.0f}s: task={json.dumps(final)}\n--- agent output (tail) ---\n"
               f"{agent_output[-6000:]}\n--- task log (tail) ---\n{task_log[-4000:]}")

    assert final.get("status") == "completed", context
    assert "compat-agent:0" in [w["id"] for w in workers], context
    # the task's own output, forwarded by the agent, with the server-side parameter values
    for i in range(3):
        assert f"AGENT TASK SAYS from-shipyard {i}" in task_log, context
    assert "stderr from the task" in task_log, context
    assert f"AGENT TASK DONE {task_id}" in task_log, context
    # what the agent wrote back (relies on tasks.edit merging `script`)
    assert task["script"]["version_num"] == sha, context
    assert task["script"]["repository"] == f"file://{repo}"
    assert task["script"]["entry_point"] == "agent_task.py"
    reqs = task["script"]["requirements"]
    assert "clearml" in json.dumps(reqs.get("pip")), reqs
    assert task["last_worker"] == "compat-agent:0"
    assert task["runtime"].get("_exec_agent_hostname"), task["runtime"]
    assert task["hyperparams"]["General"]["greeting"]["value"] == "from-shipyard"
    # what the SDK inside the task reported
    hist = api.call("events.scalar_metrics_iter_histogram", {"task": task_id, "key": "iter"})
    assert hist["progress"]["steps"]["y"] == pytest.approx([1.0, 2.0, 3.0]), hist
    artifacts = {a["key"]: a for a in task["execution"].get("artifacts") or []}
    assert "summary" in artifacts, task["execution"]
    got = api.http.get(artifacts["summary"]["uri"], headers={"Authorization": f"Bearer {api.token}"},
                       timeout=10)
    assert got.status_code == 200 and json.loads(got.content) == {"greeting": "from-shipyard"}
    # the queue is drained and the agent unregistered on shutdown
    assert api.call("queues.get_by_id", {"queue": queue["id"]})["queue"]["entries"] == []
    assert "compat-agent:0" not in [w["id"] for w in api.call("workers.get_all", {})["workers"]]
    assert not bad_lines(agent_output + task_log), "\n".join(bad_lines(agent_output + task_log))

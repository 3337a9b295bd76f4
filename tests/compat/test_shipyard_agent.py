"""Shipyard's own agent reproducing a task the real clearml SDK recorded: the everyday loop of
run locally with uncommitted changes → clone → override a parameter → enqueue → agent runs it."""
from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.agent_helpers import agent_env, start_daemon, task_log, wait_status
from tests.compat.conftest import bad_lines, clean_env, make_repo
from tests.helpers import start_server

pytestmark = pytest.mark.compat

TRAIN_PY = textwrap.dedent("""\
    import argparse

    from clearml import Task

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)

    if __name__ == "__main__":
        task = Task.init(project_name="compat-shipyard", task_name="recorded")
        args = parser.parse_args()
        print("RUNNING WITH LR", args.lr, flush=True)
        for i in range(3):
            task.get_logger().report_scalar("lr", "value", args.lr * (i + 1), i)
        print("TASK_ID", task.id, flush=True)
""")


def test_shipyard_agent_reproduces_sdk_task_with_override(sdk_python, tmp_path):
    server = start_server(tmp_path / "server")
    api = server.api()
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = tmp_path / "work"
    sha = make_repo(work, {"train.py": TRAIN_PY}, origin=f"file://{origin}",
                    uncommitted={"train.py": TRAIN_PY.replace("RUNNING WITH LR", "RUNNING PATCHED WITH LR")})
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "main"], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(work), "branch", "-q", "--set-upstream-to=origin/main"], check=True,
                   capture_output=True)
    env = clean_env(tmp_path / "sdk-home", server.env())
    local = subprocess.run([str(sdk_python), "train.py", "--lr", "0.5"], cwd=work, env=env, timeout=240,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    assert "RUNNING PATCHED WITH LR 0.5" in local and not bad_lines(local), local
    source = next(line.split()[1] for line in local.splitlines() if line.startswith("TASK_ID "))

    clone = api.call("tasks.clone", {"task": source, "new_task_name": "override"})["id"]
    api.call("tasks.edit_hyper_params", {"task": clone, "hyperparams": [
        {"section": "Args", "name": "lr", "value": "0.25", "type": "float"}]})
    daemon = start_daemon(agent_env(server, tmp_path / "agent"), ["sdk-q"], tmp_path / "daemon.log")
    try:
        api.call("tasks.enqueue", {"task": clone, "queue_name": "sdk-q"})
        doc = wait_status(api, clone, timeout=400)
        log = task_log(api, clone)
        assert doc["status"] == "completed", (doc["status_reason"], "\n".join(log[-40:]))
        scalars = api.call("events.scalar_metrics_iter_histogram", {"task": clone, "key": "iter"})
    finally:
        daemon.stop()
        server.stop()
    text = "\n".join(log)
    assert "RUNNING PATCHED WITH LR 0.25" in text           # recorded diff applied, parameter overridden
    assert sum(line.startswith("RUNNING PATCHED") for line in log) == 1   # shipped once, not by the SDK too
    assert doc["script"]["version_num"] == sha
    assert any(line.startswith("clearml==") for line in doc["script"]["requirements"]["pip"])
    assert scalars["lr"]["value"]["y"] == [0.25, 0.5, 0.75]    # the SDK inside reported with the override

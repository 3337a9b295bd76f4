"""`shipyard task ...` as a person or a CI script runs it: a real process against a real server.
Issue 20: `logs --follow` exit codes, `clone --set` keeping types, a local repository warned about."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.agent_helpers import agent_env, git, make_repo
from tests.helpers import start_server


def shipyard(env: dict, *argv: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shipyard", *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture()
def env(server, tmp_path) -> dict:
    return agent_env(server, tmp_path)


def _ended(api, name: str, endpoint: str, reason: str) -> str:
    task = api.call("tasks.create", {"name": name, "type": "training"})["id"]
    api.call("tasks.started", {"task": task, "force": True})
    api.events([{"type": "log", "task": task, "msg": f"output of {name}"}])
    api.call(endpoint, {"task": task, "status_reason": reason, "force": True})
    return task


@pytest.mark.parametrize(("endpoint", "code", "reason"), [
    ("tasks.completed", 0, "worker execution done"),
    ("tasks.failed", 1, "user_error: the task process exited with code 3"),
    ("tasks.stopped", 2, "aborted: aborted from the CLI"),
])
def test_logs_follow_exits_with_how_the_task_ended(api, env, endpoint, code, reason):
    task = _ended(api, f"follow-{code}", endpoint, reason)
    done = shipyard(env, "task", "logs", task, "--follow")
    assert done.returncode == code, done.stderr
    lines = done.stdout.splitlines()
    assert f"output of follow-{code}" in lines
    assert lines[-1].startswith("-- task ") and (code == 0 or lines[-1].endswith(reason))


def test_logs_help_documents_the_exit_codes(env):
    text = shipyard(env, "task", "logs", "--help").stdout
    assert "0  the task completed" in text and "1  the task failed" in text and "2  the task was stopped" in text


def _recorded(api, name: str) -> str:
    params = {"Args": {
        "lr": {"section": "Args", "name": "lr", "value": "0.1", "type": "float", "description": "learning rate"},
        "epochs": {"section": "Args", "name": "epochs", "value": "3", "type": "int"},
        "layers": {"section": "Args", "name": "layers", "value": "[64, 64]", "type": "list"},
    }}
    return api.call("tasks.create", {"name": name, "type": "training", "hyperparams": params})["id"]


def test_clone_set_keeps_each_parameters_type(api, env):
    task = _recorded(api, "typed")
    done = shipyard(env, "task", "clone", task, "--set", "Args/lr=1", "--set", "epochs=7",
                    "--set", "Args/layers=[128]")
    assert done.returncode == 0, done.stderr
    clone = api.call("tasks.get_by_id", {"task": done.stdout.split()[-1]})["task"]
    args = clone["hyperparams"]["Args"]
    assert (args["lr"]["value"], args["lr"]["type"], args["lr"]["description"]) == ("1.0", "float", "learning rate")
    assert (args["epochs"]["value"], args["epochs"]["type"]) == ("7", "int")
    assert (args["layers"]["value"], args["layers"]["type"]) == ("[128]", "list")
    assert clone["name"] == "typed (Clone)"


def test_clone_set_refuses_a_value_of_another_type_and_makes_nothing(api, env):
    task = _recorded(api, "typed-bad")
    done = shipyard(env, "task", "clone", task, "--set", "Args/lr=fast")
    assert done.returncode == 2
    assert "Args/lr is a float parameter" in done.stderr and "'fast'" in done.stderr
    assert api.call("tasks.get_all", {"name": "^typed-bad \\(Clone\\)$"})["tasks"] == []


def test_clone_name_option_wins(api, env):
    task = _recorded(api, "named")
    done = shipyard(env, "task", "clone", task, "--name", "sweep lr=0.5", "--set", "Args/lr=0.5")
    assert done.returncode == 0, done.stderr
    assert api.call("tasks.get_by_id", {"task": done.stdout.split()[-1]})["task"]["name"] == "sweep lr=0.5"


def _address_of_this_machine() -> str | None:
    """An address of this machine that is not loopback (as a teammate's machine would reach it)."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    return next((a for a in found if ":" not in a and not a.startswith("127.")), None)


@pytest.mark.parametrize(("api_server", "here"), [
    ("http://127.0.0.1:8008", True),
    ("http://localhost:8008", True),
    ("http://[::1]:8008", True),
    ("http://192.0.2.7:8008", False),
    ("https://api.clear.invalid", False),  # does not resolve: not known to be here
])
def test_a_server_reached_through_loopback_is_on_this_machine(api_server, here):
    from shipyard.cli.task import _server_is_here

    assert _server_is_here(api_server) is here


def test_create_warns_when_the_repository_is_a_path_and_the_server_is_elsewhere(tmp_path):
    address = _address_of_this_machine()
    if address is None:
        pytest.skip("this machine has no address other than loopback")
    server = start_server(tmp_path / "srv", extra_args=["--host", "0.0.0.0"])
    try:
        env = agent_env(server, tmp_path, CLEARML_API_HOST=server.api_url.replace("127.0.0.1", address))
        repo, _commit = make_repo(tmp_path / "laptop-repo", {"train.py": "print('hi')\n"})
        done = shipyard(env, "task", "create", "--script", "train.py", cwd=repo)
        assert done.returncode == 0, done.stderr
        warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and str(repo) in warnings[0] and "git push" in warnings[0]
        git(repo, "remote", "add", "origin", "https://git.example.com/team/repo.git")
        pushed = shipyard(env, "task", "create", "--script", "train.py", cwd=repo)
        assert pushed.returncode == 0 and "warning:" not in pushed.stderr
    finally:
        server.stop()


def test_a_path_repository_is_not_warned_about_when_the_server_is_here(api, env, tmp_path):
    """`shipyard up` on a laptop: its agent runs here and sees the path; no warning to puzzle over."""
    repo, _commit = make_repo(tmp_path / "laptop-repo", {"train.py": "print('hi')\n"})
    done = shipyard(env, "task", "create", "--script", "train.py", cwd=repo)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    task = api.call("tasks.get_by_id", {"task": done.stdout.split()[-1]})["task"]
    assert task["script"]["repository"] == str(repo)


def test_show_lists_the_runs_numbered_from_one(api, env):
    task = api.call("tasks.create", {"name": "runs", "type": "training"})["id"]
    api.call("tasks.enqueue", {"task": task, "queue_name": "cli-runs"})
    queue = api.call("queues.get_all", {"name": "^cli-runs$"})["queues"][0]["id"]
    api.call("queues.get_next_task", {"queue": queue, "lease_s": 30, "worker": "lost:0"})
    api.call("workers.reconcile", {"worker": "lost:0"})
    shown = shipyard(env, "task", "show", task).stdout.splitlines()
    runs = [line.split(None, 1)[1] for line in shown if line.startswith("run ")]
    assert runs == ["1 of 3 on worker lost:0: infrastructure: worker lost:0 restarted while holding it"]
    reason = next(line for line in shown if line.startswith("reason"))
    assert reason.endswith("re-queued for run 2 of 3")


def test_abort_of_a_running_task_says_it_is_stopping(api, env):
    """tasks.stop now answers fields.status (in_progress while the agent stops the task): the CLI
    still says what happens, not the unchanged status."""
    task = api.call("tasks.create", {"name": "abort-running", "type": "training"})["id"]
    api.call("tasks.started", {"task": task})
    api.call("workers.status_report", {"worker": "w-abort", "task": task, "timestamp": 1})
    done = shipyard(env, "task", "abort", task)
    assert done.returncode == 0, done.stderr
    assert "in_progress" not in done.stdout and done.stdout.strip() != f"{task}:"
    queued = api.call("tasks.create", {"name": "abort-queued", "type": "training"})["id"]
    api.call("tasks.enqueue", {"task": queued, "queue_name": "abort-q"})
    assert shipyard(env, "task", "abort", queued).stdout.strip() == f"{queued}: stopped"

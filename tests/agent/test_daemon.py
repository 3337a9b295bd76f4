"""The agent end to end: a real server process, a real daemon process, real git repos and venvs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.agent_helpers import (
    agent_env,
    create_task,
    git,
    make_repo,
    pids_with_marker,
    start_daemon,
    task_log,
    wait_status,
)
from tests.helpers import start_server

QUEUE = "e2e"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("agent-e2e")
    server = start_server(root / "server")
    daemon = start_daemon(agent_env(server, root), [QUEUE], root / "daemon.log")
    api = server.api()
    yield {"server": server, "api": api, "root": root, "daemon": daemon}
    daemon.stop()
    server.stop()


def _repo(rig, name: str, files: dict[str, str]):
    return make_repo(rig["root"] / "repos" / name, files)


def run_task(rig, name: str, script: dict, **fields) -> tuple[dict, str]:
    api = rig["api"]
    task = create_task(api, name, script, queue=QUEUE, **fields)
    doc = wait_status(api, task, timeout=180)
    return doc, "\n".join(task_log(api, task))


def test_task_at_a_commit(rig):
    repo, first = _repo(rig, "commit", {"train.py": "print('version one')\n"})
    (repo / "train.py").write_text("print('version two')\n")
    git(repo, "commit", "-qam", "second")
    doc, log = run_task(rig, "at-commit", {"repository": str(repo), "version_num": first, "entry_point": "train.py"})
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "version one" in log and "version two" not in log
    assert doc["script"]["version_num"] == first


def test_uncommitted_diff_is_applied(rig):
    repo, commit = _repo(rig, "diff", {"train.py": "print('base')\n"})
    (repo / "train.py").write_text("print('base')\nprint('from the diff')\n")
    diff = git(repo, "diff") + "\n"
    doc, log = run_task(rig, "with-diff", {"repository": str(repo), "version_num": commit,
                                           "entry_point": "train.py", "diff": diff})
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "from the diff" in log


def test_pinned_requirement_and_cache_reuse(rig):
    repo, commit = _repo(rig, "reqs", {"train.py": "import six\nprint('six', six.__version__)\n"})
    script = {"repository": str(repo), "version_num": commit, "entry_point": "train.py",
              "requirements": {"pip": "six==1.16.0\n"}}
    doc, log = run_task(rig, "pinned", script)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "six 1.16.0" in log
    assert any(line.startswith("six==1.16.0") for line in doc["script"]["requirements"]["pip"])
    doc2, log2 = run_task(rig, "pinned-again", script)
    assert doc2["status"] == "completed" and "six 1.16.0" in log2
    assert "cache hit" in log2


def test_no_repository_literal_script(rig):
    doc, log = run_task(rig, "literal", {"repository": "", "entry_point": "solo.py",
                                         "diff": "import sys\nprint('literal script', sys.argv[1:])\n"},
                        hyperparams={"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.25"}}})
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "literal script ['--lr', '0.25']" in log


@pytest.mark.parametrize("case", ["unreachable", "unknown_commit", "bad_diff", "bad_requirement",
                                  "missing_entry", "nonzero_exit"])
def test_bad_input_fails_with_a_reason_and_agent_goes_on(rig, case):
    repo, commit = _repo(rig, f"bad-{case}", {"train.py": "print('ok')\n"})
    script = {"repository": str(repo), "version_num": commit, "entry_point": "train.py"}
    expect = {
        "unreachable": ({"repository": str(rig["root"] / "no-such-repo")}, "repository"),
        "unknown_commit": ({"version_num": "0123456789abcdef0123456789abcdef01234567"}, "not found"),
        "bad_diff": ({"diff": "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n"
                              "@@ -1 +1 @@\n-print('something else')\n+print('x')\n"}, "train.py"),
        "bad_requirement": ({"requirements": {"pip": "shipyard-no-such-package-xyz==9.9.9\n"}},
                            "shipyard-no-such-package-xyz"),
        "missing_entry": ({"entry_point": "nope.py"}, "nope.py"),
        "nonzero_exit": ({"diff": "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n"
                                  "@@ -1 +1,2 @@\n print('ok')\n+raise SystemExit(3)\n"}, "code 3"),
    }[case]
    script.update(expect[0])
    doc, _log = run_task(rig, f"bad-{case}", script)
    assert doc["status"] == "failed"
    assert expect[1] in doc["status_reason"], doc["status_reason"]
    # The agent keeps serving.
    ok, log = run_task(rig, f"after-{case}", {"repository": "", "entry_point": "t.py", "diff": "print('still here')\n"})
    assert ok["status"] == "completed" and "still here" in log


def test_binary_garbage_and_huge_line(rig):
    code = ("import sys\nsys.stdout.buffer.write(bytes(range(256)) + b'\\n')\n"
            "sys.stdout.write('x' * (10 * 1024 * 1024) + '\\n')\nprint('after the big line')\n")
    doc, log = run_task(rig, "garbage", {"repository": "", "entry_point": "g.py", "diff": code})
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "after the big line" in log
    assert sum(len(line) for line in log.split("\n") if set(line) == {"x"}) == 10 * 1024 * 1024


def test_chatty_task_every_line_once_in_order(rig):
    code = "for i in range(20000):\n    print(f'line {i}')\n"
    doc, log = run_task(rig, "chatty", {"repository": "", "entry_point": "c.py", "diff": code})
    assert doc["status"] == "completed"
    numbered = [line for line in log.split("\n") if line.startswith("line ")]
    assert numbered == [f"line {i}" for i in range(20000)]


def test_abort_mid_run_leaves_no_process(rig):
    api = rig["api"]
    marker = f"shipyard-abort-marker-{time.time_ns()}"
    code = (f"import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\n"
            "print('started', flush=True)\ntime.sleep(300)\n")
    task = create_task(api, "abort-me", {"repository": "", "entry_point": "a.py", "diff": code}, queue=QUEUE)
    deadline = time.monotonic() + 120
    while "started" not in task_log(api, task) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids_with_marker(marker)
    api.call("tasks.stop", {"task": task})
    doc = wait_status(api, task, timeout=60)
    assert doc["status"] == "stopped" and "abort" in doc["status_reason"]
    time.sleep(0.5)
    assert pids_with_marker(marker) == []


def test_daemon_drain_then_abort(tmp_path):
    server = start_server(tmp_path / "server")
    api = server.api()
    try:
        daemon = start_daemon(agent_env(server, tmp_path), ["drain"], tmp_path / "d.log")
        task = create_task(api, "drain", {"repository": "", "entry_point": "s.py",
                                          "diff": "import time\nprint('go', flush=True)\ntime.sleep(3)\nprint('finished')\n"},
                           queue="drain")
        wait_status(api, task, {"in_progress"}, timeout=60)
        daemon.signal(signal.SIGTERM)   # drain: the task finishes
        assert daemon.proc.wait(60) == 0
        doc = wait_status(api, task, timeout=5)
        assert doc["status"] == "completed"
        assert "finished" in "\n".join(task_log(api, task))

        daemon = start_daemon(agent_env(server, tmp_path), ["drain"], tmp_path / "d2.log")
        task = create_task(api, "abort", {"repository": "", "entry_point": "s.py",
                                          "diff": "import time\nprint('go', flush=True)\ntime.sleep(300)\n"},
                           queue="drain")
        deadline = time.monotonic() + 60
        while "go" not in task_log(api, task) and time.monotonic() < deadline:
            time.sleep(0.2)
        daemon.signal(signal.SIGTERM)
        time.sleep(0.5)
        daemon.signal(signal.SIGTERM)   # second signal: abort; with a lease the task goes back to its queue
        assert daemon.proc.wait(60) == 0
        doc = wait_status(api, task, {"queued", "stopped"}, timeout=5)
        assert doc["status"] == "queued" and "agent_shutdown" in doc["status_reason"]
        assert doc["shipyard_attempts"][0]["end"].startswith("infrastructure: agent_shutdown")
    finally:
        server.stop()


def test_lines_survive_a_server_outage(tmp_path):
    """The server goes away for 10 s mid-run: every line still arrives, once, in order."""
    server = start_server(tmp_path / "server")
    api = server.api()
    daemon = start_daemon(agent_env(server, tmp_path), ["outage"], tmp_path / "d.log")
    try:
        code = ("import time\nfor i in range(300):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.06)\n")
        task = create_task(api, "outage", {"repository": "", "entry_point": "o.py", "diff": code}, queue="outage")
        deadline = time.monotonic() + 60
        while not any(line.startswith("tick") for line in task_log(api, task)) and time.monotonic() < deadline:
            time.sleep(0.1)
        server.stop()
        time.sleep(10)
        server = start_server(tmp_path / "server", ports=server.ports)
        api = server.api()
        doc = wait_status(api, task, timeout=120)
        assert doc["status"] == "completed", doc.get("status_reason")
        ticks = [line for line in task_log(api, task) if line.startswith("tick ")]
        assert ticks == [f"tick {i}" for i in range(300)]
    finally:
        daemon.stop()
        server.stop()


def test_services_mode_runs_tasks_side_by_side(tmp_path):
    server = start_server(tmp_path / "server")
    api = server.api()
    daemon = start_daemon(agent_env(server, tmp_path), ["svc"], tmp_path / "d.log", "--services-mode", "2")
    try:
        code = "import time\nprint('up', flush=True)\ntime.sleep(4)\n"
        tasks = [create_task(api, f"svc-{i}", {"repository": "", "entry_point": "s.py", "diff": code}, queue="svc")
                 for i in range(3)]
        deadline = time.monotonic() + 60
        statuses: list[str] = []
        while time.monotonic() < deadline:
            statuses = [api.call("tasks.get_by_id", {"task": t})["task"]["status"] for t in tasks]
            if statuses.count("in_progress") == 2:
                break
            time.sleep(0.1)
        assert statuses.count("in_progress") == 2 and statuses.count("queued") == 1  # two slots, no more
        assert all(wait_status(api, t, timeout=60)["status"] == "completed" for t in tasks)
    finally:
        daemon.stop()
        server.stop()


def test_idle_daemon_stops_at_once(tmp_path):
    """A pending long-poll must not keep a stopping daemon alive (systemd waits for it)."""
    server = start_server(tmp_path / "server")
    daemon = start_daemon(agent_env(server, tmp_path, SHIPYARD_LONG_POLL_S="30"), ["idle"], tmp_path / "d.log")
    try:
        time.sleep(1)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0
        assert time.monotonic() - started < 10
    finally:
        daemon.stop()
        server.stop()


def test_daemon_prints_each_line_once(rig):
    """Issue 20: the daemon's terminal showed every setup line twice (echoed, then logged again)."""
    doc, _log = run_task(rig, "once", {"repository": "", "entry_point": "o.py", "diff": "print('once')\n"})
    assert doc["status"] == "completed", doc.get("status_reason")
    output = rig["daemon"].output()
    assert output.count(f"task {doc['id']} pulled from queue") == 1
    assert output.count(f"task {doc['id']} ended completed") == 1


def test_repository_path_of_another_machine_fails_with_what_to_do(rig):
    laptop_path = str(rig["root"] / "on-the-laptop" / "repo")
    doc, log = run_task(rig, "laptop-path", {"repository": laptop_path, "entry_point": "train.py"})
    assert doc["status"] == "failed"
    assert f"repository {laptop_path} is a path on the machine that created the task" in doc["status_reason"]
    assert log.rstrip("\n").split("\n")[-1] == f"shipyard: task {doc['id']} ended failed: {doc['status_reason']}"


def test_a_dead_worker_leaves_the_listing_after_its_timeout(tmp_path):
    """kill -9: no unregister. The worker registered a timeout of a few report intervals and the
    server stops listing it once that passed without a report (as ClearML's server does)."""
    server = start_server(tmp_path / "server")
    env = agent_env(server, tmp_path, SHIPYARD_STATUS_REPORT_S="1", CLEARML_WORKER_ID="doomed:0")
    daemon = start_daemon(env, ["dead"], tmp_path / "d.log")
    api = server.api()
    try:
        assert [w["id"] for w in api.call("workers.get_all", {})["workers"]] == ["doomed:0"]
        os.killpg(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(10)
        deadline = time.monotonic() + 30
        while api.call("workers.get_all", {})["workers"] and time.monotonic() < deadline:
            time.sleep(0.5)
        listed = subprocess.run([sys.executable, "-m", "shipyard", "list"], env=env, capture_output=True, text=True,
                                timeout=60)
        assert listed.returncode == 0 and "doomed:0" not in listed.stdout and "no workers" in listed.stdout
    finally:
        daemon.stop()
        server.stop()

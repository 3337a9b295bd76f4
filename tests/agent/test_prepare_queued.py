"""Prepare while queued (agent/daemon/prepare.py), against a real server, a real daemon, real
venvs and a local package index: while the daemon runs one task, the environment of the task
queued behind it is built into the cache; the queue views show it ready; the queued task then
starts from the cache. A prepare that fails leaves the task queued; its pickup reports the
failure as usual, and the prepare is not tried again."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from tests.agent_helpers import agent_env, create_task, git, make_repo, start_daemon, task_log, wait_status
from tests.helpers import start_server, until
from tests.package_index import PackageIndex

PASSWORD = "prep-index-s3cret"


def _waiter(flag) -> str:
    return (f"import os, time\nprint('a is running', flush=True)\nwhile not os.path.exists({str(flag)!r}):\n"
            "    time.sleep(0.05)\n")


def _wait_for(check, what: str, timeout: float = 90):
    return until(check, timeout, every_s=0.2, what=what)


def _prepared(api, task: str) -> str | None:
    for worker in api.call("workers.get_all", {}).get("workers") or []:
        state = (worker.get("prepared") or {}).get(task)
        if state:
            return state
    return None


def _cli(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "shipyard", *args], env=env, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_a_queued_tasks_environment_is_built_while_another_runs_and_its_pickup_hits_the_cache(tmp_path):
    index = PackageIndex(tmp_path / "index").start()
    name = f"shipyard-prep-{os.getpid()}-{int(time.time())}"   # fresh: never in the shared uv cache
    index.add_wheel("pub", name, "1.0")
    server = start_server(tmp_path / "server")
    env = agent_env(server, tmp_path, SHIPYARD_EXTRA_INDEX_URLS=json.dumps([index.url("pub")]),
                    SHIPYARD_PREPARE_MAX_LOAD="0", SHIPYARD_PREPARE_INTERVAL_S="0.5")
    daemon = start_daemon(env, ["prep"], tmp_path / "d.log")
    api = server.api()
    flag = tmp_path / "go"
    try:
        a = create_task(api, "a", {"repository": "", "entry_point": "a.py", "diff": _waiter(flag)}, queue="prep")
        _wait_for(lambda: "a is running" in "\n".join(task_log(api, a)), "a to run")
        module = name.replace("-", "_")
        # b records no packages: its environment is the repository's requirements.txt at b's
        # commit, which a later commit changes (preparing from the branch's head would miss)
        repo, commit = make_repo(tmp_path / "repo", {
            "b.py": f"import {module}\nprint('b imports', {module}.__version__)\n",
            "requirements.txt": f"{name}==1.0\n"})
        (repo / "requirements.txt").write_text(f"{name}==2.0\n")
        git(repo, "commit", "-qam", "a version the index does not have")
        b = create_task(api, "b", {"repository": str(repo), "version_num": commit, "entry_point": "b.py"},
                        queue="prep")
        _wait_for(lambda: _prepared(api, b) == "ready", "b's environment to be ready")
        assert wait_status(api, a, statuses=("in_progress",))["status"] == "in_progress"   # a still runs
        assert "queued; its environment" in daemon.output()
        shown = _cli(env, "queue", "show", "prep")
        assert re.search(rf"{b}\s+b\s+env ready on \S+", shown), shown
        assert "(1 env ready)" in _cli(env, "queue", "list")
        flag.write_text("go")
        doc = wait_status(api, b, timeout=120)
        log = "\n".join(task_log(api, b))
        assert doc["status"] == "completed", log
        assert "b imports 1.0" in log and "environment from requirements.txt" in log
        assert "(cache hit)" in log and "building environment" not in log, log
        _wait_for(lambda: _prepared(api, b) is None, "b to leave the worker's report", timeout=30)
    finally:
        daemon.stop()
        server.stop()
        index.stop()


def test_a_failing_prepare_leaves_the_task_queued_and_is_not_retried(tmp_path):
    # a private index: the build gets its credentials as a pickup's does; they never reach a log
    index = PackageIndex(tmp_path / "index", private=("/private/",), user="reader", password=PASSWORD).start()
    server = start_server(tmp_path / "server")
    env = agent_env(server, tmp_path, SHIPYARD_EXTRA_INDEX_URLS=json.dumps([index.url("private")]),
                    SHIPYARD_INDEX_CREDENTIALS=json.dumps([{"host": index.host, "user": "reader",
                                                            "password": PASSWORD}]),
                    SHIPYARD_PREPARE_MAX_LOAD="0", SHIPYARD_PREPARE_INTERVAL_S="0.3")
    index.add_wheel("private", "shipyard-prep-other", "1.0")
    daemon = start_daemon(env, ["prepfail"], tmp_path / "d.log")
    api = server.api()
    flag = tmp_path / "go"
    try:
        a = create_task(api, "a", {"repository": "", "entry_point": "a.py", "diff": _waiter(flag)}, queue="prepfail")
        _wait_for(lambda: "a is running" in "\n".join(task_log(api, a)), "a to run")
        b = create_task(api, "b", {"repository": "", "entry_point": "b.py", "diff": "print('never')\n",
                                   "requirements": {"pip": "shipyard-prep-missing==9.9\n"}}, queue="prepfail")
        _wait_for(lambda: _prepared(api, b) == "failed", "b's prepare to fail")
        time.sleep(2)   # several scans: the failure is not tried again
        assert daemon.output().count(f"task {b}: queued; building its environment") == 1
        assert "preparing its environment failed" in daemon.output()
        assert api.call("tasks.get_by_id", {"task": b})["task"]["status"] == "queued"
        assert "env failed on" in _cli(env, "queue", "show", "prepfail")
        flag.write_text("go")
        doc = wait_status(api, b, timeout=120)
        assert doc["status"] == "failed", doc.get("status_reason")   # reported at pickup, as always
        assert "shipyard-prep-missing" in "\n".join(task_log(api, b))
        assert PASSWORD not in daemon.output()
    finally:
        daemon.stop()
        server.stop()
        index.stop()

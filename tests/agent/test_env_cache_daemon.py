"""The daemon prunes its environment cache between tasks (agent.venvs_cache.max_entries) and never
evicts the entry of a task still running, though it is the least recently used."""
from __future__ import annotations

import json
import re
import time

from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.helpers import start_server
from tests.package_index import PackageIndex


def _wait_for_line(api, task: str, pattern: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = "\n".join(task_log(api, task))
        if re.search(pattern, log):
            return log
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in the console of {task}")


def test_a_running_tasks_environment_survives_the_prune_between_tasks(tmp_path):
    index = PackageIndex(tmp_path / "index").start()
    for name in ("shipyard-pkg-a", "shipyard-pkg-b"):
        index.add_wheel("pub", name, "1.0")
    server = start_server(tmp_path / "server")
    env = agent_env(server, tmp_path, SHIPYARD_VENV_CACHE_MAX_ENTRIES="1",
                    SHIPYARD_EXTRA_INDEX_URLS=json.dumps([index.url("pub")]))
    daemon = start_daemon(env, ["lru"], tmp_path / "d.log", "--services-mode", "2")
    api = server.api()
    flag = tmp_path / "go"
    try:
        waits = (f"import os, time\nprint('a is running', flush=True)\nwhile not os.path.exists({str(flag)!r}):\n"
                 "    time.sleep(0.1)\nimport shipyard_pkg_a\nprint('a imports', shipyard_pkg_a.__version__)\n")
        a = create_task(api, "a", {"repository": "", "entry_point": "a.py", "diff": waits,
                                   "requirements": {"pip": "shipyard-pkg-a==1.0\n"}}, queue="lru")
        log_a = _wait_for_line(api, a, "a is running")
        key_a = re.search(r"environment ([0-9a-f]{12}) materialized", log_a).group(1)
        script_b = {"repository": "", "entry_point": "b.py", "diff": "import shipyard_pkg_b\n",
                    "requirements": {"pip": "shipyard-pkg-b==1.0\n"}}
        b = create_task(api, "b", script_b, queue="lru")
        assert wait_status(api, b, timeout=120)["status"] == "completed"
        key_b = re.search(r"environment ([0-9a-f]{12}) materialized", "\n".join(task_log(api, b))).group(1)
        entries = tmp_path / "cache" / "venvs" / "entries"
        # b's entry is busy while its background bytecode compiler runs (prune skips it then too);
        # once compiled, the next task's end prunes again: two entries, one allowed, a's is held.
        deadline = time.monotonic() + 60
        while not list(entries.glob(f"{key_b}*/BYTECODE-COMPLETE")) and time.monotonic() < deadline:
            time.sleep(0.2)
        c = create_task(api, "c", script_b, queue="lru")
        assert wait_status(api, c, timeout=120)["status"] == "completed"
        deadline = time.monotonic() + 10
        while f"evicted environment {key_b}" not in daemon.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"evicted environment {key_b}" in daemon.output()        # the limit was applied: b's went
        # a's, the older one, is held through every prune; b's may be back (c can miss the cache if
        # b's entry was evicted at b's own end, and c's rebuilt one then compiles past c's end)
        assert key_a in [p.name[:12] for p in entries.iterdir()]
        assert f"evicted environment {key_a}" not in daemon.output()
        flag.write_text("go")
        doc = wait_status(api, a, timeout=60)
        assert doc["status"] == "completed", doc.get("status_reason")
        assert "a imports 1.0" in "\n".join(task_log(api, a))
    finally:
        daemon.stop()
        server.stop()
        index.stop()

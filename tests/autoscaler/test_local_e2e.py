"""End to end on one box: a real server, `shipyard autoscaler --config` as a process with the
local provider, real `shipyard daemon` agents. Six tasks are enqueued; agents start within
the budget, run them, and go away after the idle timeout, their keys revoked."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.agent_helpers import create_task, pids_with_marker, wait_status
from tests.helpers import ACCESS_KEY, SECRET_KEY, start_server

PRICE, CAP = 1.0, 2.5  # $/h per agent and the overall cap: at most two agents at once


def _config(root, queue: str) -> dict:
    return {
        "name": f"e2e-{queue}", "provider": "local", "poll_s": 1, "idle_timeout_s": 4, "spinup_timeout_s": 90,
        "drain_s": 3, "orphan_grace_s": 30, "state_file": str(root / "state.json"),
        "local": {"work_dir": str(root / "machines"), "stop_grace_s": 5},
        "agent": {"long_poll_s": 2, "worker_prefix": f"as-{queue}",
                  "extra_env": {"SHIPYARD_STATUS_REPORT_S": "1", "SHIPYARD_ABORT_GRACE_S": "2"}},
        "budget": {"max_per_hour": CAP},
        "resources": {"box": {"price_on_demand": PRICE}},
        "queues": {queue: [{"resource": "box", "max": 6}]},
    }


@pytest.fixture()
def rig(tmp_path):
    server = start_server(tmp_path / "srv")
    queue = f"e2e-{uuid.uuid4().hex[:6]}"
    conf = tmp_path / "autoscaler.conf"
    conf.write_text(json.dumps(_config(tmp_path, queue), indent=1))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SHIPYARD_"))}
    env.update({"HOME": str(home), "CLEARML_API_HOST": server.api_url, "CLEARML_FILES_HOST": server.files_url,
                "CLEARML_WEB_HOST": server.web_url, "CLEARML_API_ACCESS_KEY": ACCESS_KEY,
                "CLEARML_API_SECRET_KEY": SECRET_KEY,
                "UV_CACHE_DIR": os.environ.get("SHIPYARD_TEST_UV_CACHE",
                                               str(os.path.expanduser("~/.cache/shipyard-test-uv")))})
    procs: list[subprocess.Popen] = []
    yield {"server": server, "api": server.api(), "queue": queue, "conf": conf, "env": env, "root": tmp_path,
           "procs": procs}
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for pid in pids_with_marker(queue):  # agents a failed test left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    server.stop()


def agents_alive(rig) -> int:
    """Agent processes the local provider started that are still alive (its own registry)."""
    try:
        known = json.loads((rig["root"] / "machines" / "instances.json").read_text())
    except (OSError, ValueError):
        return 0
    alive = 0
    for entry in known.values():
        try:
            state = Path(f"/proc/{entry['pid']}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        alive += state != "Z"
    return alive


def _shipyard(rig, *args: str, log=None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "shipyard", *args], env=rig["env"], stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=str(rig["root"]))
    rig["procs"].append(proc)
    return proc


def test_six_tasks_agents_come_run_and_go_within_the_budget(rig):
    api, queue = rig["api"], rig["queue"]
    code = "import time\ntime.sleep(1.5)\nprint('done on', __import__('os').environ.get('CLEARML_WORKER_ID'))\n"
    tasks = [create_task(api, f"burst-{i}", {"repository": "", "entry_point": "t.py", "diff": code}, queue=queue)
             for i in range(6)]
    log_path = rig["root"] / "autoscaler.log"
    with open(log_path, "wb") as log:
        scaler = _shipyard(rig, "autoscaler", "--config", str(rig["conf"]), log=log)
    most, deadline = 0, time.monotonic() + 180
    while time.monotonic() < deadline:
        most = max(most, agents_alive(rig))
        states = {api.call("tasks.get_by_id", {"task": t})["task"]["status"] for t in tasks}
        if states <= {"completed", "failed", "stopped"}:
            break
        assert scaler.poll() is None, log_path.read_text()
        time.sleep(0.25)
    output = log_path.read_text()
    docs = [wait_status(api, t, timeout=1) for t in tasks]
    assert [d["status"] for d in docs] == ["completed"] * 6, output
    workers = {d.get("last_worker") for d in docs}
    assert all(w and w.startswith(f"as-{queue}-box-") for w in workers)
    # The budget held: $2.50/h allows two $1/h agents, never three
    assert 1 <= most <= 2, output
    assert "budget: $3.00/h would exceed $2.50/h" in output
    # After the idle timeout every agent drains and goes
    deadline = time.monotonic() + 60
    while pids_with_marker(queue) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not pids_with_marker(queue), log_path.read_text()
    assert "idle: no task for" in log_path.read_text()
    # Their keys are revoked, their workers gone; the spend is on record
    keys = subprocess.run([sys.executable, "-m", "shipyard", "keys", "--data-dir", str(rig["server"].data_dir),
                           "list"], capture_output=True, text=True, env=rig["env"], check=True).stdout
    minted = [line for line in keys.splitlines() if f"as-{queue}-box-" in line]
    assert len(minted) == len(workers) or len(minted) >= 2, keys
    assert all("revoked" in line for line in minted), keys
    # The autoscaler forgets a worker when its drain period ends, which can be after the
    # agent (refused by its revoked key) has already exited on its own.
    deadline = time.monotonic() + 30
    while [w for w in api.call("workers.get_all")["workers"] if w["id"] in workers] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not [w for w in api.call("workers.get_all")["workers"] if w["id"] in workers], log_path.read_text()
    # A clean stop on SIGTERM; status shows an empty fleet and the money spent
    os.killpg(scaler.pid, signal.SIGTERM)
    assert scaler.wait(20) == 0
    status = _shipyard(rig, "autoscaler", "status", "--config", str(rig["conf"]))
    text = status.communicate(timeout=60)[0].decode()
    assert status.returncode == 0, text
    assert "fleet: 0 instance(s)" in text and "next decisions: none" in text
    spent = json.loads((rig["root"] / "state.json").read_text())["ledger"]["spent"]
    assert 0 < spent < CAP * 180 / 3600, spent

"""`shipyard up` as a person runs it in a terminal: a real process, real signals (Ctrl-C is SIGINT
to the terminal's process group), a home directory of its own; tasks created through the API."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, free_port

SLEEPER = "import time\nprint('task started', flush=True)\ntime.sleep(600)\n"


@dataclass
class Up:
    proc: subprocess.Popen
    log: Path
    api_port: int

    def output(self) -> str:
        return self.log.read_text()

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)   # what the terminal sends on Ctrl-C

    def api(self) -> Api:
        return Api(f"http://127.0.0.1:{self.api_port}")


def up_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SHIPYARD_"))}
    env.update({"HOME": str(home), "SHIPYARD_WORK_DIR": str(home / "work"), "SHIPYARD_CACHE_DIR": str(home / "cache"),
                "SHIPYARD_ACCESS_KEY": ACCESS_KEY, "SHIPYARD_SECRET_KEY": SECRET_KEY, "SHIPYARD_ABORT_GRACE_S": "2",
                "UV_CACHE_DIR": os.environ.get("SHIPYARD_TEST_UV_CACHE",
                                               str(Path.home() / ".cache" / "shipyard-test-uv"))})
    return env


def start_up(home: Path, ports: list[int], *extra: str, name: str = "up", ready: str = "listening on") -> Up:
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shipyard", "up", "--api-port", str(ports[0]),
                                 "--files-port", str(ports[1]), "--web-port", str(ports[2]), *extra],
                                env=up_env(home), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    up = Up(proc, log, ports[0])
    deadline = time.monotonic() + 60
    while ready not in up.output():
        assert proc.poll() is None and time.monotonic() < deadline, up.output()
        time.sleep(0.1)
    return up


def wait_for_line(api: Api, task: str, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in task_log(api, task)):
        assert time.monotonic() < deadline, f"'{text}' never appeared in the console of {task}"
        time.sleep(0.2)


def console_lines(api: Api, task: str) -> list[str]:
    return [line for line in task_log(api, task) if line.strip()]


def test_ctrl_c_twice_stops_the_running_task_with_its_reason(tmp_path):
    """Issue 20 #1 and #7: the first Ctrl-C says it waits and that a second one aborts; the second
    ends the task `stopped` with the reason before the server stops, and a restart does not run it again."""
    ports = [free_port() for _ in range(3)]
    up = start_up(tmp_path / "home", ports)
    try:
        api = up.api()
        task = create_task(api, "sleeper", {"repository": "", "entry_point": "main.py", "diff": SLEEPER},
                           queue="default")
        wait_for_line(api, task, "task started")
        up.ctrl_c()
        deadline = time.monotonic() + 30
        while "draining" not in up.output():
            assert time.monotonic() < deadline, up.output()
            time.sleep(0.1)
        assert "press Ctrl-C again to abort" in up.output()
        up.ctrl_c()
        assert up.proc.wait(60) == 0, up.output()
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
    again = start_up(tmp_path / "home", ports, name="up2")
    try:
        api = again.api()
        doc = wait_status(api, task, timeout=5)
        assert doc["status"] == "stopped", doc
        assert doc["status_reason"].startswith("aborted: `shipyard up` was interrupted twice"), doc
        assert "interrupted twice" in console_lines(api, task)[-1]
        time.sleep(2)   # a re-run would have been pulled by now
        assert "pulled" not in again.output()
        assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "stopped"
    finally:
        again.ctrl_c()
        again.proc.wait(60)


def test_after_kill_9_the_next_start_says_what_it_did_with_the_task(tmp_path):
    """Issue 20 #1: `shipyard up` killed with a task running; the next start applies the lease
    rules (the task goes back to its queue) and says so in its own output and the task's console."""
    ports = [free_port() for _ in range(3)]
    up = start_up(tmp_path / "home", ports)
    api = up.api()
    task = create_task(api, "sleeper", {"repository": "", "entry_point": "main.py", "diff": SLEEPER},
                       queue="default")
    wait_for_line(api, task, "task started")
    up.proc.kill()
    up.proc.wait(30)
    again = start_up(tmp_path / "home", ports, name="up2")
    try:
        api = again.api()
        assert f"task {task}: worker" in again.output() and "restarted while this task was running" in again.output()
        wait_for_line(api, task, "the agent was killed before it could report the end")
        note = next(i for i, line in enumerate(task_log(api, task)) if "restarted while this task" in line)
        assert "runs again" in task_log(api, task)[note]
    finally:
        again.ctrl_c()
        time.sleep(0.5)
        again.ctrl_c()
        again.proc.wait(60)


def test_idle_up_stops_at_once_on_ctrl_c(tmp_path):
    """Issue 20 #7: nothing running, one Ctrl-C: the process ends cleanly; the server does not sit
    out its grace period on the agent's abandoned long-poll (that printed a cancelled-request traceback)."""
    up = start_up(tmp_path / "home", [free_port() for _ in range(3)])
    time.sleep(1)   # the agent is inside its long-poll
    started = time.monotonic()
    up.ctrl_c()
    assert up.proc.wait(30) == 0
    print(f"idle `shipyard up` exited {time.monotonic() - started:.2f} s after Ctrl-C")
    output = up.output()
    assert "worker" in output and "stopped after 0 task(s)" in output
    assert "Traceback" not in output and "graceful shutdown exceeded" not in output, output


def test_cli_and_doctor_find_the_conf_up_wrote(tmp_path):
    """Issue 20 #6: with no CLEARML_CONFIG_FILE and no ~/clearml.conf, the CLI reads the file
    `shipyard up` wrote, and `shipyard doctor` says which file it used and why."""
    home = tmp_path / "home"
    up = start_up(home, [free_port() for _ in range(3)])
    try:
        env = {k: v for k, v in up_env(home).items() if not k.startswith("SHIPYARD_ACCESS")}
        listed = subprocess.run([sys.executable, "-m", "shipyard", "queue", "list"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0 and "default" in listed.stdout, listed.stderr
        doctor = subprocess.run([sys.executable, "-m", "shipyard", "doctor"], env=env, capture_output=True,
                                text=True, timeout=120).stdout
        conf = home / ".shipyard" / "clearml.conf"
        assert f"config file {conf} (written by `shipyard up`)" in doctor, doctor
        assert any(line.startswith("ok    credentials") for line in doctor.splitlines()), doctor
    finally:
        up.ctrl_c()
        up.proc.wait(30)


def test_a_task_gets_the_web_host_of_the_api_host_it_was_given(server, tmp_path):
    """Issue 20 #11: an agent given only CLEARML_API_HOST=http://127.0.0.1:... hands its tasks a
    CLEARML_WEB_HOST on 127.0.0.1 too (it was `localhost`, where the page's sign-in cookie is not)."""
    env = agent_env(server, tmp_path)
    for name in ("CLEARML_FILES_HOST", "CLEARML_WEB_HOST"):
        env.pop(name)
    daemon = start_daemon(env, ["hosts"], tmp_path / "d.log")
    try:
        api = server.api()
        code = "import os\nprint('web host', os.environ['CLEARML_WEB_HOST'], flush=True)\n"
        task = create_task(api, "hosts", {"repository": "", "entry_point": "main.py", "diff": code}, queue="hosts")
        assert wait_status(api, task)["status"] == "completed"
        assert "web host http://127.0.0.1:8080" in task_log(api, task), task_log(api, task)
    finally:
        daemon.stop()


def test_public_host_is_the_one_host_clients_are_given(tmp_path):
    """Issue 20 #11: --public-host names the host of every address `up` hands out: the banner and
    the clearml.conf it writes (hence the agent, its tasks and the SDK's task links)."""
    home = tmp_path / "home"
    ports = [free_port() for _ in range(3)]
    up = start_up(home, ports, "--no-agent", "--public-host", "127.0.0.1", ready="CLEARML_CONFIG_FILE=")
    try:
        conf = (home / ".shipyard" / "clearml.conf").read_text()
        for port in ports:
            assert f'"http://127.0.0.1:{port}"' in conf and f"http://127.0.0.1:{port}" in up.output()
        assert "localhost" not in conf and "localhost" not in up.output()
    finally:
        up.ctrl_c()
        assert up.proc.wait(30) == 0


def _hold_port(port: int, where: Path) -> subprocess.Popen:
    script = where / "port_holder.py"
    script.write_text("import socket, sys, time\ns = socket.socket()\n"
                      "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                      f"s.bind(('127.0.0.1', {port}))\ns.listen()\nprint('held', flush=True)\ntime.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize("command", ["up", "server"])
def test_a_busy_port_fails_at_once_naming_it_and_its_holder(tmp_path, command):
    """Issue 20 #5: one line naming the port, the process that holds it and the option to change
    it; no traceback, and no clearml.conf for a server that never ran."""
    ports = [free_port() for _ in range(3)]
    holder = _hold_port(ports[2], tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    try:
        result = subprocess.run([sys.executable, "-m", "shipyard", command, "--api-port", str(ports[0]),
                                 "--files-port", str(ports[1]), "--web-port", str(ports[2])],
                                env=up_env(home), capture_output=True, text=True, timeout=30)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    message = (result.stdout + result.stderr).strip()
    assert len(message.splitlines()) == 1, message
    assert f"port {ports[2]} (--web-port) is in use by pid {holder.pid}" in message
    assert f"is in use by pid {holder.pid} (python3 " in message and "--web-port PORT" in message
    assert not (home / ".shipyard" / "clearml.conf").exists()
    with socket.socket() as probe:   # the API port it would have used was never taken
        probe.bind(("127.0.0.1", ports[0]))


def test_a_host_not_on_this_machine_fails_at_once_in_one_line(tmp_path):
    """Issue 20 #5: a --host nothing can listen on is named, with the option to change, before any
    listener starts or anything is written."""
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run([sys.executable, "-m", "shipyard", "up", "--host", "192.0.2.1"], env=up_env(home),
                            capture_output=True, text=True, timeout=30)
    message = (result.stdout + result.stderr).strip()
    assert result.returncode != 0 and len(message.splitlines()) == 1, message
    assert "192.0.2.1 cannot be listened on" in message and "--host" in message
    assert not (home / ".shipyard").exists()

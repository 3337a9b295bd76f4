"""Helpers for agent end-to-end tests: git repos, tasks, a daemon process, waiting."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, ServerProcess

FINAL = {"completed", "failed", "stopped", "published", "closed"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> tuple[Path, str]:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", ".")
    git(path, "commit", "-qm", "initial")
    return path, git(path, "rev-parse", "HEAD")


def create_task(api: Api, name: str, script: dict, queue: str | None = None, **fields) -> str:
    task = api.call("tasks.create", {"name": name, "type": "training", "script": script, **fields})["id"]
    if queue:
        api.call("tasks.enqueue", {"task": task, "queue_name": queue})
    return task


def wait_status(api: Api, task: str, statuses=FINAL, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = api.call("tasks.get_by_id", {"task": task})["task"]
        if doc["status"] in statuses:
            return doc
        time.sleep(0.2)
    raise AssertionError(f"task {task} still {doc['status']} after {timeout}s ({doc.get('status_reason')})")


def task_log(api: Api, task: str) -> list[str]:
    lines, scroll = [], None
    while True:
        body = {"task": task, "event_type": "log", "order": "asc", "batch_size": 5000}
        if scroll:
            body["scroll_id"] = scroll
        data = api.call("events.get_task_events", body)
        events = data.get("events") or []
        for event in events:
            lines.extend(str(event.get("msg", "")).split("\n"))
        if not events or len(events) < 5000:
            return lines
        scroll = data.get("scroll_id")


def agent_env(server: ServerProcess, root: Path, **extra: str) -> dict[str, str]:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SHIPYARD_"))}
    env.update({
        "HOME": str(home), "CLEARML_API_HOST": server.api_url, "CLEARML_FILES_HOST": server.files_url,
        "CLEARML_WEB_HOST": server.web_url, "CLEARML_API_ACCESS_KEY": ACCESS_KEY,
        "CLEARML_API_SECRET_KEY": SECRET_KEY, "SHIPYARD_WORK_DIR": str(root / "work"),
        "SHIPYARD_CACHE_DIR": str(root / "cache"), "SHIPYARD_STATUS_REPORT_S": "2",
        "SHIPYARD_ABORT_GRACE_S": "2", "SHIPYARD_LONG_POLL_S": "5",
        "UV_CACHE_DIR": os.environ.get("SHIPYARD_TEST_UV_CACHE", str(Path.home() / ".cache" / "shipyard-test-uv")),
    })
    env.update(extra)
    return env


@dataclass
class DaemonProcess:
    proc: subprocess.Popen
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                return self.proc.wait(5)


def start_daemon(env: dict[str, str], queues: list[str], log_path: Path, *extra: str) -> DaemonProcess:
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "shipyard", "daemon", "--create-queue",
                                 *[a for q in queues for a in ("--queue", q)], *extra],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "listening on" in log_path.read_text(errors="replace"):
            return DaemonProcess(proc, log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"daemon did not start:\n{log_path.read_text(errors='replace')}")


def pids_with_marker(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def run_cli(env: dict[str, str], *args: str) -> str:
    """The real CLI in this process, under `env` (a `python -m shipyard` start costs seconds on a busy box)."""
    from click.testing import CliRunner

    from shipyard.cli import cli
    cleared: dict[str, str | None] = {name: None for name in os.environ if name.startswith(("CLEARML_", "SHIPYARD_"))}
    done = CliRunner().invoke(cli, list(args), env={**cleared, **env}, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.output

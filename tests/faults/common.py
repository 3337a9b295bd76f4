"""Shared pieces of the fault suite: tasks that record their runs, agents with short leases."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.agent_helpers import agent_env, pids_with_marker, start_daemon
from tests.helpers import Api

LEASE_S = "3"


def run_recording_task(runs_dir: Path, seconds: float, ticks: int = 0) -> str:
    """Literal script: notes `start` and `end` of each run in runs_dir/<task id>, sleeps, ticks.
    Pass `marker_params(m)` as the task's hyperparams to find its processes by command line."""
    return (
        "import os, sys, time\n"
        f"path = os.path.join({str(runs_dir)!r}, os.environ['CLEARML_TASK_ID'])\n"
        "with open(path, 'a') as f: f.write(f'start {os.getpid()} {time.time()}\\n')\n"
        f"for i in range({ticks}):\n    print(f'tick {{i}}', flush=True)\n    time.sleep({seconds} / max(1, {ticks}))\n"
        f"time.sleep({seconds if not ticks else 0})\n"
        "with open(path, 'a') as f: f.write(f'end {os.getpid()} {time.time()}\\n')\n"
    )


def marker_params(marker: str) -> dict:
    return {"Args": {"marker": {"section": "Args", "name": "marker", "value": marker}}}


def script(code: str) -> dict:
    return {"repository": "", "entry_point": "job.py", "diff": code}


def runs(runs_dir: Path, task: str) -> tuple[int, int]:
    path = runs_dir / task
    lines = path.read_text().split() if path.exists() else []
    return lines.count("start"), lines.count("end")


def run_spans(runs_dir: Path, task: str) -> list[tuple[float, float | None]]:
    """(start, end or None) of each run of a task, by process id."""
    path = runs_dir / task
    spans: dict[str, list] = {}
    for line in (path.read_text().splitlines() if path.exists() else []):
        kind, pid, when = line.split()
        spans.setdefault(pid, [None, None])[0 if kind == "start" else 1] = float(when)
    return [(start, end) for start, end in spans.values()]


def overlapping_runs(runs_dir: Path, task: str) -> bool:
    """Did two runs of one task ever run at the same time (two owners at once)?"""
    spans = sorted((s, e) for s, e in run_spans(runs_dir, task) if e is not None)  # killed runs have no end
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def faulty_agent(server, root: Path, queue: str, name: str, faults: str = "", **extra: str):
    settings = {"SHIPYARD_LEASE_S": LEASE_S, "CLEARML_WORKER_ID": f"{name}:0", "SHIPYARD_FAULTS": faults,
                "SHIPYARD_FAULTS_DIR": str(root / name / "faults"), "SHIPYARD_CACHE_DIR": str(root / "shared-cache"),
                **extra}
    env = agent_env(server, root / name, **settings)
    return start_daemon(env, [queue], root / f"{name}.log")


def kill9(daemon) -> None:
    if daemon.proc.poll() is None:
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(10)


def wait_for(predicate, timeout: float = 60, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def no_orphans(marker: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids_with_marker(marker):
            return True
        time.sleep(0.2)
    return False


def final_status(api: Api, task: str) -> dict:
    return api.call("tasks.get_by_id", {"task": task})["task"]

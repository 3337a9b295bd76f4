"""Abort -> the task's process gone, with the floor measured in the same run (issue 24).

    python bench/bench_abort.py [--runs 10]

Starts a server and a `shipyard daemon` (each its own process, as a person runs them). Each
run: a task that prints its pid and then a line every 100 ms (it does not trap SIGTERM); once
its 3rd line is on the server, the bench pauses 0-1 s at random (so the abort lands anywhere in
the agent's 1 s status check) and calls `tasks.stop`, then looks every 5 ms for the task's
process to be gone (no such process, or a zombie: dead, not yet reaped) and for the task's
status to be `stopped`. The floor, in the same run:

    floor: signal  a child in its own process group (python3 sleeping) is sent SIGTERM with
                   killpg and waited for (waitpid): what the agent does once it has heard the abort
    floor: RTT     one loopback HTTP round trip to the same server (debug.ping)
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_pickup import floor_rtt  # noqa: E402  (one loopback round trip, the same floor)
from tests.agent_helpers import agent_env, start_daemon  # noqa: E402
from tests.helpers import start_server  # noqa: E402

LOOP = ("import os, sys, time\nprint('ABORT-PID', os.getpid(), flush=True)\ni = 0\nwhile True:\n"
        "    i += 1\n    print('ABORT-TICK', i, flush=True)\n    time.sleep(0.1)\n")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def log_lines(api, task: str) -> list[str]:
    events = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc",
                                                 "batch_size": 1000})["events"]
    return [line for event in events for line in str(event.get("msg", "")).split("\n")]


def running_pid(api, task: str, deadline_s: float = 120.0) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        lines = log_lines(api, task)
        pid = next((int(line.split()[1]) for line in lines if line.startswith("ABORT-PID ")), None)
        if pid is not None and any(line.startswith("ABORT-TICK 3") for line in lines):
            return pid
        time.sleep(0.05)
    raise RuntimeError(f"task {task} did not start in time")


def one_abort(api, i: int, rng: random.Random) -> tuple[float, float]:
    script = {"repository": "", "entry_point": "loop.py", "diff": LOOP}
    task = api.call("tasks.create", {"name": f"abort-{i}", "type": "training", "script": script})["id"]
    api.call("tasks.enqueue", {"task": task, "queue_name": "abort"})
    pid = running_pid(api, task)
    time.sleep(rng.uniform(0, 1.0))
    stop_at = time.monotonic()
    api.call("tasks.stop", {"task": task})
    dead = stopped = None
    while time.monotonic() - stop_at < 60 and (dead is None or stopped is None):
        if dead is None and gone(pid):
            dead = time.monotonic() - stop_at
        if stopped is None and api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "stopped":
            stopped = time.monotonic() - stop_at
        time.sleep(0.005)
    if dead is None or stopped is None:
        raise RuntimeError(f"task {task}: process gone after {dead}, stopped after {stopped}")
    return dead * 1000, stopped * 1000


def floor_signal(runs: int) -> float:
    samples = []
    for _ in range(runs):
        child = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)"],
                                 stdout=subprocess.PIPE, start_new_session=True)
        assert child.stdout is not None
        child.stdout.readline()   # it is running
        start = time.perf_counter()
        os.killpg(child.pid, signal.SIGTERM)
        child.wait()
        samples.append((time.perf_counter() - start) * 1000)
        child.stdout.close()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = start_server(root / "server")
        api = server.api()
        api.call("queues.create", {"name": "abort"})
        daemon = start_daemon(agent_env(server, root, SHIPYARD_ABORT_GRACE_S="10"), ["abort"], root / "daemon.log")
        try:
            one_abort(api, 0, rng)   # warm-up: the env cache entry
            results = [one_abort(api, i, rng) for i in range(1, args.runs + 1)]
            signal_ms, rtt_ms = floor_signal(args.runs), floor_rtt(api, args.runs * 4)
        finally:
            daemon.stop()
            server.stop()
    dead = [d for d, _ in results]
    stopped = [s for _, s in results]
    floor = signal_ms + rtt_ms
    print(f"| figure (n={len(results)}) | p50 | range | floor (same run) | ratio |\n|---|---|---|---|---|")
    print(f"| abort: tasks.stop -> task process gone | {statistics.median(dead):.0f} ms | {min(dead):.0f}-{max(dead):.0f} "
          f"| signal {signal_ms:.1f} ms + RTT {rtt_ms:.1f} ms = {floor:.0f} ms | {statistics.median(dead) / floor:.1f}x |")
    print(f"| abort: tasks.stop -> task `stopped` | {statistics.median(stopped):.0f} ms | "
          f"{min(stopped):.0f}-{max(stopped):.0f} | | |")


if __name__ == "__main__":
    main()

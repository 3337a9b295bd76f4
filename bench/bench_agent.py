"""Agent benchmarks against a local server:

* pickup: enqueue -> first line of the task's own output, trivial task, warm caches (p50/p90)
* warm start of a medium requirement set (numpy pandas scikit-learn requests): environment ready
* log shipping: lines/s delivered from a chatty task, and lines lost, next to the floor measured
  in the same run (bench_logs.pipe_floor: the same task + a bare reader of its pipe in large chunks)
* the idle daemon's CPU and RSS

    python bench/bench_agent.py [--runs 10] [--skip-medium]

Starts its own server and daemon in a temp dir (the uv cache is shared with the tests').
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_logs import chatty_code, pipe_floor  # noqa: E402
from tests.agent_helpers import FINAL, agent_env, create_task, start_daemon, task_log, wait_status  # noqa: E402
from tests.helpers import start_server  # noqa: E402

T = TypeVar("T")
MEDIUM = "numpy\npandas\nscikit-learn\nrequests\n"


def first_output_ms(api, task: str, enqueued_ms: int, marker: str) -> float:
    events = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc",
                                                 "batch_size": 1000})["events"]
    for event in events:
        if marker in str(event.get("msg", "")):
            return event["timestamp"] - enqueued_ms
    raise RuntimeError("marker line not found")


def pickup(api, runs: int) -> list[float]:
    script = {"repository": "", "entry_point": "hello.py", "diff": "print('PICKUP-MARKER')\n"}
    create_task(api, "warmup", script, queue="bench") and None
    samples = []
    for i in range(runs + 1):
        task = api.call("tasks.create", {"name": f"pickup-{i}", "type": "training", "script": script})["id"]
        time.sleep(0.3)
        enqueued_ms = int(time.time() * 1000)
        api.call("tasks.enqueue", {"task": task, "queue_name": "bench"})
        wait_status(api, task)
        if i:  # the first run warms the caches
            samples.append(first_output_ms(api, task, enqueued_ms, "PICKUP-MARKER"))
    return samples


def warm_medium(api, runs: int) -> list[float]:
    script = {"repository": "", "entry_point": "m.py", "diff": "import numpy, pandas, sklearn\nprint('ok')\n",
              "requirements": {"pip": MEDIUM}}
    times = []
    for i in range(runs + 1):
        task = create_task(api, f"medium-{i}", script, queue="bench")
        doc = wait_status(api, task, timeout=900)
        assert doc["status"] == "completed", doc.get("status_reason")
        text = "\n".join(task_log(api, task))
        match = re.search(r"environment ready in ([\d.]+)s \((cache hit|built)\)", text)
        if i and match:
            times.append(float(match.group(1)))
    return times


def log_throughput(api, lines: int) -> tuple[float, float, int]:
    """(lines/s enqueue -> completed, lines/s first line -> completed, lines lost). The task is
    completed only after its shipper delivered every line (runner: close, then report)."""
    code = chatty_code(lines)
    task = create_task(api, "chatty", {"repository": "", "entry_point": "c.py", "diff": code}, queue="bench")
    started = time.monotonic()
    wall_started = time.time()
    while api.call("tasks.get_by_id", {"task": task})["task"]["status"] not in FINAL:
        time.sleep(0.01)  # the figure is ~0.6 s: wait_status's 0.2 s polls would be a third of it
    elapsed = time.monotonic() - started
    done_wall = wall_started + elapsed
    log = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc", "batch_size": 1000})
    first_ms = next(e["timestamp"] for e in log["events"] if "chatty line 0" in str(e.get("msg", "")))
    got = sum(1 for line in task_log(api, task) if line.startswith("chatty line"))
    return got / elapsed, got / (done_wall - first_ms / 1000), lines - got


def _with_cpu(fn: Callable[[], T], daemon_pid: int, server_pid: int) -> tuple[T, tuple[float, float, float]]:
    """fn()'s result and the CPU seconds it cost: (the tasks the daemon ran, the daemon, the server)."""
    def now() -> tuple[float, float, float]:
        daemon, server = psutil.Process(daemon_pid).cpu_times(), psutil.Process(server_pid).cpu_times()
        return (daemon.children_user + daemon.children_system, daemon.user + daemon.system,
                server.user + server.system)

    before = now()
    result = fn()
    return result, tuple(b - a for a, b in zip(before, now(), strict=True))  # type: ignore[return-value]


def idle_footprint(pid: int, seconds: float = 10) -> tuple[float, float]:
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    time.sleep(seconds)
    return proc.cpu_percent(None), proc.memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--skip-medium", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = start_server(root / "server")
        daemon = start_daemon(agent_env(server, root, SHIPYARD_LONG_POLL_S="30"), ["bench"], root / "daemon.log")
        api = server.api()
        try:
            cpu, rss = idle_footprint(daemon.proc.pid)
            picks = pickup(api, args.runs)
            floors = [(pipe_floor(args.lines), pipe_floor(args.lines, since_first_line=True)) for _ in range(3)]
            pids = daemon.proc.pid, server.proc.pid
            (rate, run_rate, lost), big = _with_cpu(lambda: log_throughput(api, args.lines), *pids)
            _, small = _with_cpu(lambda: log_throughput(api, 1), *pids)   # the same task, one line: per-task costs
            floors += [(pipe_floor(args.lines), pipe_floor(args.lines, since_first_line=True)) for _ in range(2)]
            floor = statistics.median(spawned for spawned, _ in floors)  # around the run: load drifts
            run_floor = statistics.median(first for _, first in floors)
            print("| measure | value |\n|---|---|")
            print(f"| pickup: enqueue -> first output line, p50 | {statistics.median(picks):.0f} ms |")
            print(f"| pickup p90 | {sorted(picks)[int(0.9 * (len(picks) - 1))]:.0f} ms |")
            print(f"| log shipping, {args.lines:,} lines, enqueue -> completed | {rate:,.0f} lines/s, {lost} lost "
                  f"({rate / floor:.2f}x the floor) |")
            print(f"| log shipping, first line -> completed | {run_rate:,.0f} lines/s ({run_rate / run_floor:.2f}x "
                  "the floor from its first line) |")
            print(f"| floor: the same task + a bare reader of its pipe in large chunks (median of 5), spawn -> exit "
                  f"/ first line -> exit | {floor:,.0f} / {run_floor:,.0f} lines/s |")
            per = 100_000 / (args.lines - 1) * 1000
            task_ms, daemon_ms, server_ms = ((b - a) * per for a, b in zip(small, big, strict=True))
            print(f"| CPU per 100k lines (robust to load; the {args.lines:,}-line task less the same task printing one "
                  f"line): the task / the daemon / the server | {task_ms:.0f} / {daemon_ms:.0f} / {server_ms:.0f} ms |")
            print(f"| idle daemon | {cpu:.1f} % CPU, {rss:.0f} MB RSS |")
            if not args.skip_medium:
                warm = warm_medium(api, 3)
                print(f"| warm start, numpy+pandas+scikit-learn+requests: env ready | "
                      f"{statistics.median(warm):.2f} s (median of {len(warm)}) |")
        finally:
            daemon.stop()
            server.stop()


if __name__ == "__main__":
    main()

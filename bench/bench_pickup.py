"""Where a pickup's time goes: enqueue -> the task's first line -> that line on the server, phase
by phase, with the floor measured in the same run (issue 24).

    python bench/bench_pickup.py [--runs 15]

Starts a server (its own process) and runs the daemon in this process, so each step of the
pickup can be stamped from outside the agent's code (the steps are wrapped here, nothing in the
agent changes). A trivial task (a literal script, warm caches: one warm-up run first) prints its
own clock as its first statement. For each run the bench records when each step began and
ended, relative to the enqueue call; it prints the median of each over the runs, then the two
figures of the issue's table and the floor, measured right after each pickup (same load):

    floor: spawn   a bare `python3 -c "print()"` started -> its line read from its stdout, median
    floor: RTT     one loopback HTTP round trip to the same server (debug.ping), median

The daemon here is the real `Daemon` with the HTTP client; the CLI daemon adds nothing on the
path (bench/bench_agent.py measures it as a separate process).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agent_helpers import agent_env, make_repo, wait_status  # noqa: E402
from tests.helpers import start_server  # noqa: E402

MARKER = "PICKUP-FIRST"
SCRIPT = f"import time\nprint('{MARKER}', time.time(), flush=True)\n"


def has_marker(text: object) -> bool:
    """The task's own first line is in `text` (an event's msg holds several lines; the agent's
    notes quote no marker at a line's start)."""
    return f"\n{MARKER} " in f"\n{text}"


class Stamps:
    """Per run: step -> (first start, last end) in ms after the enqueue call."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.runs: list[dict[str, tuple[float, float]]] = []
        self.now: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def begin(self, t0: float) -> None:
        self.t0, self.now = t0, {}

    def mark(self, step: str, start: float, end: float) -> None:
        with self.lock:
            a, b = (start - self.t0) * 1000, (end - self.t0) * 1000
            old = self.now.get(step)
            self.now[step] = (min(a, old[0]), max(b, old[1])) if old else (a, b)

    def once(self, step: str, at: float) -> None:
        with self.lock:
            self.now.setdefault(step, ((at - self.t0) * 1000,) * 2)

    def wrap(self, owner: object, name: str, step: str | None = None) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                self.mark(step or name, start, time.time())

        setattr(owner, name, timed)


def instrument(stamps: Stamps) -> None:
    from agent.daemon import loop
    from agent.execution import build, lifecycle, process, runner, taskkey
    from agent.logs import shipper
    from sandbox import env_cache

    stamps.wrap(loop.Daemon, "_start", "claimed -> run thread started")
    original_started = lifecycle.mark_started

    def mark_started(api, task_id: str, message: str, attempt: int | None = None) -> None:
        start = time.time()
        original_started(api, task_id, message, attempt)
        stamps.mark(f"tasks.started ({message.split()[0]})", start, time.time())

    lifecycle.mark_started = mark_started   # type: ignore[assignment]
    stamps.wrap(taskkey.TaskKeys, "mint", "task key minted")
    stamps.wrap(taskkey.TaskKeys, "start_run", "tasks.start_run (started + key minted)")
    stamps.wrap(runner.TaskRun, "_fetch", "tasks.get_by_id")
    stamps.wrap(runner.TaskRun, "_start_watch", "watch started")
    stamps.wrap(build, "prepare_workspace", "workspace checkout")
    stamps.wrap(build, "select_interpreter", "interpreter selected")
    stamps.wrap(env_cache.EnvCache, "materialize", "env materialized")
    stamps.wrap(runner.TaskRun, "_record_source", "record commit/runtime (tasks.edit)")
    stamps.wrap(runner.TaskRun, "_record_frozen", "record frozen requirements, after the spawn")
    stamps.wrap(process.Child, "__init__", "spawn (Popen)")
    original_add = shipper.LogShipper.add

    def add(self, text: str, level: str = "info", **options) -> None:
        if has_marker(text):
            stamps.once("first line read by the agent", time.time())
        original_add(self, text, level, **options)

    shipper.LogShipper.add = add   # type: ignore[method-assign]
    original_send = runner.TaskRun._send_events

    def send(self, events: list) -> object:
        start = time.time()
        result = original_send(self, events)
        if any(has_marker(e.get("msg", "")) for e in events):
            stamps.mark("first line's batch sent", start, time.time())
        return result

    runner.TaskRun._send_events = send   # type: ignore[method-assign]


def floor_spawn(runs: int) -> float:
    """A bare `python3 -c "print()"`: started -> its line read from its stdout (as the agent reads
    a task's), median. Its exit and reaping come after and are not counted, as in the pickup."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", "print()"], stdout=subprocess.PIPE)
        assert child.stdout is not None
        child.stdout.readline()
        samples.append((time.perf_counter() - start) * 1000)
        child.wait()
        child.stdout.close()
    return statistics.median(samples)


def floor_rtt(api, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        api.call("debug.ping", {})
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def first_line(api, task: str) -> tuple[float, float]:
    """(the task's own clock in its first line, when the server stored it) as epoch seconds."""
    events = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc",
                                                 "batch_size": 1000})["events"]
    for event in events:
        msg = f"\n{event.get('msg', '')}"
        if has_marker(event.get("msg", "")):
            return float(msg.split(f"\n{MARKER} ", 1)[1].split()[0]), event["timestamp"] / 1000
    raise RuntimeError("the task's first line is not in its log")


def seen_through_api(api, stamps: Stamps, task: str, deadline_s: float = 30.0) -> float:
    """When the first line became readable: the log is polled every 2 ms, from the moment the agent
    read the line (polling earlier would load the 2-core box and slow the pickup it measures)."""
    end = time.time() + deadline_s
    while "first line read by the agent" not in stamps.now and time.time() < end:
        time.sleep(0.001)
    while time.time() < end:
        events = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc",
                                                     "batch_size": 100})["events"]
        if any(has_marker(e.get("msg", "")) for e in events):
            return time.time()
        time.sleep(0.002)
    raise RuntimeError("the first line never became readable")


def one_pickup(api, stamps: Stamps, queue: str, i: int, busy, script: dict) -> dict[str, float]:
    task = api.call("tasks.create", {"name": f"pickup-{i}", "type": "training", "script": script})["id"]
    while busy():     # the previous run may still remove its directory after its status is final
        time.sleep(0.01)
    time.sleep(0.3)   # the daemon is back in its long-poll
    t0 = time.time()
    stamps.begin(t0)
    api.call("tasks.enqueue", {"task": task, "queue_name": queue})
    readable = seen_through_api(api, stamps, task)
    wait_status(api, task)
    task_clock, _stored = first_line(api, task)
    stamps.runs.append(dict(stamps.now))
    return {"first line (task clock)": (task_clock - t0) * 1000, "readable through the API": (readable - t0) * 1000}


def report(stamps: Stamps, totals: list[dict[str, float]], spawn_ms: float, rtt_ms: float) -> None:
    steps: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for run in stamps.runs:
        for step, span in run.items():
            steps[step].append(span)
    print(f"\n| step (ms after enqueue, median of {len(stamps.runs)}) | starts | ends | took |\n|---|---|---|---|")
    for step, spans in sorted(steps.items(), key=lambda kv: statistics.median(s for s, _ in kv[1])):
        starts, ends = [s for s, _ in spans], [e for _, e in spans]
        took = statistics.median(e - s for s, e in spans)
        print(f"| {step} | {statistics.median(starts):.1f} | {statistics.median(ends):.1f} | {took:.1f} |")
    first = [t["first line (task clock)"] for t in totals]
    seen = [t["readable through the API"] for t in totals]
    print("\n| figure | p50 | range | floor (same run) | ratio |\n|---|---|---|---|---|")
    print(f"| pickup: enqueue -> task's first line | {statistics.median(first):.0f} ms | {min(first):.0f}-{max(first):.0f} "
          f"| RTT {rtt_ms:.1f} ms + spawn {spawn_ms:.0f} ms = {rtt_ms + spawn_ms:.0f} ms "
          f"| {statistics.median(first) / (rtt_ms + spawn_ms):.1f}x |")
    print(f"| pickup: enqueue -> that line readable through the API | {statistics.median(seen):.0f} ms | "
          f"{min(seen):.0f}-{max(seen):.0f} | 2x spawn = {2 * spawn_ms:.0f} ms | {statistics.median(seen) / spawn_ms:.1f}x spawn |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--repo", action="store_true", help="the task's code from a local git repository "
                        "(a checkout per run) instead of a literal script")
    parser.add_argument("--pip", default="", help="requirements recorded on the task, comma-separated "
                        "(e.g. six==1.16.0: the SDK records them; the uv cache must hold them)")
    parser.add_argument("--verbose", action="store_true", help="the daemon's console lines on stderr")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = start_server(root / "server")
        api = server.api()
        env = agent_env(server, root, SHIPYARD_LONG_POLL_S="30")
        stamps = Stamps()
        instrument(stamps)
        from agent.daemon.loop import Daemon
        from agent.taskserver.http import connect
        from shipyard.client.config import load_settings
        from shipyard.signals import Shutdown

        settings = load_settings({}, env=env)
        api.call("queues.create", {"name": "pickup"})
        shutdown = Shutdown()
        daemon = Daemon(connect(settings), settings, ["pickup"], shutdown=shutdown,
                        echo=(lambda line: print("daemon:", line, file=sys.stderr)) if args.verbose else None)
        thread = threading.Thread(target=daemon.work, daemon=True)
        thread.start()
        try:
            busy = lambda: any(run[0].is_alive() for run in list(daemon._active.values()))  # noqa: E731
            script = {"repository": "", "entry_point": "first.py", "diff": SCRIPT}
            if args.repo:
                repo, commit = make_repo(root / "repo", {"first.py": SCRIPT})
                script = {"repository": str(repo), "version_num": commit, "entry_point": "first.py"}
            if args.pip:
                script["requirements"] = {"pip": args.pip.replace(",", "\n") + "\n"}
            one_pickup(api, stamps, "pickup", 0, busy, script)   # warm-up: the env cache entry, the interpreter
            for entry in daemon.env_cache.entries():   # its bytecode, compiled in the background, done
                daemon.env_cache.wait_for_bytecode(entry.key, 120)
            stamps.runs.clear()
            totals, spawns, rtts = [], [], []
            for i in range(1, args.runs + 1):   # the floor right after each pickup: the same load
                totals.append(one_pickup(api, stamps, "pickup", i, busy, script))
                spawns.append(floor_spawn(3))
                rtts.append(floor_rtt(api, 5))
            report(stamps, totals, statistics.median(spawns), statistics.median(rtts))
        finally:
            shutdown.count += 1
            shutdown.event.set()
            thread.join(10)
            server.stop()


if __name__ == "__main__":
    main()

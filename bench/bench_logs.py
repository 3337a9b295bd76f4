"""Log throughput, stage by stage (issue 24): where a chatty task's lines spend their time on
the way from its stdout to the server, each stage measured alone against the same floor.

    alone     the task writing to /dev/null (its own cost: what no reader can beat)
    blocking  the task + a bare reader blocking in read() (1 MiB at most), counting b"\\n"
    floor     the task + a bare reader of its pipe in large chunks: after a short read it waits
              2 ms, so the task's small writes gather instead of waking the reader one by one
    reader    + OutputReader (LineSplitter: decode, \\r handling, long-line cuts), one sink call per chunk
    shipper   + LogShipper.add (the agent's Redactor, batching by size/age, events) with a no-op send
    http      + ApiClient.add_events to a real server (the whole agent path, minus the daemon)
    encode    the client's JSON-lines encoding of the http stage's batches alone (no task, no pipe)
    ingest    the server alone: the same batches, pre-encoded, posted one after the other

Every stage but encode/ingest spawns the same task the agent would (PYTHONUNBUFFERED=1, as the
agent sets it) and times spawn -> last line delivered; the ratio to the floor is the figure that
matters on a shared machine. Medians of `--runs`; stages interleave so load drifts hit all alike.

    PYTHONPATH=$PWD python3 bench/bench_logs.py [--lines 200000] [--runs 5]

`pipe_floor` is the floor other benches import (bench_agent, side_by_side).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from agent.logs.shipper import LogShipper, OutputReader  # noqa: E402
from shipyard.client.api import ApiClient  # noqa: E402
from shipyard.redact import Redactor  # noqa: E402
from tests.helpers import ACCESS_KEY, SECRET_KEY, start_server  # noqa: E402

FLOOR_CHUNK_BYTES = 1 << 20
FLOOR_NAP_S = 0.002  # a large-chunk reader lets a trickle of small writes gather (agent.logs.reader)
Events = list[dict]


def chatty_code(lines: int) -> str:
    """The task bench_agent runs: `lines` short lines, one write each."""
    return f"import sys\nw = sys.stdout.write\nfor i in range({lines}):\n    w(f'chatty line {{i}}\\n')\n"


def _spawn(lines: int, python: str = sys.executable, code: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # as the agent's task environment has it
    return subprocess.Popen([python, "-c", code or chatty_code(lines)], stdout=subprocess.PIPE, env=env)


def pipe_floor(lines: int, python: str = sys.executable, *, code: str | None = None, nap_s: float = FLOOR_NAP_S,
               since_first_line: bool = False) -> float:
    """Lines/s of the floor: spawn the chatty task (`code`: another one printing at least
    `lines` lines), read its pipe in large chunks (after a short read, wait `nap_s` so the next
    one is large; 0: block in read() at once), count lines, until EOF and exit; timed from the
    spawn, or from its first output with `since_first_line`. Raises if a line is missing."""
    started = time.perf_counter()
    proc = _spawn(lines, python, code)
    assert proc.stdout is not None
    fd, seen = proc.stdout.fileno(), 0
    while chunk := os.read(fd, FLOOR_CHUNK_BYTES):
        if not seen and since_first_line:
            started = time.perf_counter()
        seen += chunk.count(b"\n")
        if nap_s and len(chunk) < FLOOR_CHUNK_BYTES // 2:
            time.sleep(nap_s)
    proc.wait()
    elapsed = time.perf_counter() - started
    proc.stdout.close()
    if seen < lines:
        raise RuntimeError(f"floor reader saw {seen} of {lines} lines")
    return lines / elapsed


def task_alone(lines: int, python: str = sys.executable) -> float:
    """Lines/s of the chatty task writing to /dev/null: its own cost, the bound no reader beats."""
    started = time.perf_counter()
    subprocess.run([python, "-c", chatty_code(lines)], stdout=subprocess.DEVNULL, check=True,
                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return lines / (time.perf_counter() - started)


def _through_reader(lines: int, sink: Callable[[str], None]) -> float:
    """Seconds from spawn to EOF with an OutputReader handing each chunk to `sink`."""
    started = time.perf_counter()
    proc = _spawn(lines)
    assert proc.stdout is not None
    OutputReader(proc.stdout.fileno(), sink, joined=True).run()
    proc.wait()
    proc.stdout.close()
    return time.perf_counter() - started


def reader_stage(lines: int) -> float:
    counted = [0]

    def sink(text: str) -> None:
        counted[0] += text.count("\n") + 1

    elapsed = _through_reader(lines, sink)
    if counted[0] != lines:
        raise RuntimeError(f"reader stage saw {counted[0]} of {lines} lines")
    return lines / elapsed


def shipper_stage(lines: int, send: Callable[[Events], object], spool: Path) -> float:
    """Reader + shipper (the agent's redactor, knowing one secret) with `send`; spawn -> closed."""
    redactor = Redactor([SECRET_KEY, "a-task-key-secret-0123456789"])
    started = time.perf_counter()
    shipper = LogShipper(send, task_id="bench", worker="bench", spool_path=spool, redactor=redactor).start()
    proc = _spawn(lines)
    assert proc.stdout is not None
    OutputReader(proc.stdout.fileno(), shipper.add, joined=True).run()
    proc.wait()
    proc.stdout.close()
    report = shipper.close(timeout_s=60)
    elapsed = time.perf_counter() - started
    if not report.complete or report.stats.lines_shipped != lines:
        raise RuntimeError(f"shipper stage lost lines: {report}")
    return lines / elapsed


class _Recorder:
    """A send that keeps what it is given (the batches the ingest/encode stages replay)."""

    def __init__(self, forward: Callable[[Events], object] | None = None):
        self.batches: list[Events] = []
        self._forward = forward

    def __call__(self, events: Events) -> object:
        self.batches.append(events)
        return self._forward(events) if self._forward is not None else None


def encode_stage(batches: list[Events]) -> float:
    from shipyard.client.api import encode_events

    lines = sum(event["msg"].count("\n") + 1 for batch in batches for event in batch)
    started = time.perf_counter()
    for batch in batches:
        encode_events(batch)
    return lines / (time.perf_counter() - started)


def ingest_stage(client: ApiClient, task: str, attempt: int | None, batches: list[Events]) -> float:
    """The server alone, as the agent calls it: the claim's `attempt` on every event (fenced)."""
    from shipyard.client.api import encode_events

    for batch in batches:
        for event in batch:
            event["task"] = task
            event["timestamp"] += 10 ** 7  # past the high-water mark of the http stage's lines
            if attempt is not None:
                event["attempt"] = attempt
    bodies = [encode_events(batch) for batch in batches]
    lines = sum(event["msg"].count("\n") + 1 for batch in batches for event in batch)
    started = time.perf_counter()
    for body in bodies:
        client.add_encoded_events(body)
    return lines / (time.perf_counter() - started)


def _claimed_task(client: ApiClient) -> tuple[str, int | None]:
    """A task popped from a queue with a lease, as a daemon holds it: (id, attempt)."""
    task = client.call("tasks.create", {"name": "bench-logs", "type": "training"})["id"]
    queue = client.call("queues.create", {"name": "bench-logs"})["id"]
    client.call("tasks.enqueue", {"task": task, "queue": queue})
    data = client.call("queues.get_next_task", {"queue": queue, "lease_s": 600, "worker": "bench"})
    return task, (data.get("lease") or {}).get("attempt")


class _Cpu:
    """CPU seconds a stage cost, split: the task (reaped children), this process (the reader,
    shipper and client: the agent's share), the server process."""

    def __init__(self, server_pid: int):
        self._server = psutil.Process(server_pid)

    def _now(self) -> tuple[float, float, float]:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        server = self._server.cpu_times()
        return kids.ru_utime + kids.ru_stime, me.ru_utime + me.ru_stime, server.user + server.system

    def measure(self, stage: Callable[[], float]) -> tuple[float, float, float, float]:
        """(lines/s, task CPU s, agent CPU s, server CPU s) of one run of `stage`."""
        before = self._now()
        rate = stage()
        after = self._now()
        return (rate, *(b - a for a, b in zip(before, after, strict=True)))


def _one_round(lines: int, client: ApiClient, task: str, attempt: int | None, spool_dir: Path,
               cpu: _Cpu) -> tuple[dict[str, tuple[float, ...]], int]:
    recorder = _Recorder(lambda events: client.add_events([{**e, "task": task, "attempt": attempt} for e in events]))
    stages: dict[str, Callable[[], float]] = {
        "alone": lambda: task_alone(lines),
        "blocking": lambda: pipe_floor(lines, nap_s=0),
        "floor": lambda: pipe_floor(lines),
        "reader": lambda: reader_stage(lines),
        "shipper": lambda: shipper_stage(lines, _Recorder(), spool_dir / "s.jsonl"),
        "http": lambda: shipper_stage(lines, recorder, spool_dir / "h.jsonl"),
        "encode": lambda: encode_stage(recorder.batches),
        "ingest": lambda: ingest_stage(client, task, attempt, recorder.batches),
    }
    return {name: cpu.measure(stage) for name, stage in stages.items()}, len(recorder.batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    samples: dict[str, list[tuple[float, ...]]] = {}
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-logs-") as tmp:
        server = start_server(Path(tmp) / "server")
        try:
            client = ApiClient(server.api_url, ACCESS_KEY, SECRET_KEY, "bench")
            task, attempt = _claimed_task(client)
            cpu = _Cpu(server.proc.pid)
            for _ in range(args.runs):
                results, batches = _one_round(args.lines, client, task, attempt, Path(tmp), cpu)
                for name, result in results.items():
                    samples.setdefault(name, []).append(result)
        finally:
            server.stop()
    _print(samples, args.lines, args.runs, batches)


def _print(samples: dict[str, list[tuple[float, ...]]], lines: int, runs: int, batches: int) -> None:
    floor = statistics.median(s[0] for s in samples["floor"])
    print(f"log path, {lines:,} lines, median of {runs} (load {os.getloadavg()[0]:.2f}); "
          f"{batches} HTTP batches per run; CPU in ms per 100k lines\n")
    print("| stage | lines/s | x floor | task CPU | agent-side CPU | server CPU |\n|---|---|---|---|---|---|")
    per = 100_000 / lines * 1000
    for name, rows in samples.items():
        rate, task_cpu, agent_cpu, server_cpu = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"| {name} | {rate:,.0f} | {rate / floor:.2f} | {task_cpu * per:.0f} | {agent_cpu * per:.0f} | "
              f"{server_cpu * per:.0f} |")


if __name__ == "__main__":
    main()

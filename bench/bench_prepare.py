"""Prepare while queued: does a cold-environment task queued behind a running one start as fast
as a warm one once the first ends?

    python bench/bench_prepare.py [--rounds 5] [--packages 40] [--hold 8] [--keep]

One real server, a local PEP 503 index of tiny wheels (tests/package_index.py), one real
daemon with one slot per mode (each on its own queue; the modes take turns within each round,
so the machine's load falls on all of them alike). Each round: task A runs and waits for a flag file; task B is
enqueued behind it; A is held `--hold` seconds (B waits in the queue meanwhile), then the flag
is written; the figure is from that moment to B's first line (B prints time.time() first).

  warm            B's environment is already in the daemon's cache (built by an earlier task,
                  its bytecode compiled)
  cold, prepare   B's environment is new (a wheel of its own per round, plus --packages shared
                  ones); the daemon builds it while A runs (agent.prepare, the default)
  cold, no prepare  the same with agent.prepare.enabled off: B builds at pickup
  floor           a bare `python -c "print()"` spawn, measured in the same run

The daemons run with agent.prepare.max_load 0 (this bench's machine is shared and loaded; the
default would skip preparing while the load average per CPU is above 1). The uv cache is warm
for the shared wheels in every mode, as on a worker that has run tasks before.
Not run by the tests.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status  # noqa: E402
from tests.helpers import start_server  # noqa: E402
from tests.package_index import PackageIndex  # noqa: E402

WAITER = ("import os, time\nprint('a running', flush=True)\nwhile not os.path.exists({flag!r}):\n"
          "    time.sleep(0.005)\n")
FIRST = "import time\nprint('b first line', repr(time.time()), flush=True)\n"


def floor_spawn(runs: int = 10) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "print()"], check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def wait_line(api, task: str, needle: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in task_log(api, task):
            if needle in line:
                return line
        time.sleep(0.05)
    raise RuntimeError(f"no {needle!r} in the console of {task}")


def entry_key(line: str) -> str:
    found = re.search(r"environment ([0-9a-f]{12}) materialized", line)
    if found is None:
        raise RuntimeError(f"no environment key in {line!r}")
    return found.group(1)


def wait_compiled(cache: Path, key: str, timeout: float = 120) -> None:
    """Until the entry's background bytecode compiler is done: warm means as a task left it."""
    deadline = time.monotonic() + timeout
    while not list((cache / "entries").glob(f"{key}*/BYTECODE-COMPLETE")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"environment {key} not compiled after {timeout:g}s")
        time.sleep(0.05)


def one_round(api, queue: str, flag: Path, requirements: str, hold_s: float) -> tuple[float, float]:
    """(A released -> B's first line, B's "environment ready in" seconds), both in seconds."""
    flag.unlink(missing_ok=True)
    a = create_task(api, "a", {"repository": "", "entry_point": "a.py", "diff": WAITER.format(flag=str(flag))},
                    queue=queue)
    wait_line(api, a, "a running")
    b = create_task(api, "b", {"repository": "", "entry_point": "b.py", "diff": FIRST,
                               "requirements": {"pip": requirements}}, queue=queue)
    time.sleep(hold_s)
    released = time.time()
    flag.write_text("go")
    line = wait_line(api, b, "b first line")
    doc = wait_status(api, b, timeout=120)
    if doc["status"] != "completed":
        raise RuntimeError(f"task b {doc['status']}: {doc.get('status_reason')}")
    env_line = wait_line(api, b, "environment ready in")
    return float(line.split()[-1]) - released, float(env_line.split("environment ready in ")[1].split("s")[0])


MODES = (("warm", True, True), ("prepare", True, False), ("noprepare", False, False))
"""(tag, agent.prepare.enabled, B's environment already in the cache)"""


def start_daemons(server, root: Path, index: PackageIndex) -> dict:
    """One daemon per mode, each on a queue of its own, all up for the whole run (rounds interleave)."""
    daemons = {}
    for tag, prepare, _warm in MODES:
        env = agent_env(server, root / tag, SHIPYARD_EXTRA_INDEX_URLS=json.dumps([index.url("pub")]),
                        SHIPYARD_PREPARE="1" if prepare else "0", SHIPYARD_PREPARE_MAX_LOAD="0")
        daemons[tag] = start_daemon(env, [tag], root / f"{tag}.log")
    return daemons


def mode_round(api, root: Path, index: PackageIndex, shared: list[str], tag: str, warm: bool, i: int,
               hold_s: float) -> tuple[float, float]:
    own = f"bench-prep-{tag}-{i}"
    index.add_wheel("pub", own, "1.0")
    requirements = "".join(f"{name}==1.0\n" for name in [*shared, own])
    if warm:   # the very same set built once before: B finds it in the cache
        pre = create_task(api, "warmup", {"repository": "", "entry_point": "w.py", "diff": "print()\n",
                                          "requirements": {"pip": requirements}}, queue=tag)
        wait_status(api, pre, timeout=120)
        wait_compiled(root / tag / "cache" / "venvs", entry_key(wait_line(api, pre, "materialized at")))
    sample = one_round(api, tag, root / f"{tag}.flag", requirements, hold_s)
    print(f"  round {i + 1} {tag}: {sample[0] * 1000:.0f} ms (environment step {sample[1] * 1000:.0f} ms)", flush=True)
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--packages", type=int, default=40, help="shared tiny wheels in B's environment")
    parser.add_argument("--hold", type=float, default=8.0, help="seconds A runs after B is queued")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the daemons' logs)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    print(f"work directory {root}")
    try:
        index = PackageIndex(root / "index").start()
        shared = [f"bench-prep-shared-{n}" for n in range(args.packages)]
        for name in shared:
            index.add_wheel("pub", name, "1.0")
        server = start_server(root / "server")
        daemons = start_daemons(server, root, index)
        try:
            results: dict[str, list[tuple[float, float]]] = {tag: [] for tag, _p, _w in MODES}
            for i in range(args.rounds):
                for tag, _prepare, warm in MODES:
                    results[tag].append(mode_round(server.api(), root, index, shared, tag, warm, i, args.hold))
            floor = floor_spawn()
        finally:
            for daemon in daemons.values():
                daemon.stop()
            server.stop()
            index.stop()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(results, floor, args)


def report(results: dict[str, list[tuple[float, float]]], floor: float, args: argparse.Namespace) -> None:
    warm = statistics.median(s[0] for s in results["warm"])
    print(f"\nfirst task ends -> queued task's first line, median of {args.rounds} "
          f"({args.packages + 1} packages, A held {args.hold:g} s; load average {_load()})")
    labels = {"warm": "warm env (in the cache)", "prepare": "cold env, prepare on (default)",
              "noprepare": "cold env, prepare off"}
    for tag, label in labels.items():
        firsts = [s[0] for s in results[tag]]
        median = statistics.median(firsts)
        env_step = statistics.median(s[1] for s in results[tag])
        print(f"  {label:<32} {median * 1000:7.0f} ms   {median / warm:5.2f}x warm   "
              f"(min {min(firsts) * 1000:.0f}, max {max(firsts) * 1000:.0f}; environment step {env_step * 1000:.0f} ms)")
    print(f"  {'floor: bare python spawn':<32} {floor * 1000:7.0f} ms")


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()

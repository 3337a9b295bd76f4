"""Server benchmarks: enqueue+get_next_task pairs/s with 1, 8 and 32 clients on SQLite,
tasks.get_by_id p50/p99 under that load, and long-poll wake-up latency.

    python bench/bench_server.py [--seconds 5] [--db URL]

Starts its own `shipyard server` on free ports in a temp dir. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import Api, start_server  # noqa: E402


def _client(api_url: str, queue: str, ready, go, stop, out) -> None:
    api = Api(api_url)
    task = api.call("tasks.create", {"name": "b", "type": "training"})["id"]
    ready.release()
    go.wait()
    done = 0
    while not stop.is_set():
        # force: re-enqueue the same task each round (it is still `queued` after the pop)
        api.call("tasks.enqueue", {"task": task, "queue": queue, "force": True})
        api.call("queues.get_next_task", {"queue": queue})
        done += 1
    out.put(done)


def pairs_per_second(server, clients: int, seconds: float) -> tuple[float, list[float]]:
    """Each client is its own process (a Python client thread pool would measure the GIL)."""
    setup = server.api()
    queue = setup.call("queues.create", {"name": f"bench-{clients}-{time.time_ns()}"})["id"]
    probe = setup.call("tasks.create", {"name": "probe", "type": "training"})["id"]
    ready, go, stop, out = mp.Semaphore(0), mp.Event(), mp.Event(), mp.Queue()
    procs = [mp.Process(target=_client, args=(server.api_url, queue, ready, go, stop, out)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()
    probe_api = Api(server.api_url)
    latencies: list[float] = []
    go.set()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        probe_api.call("tasks.get_by_id", {"task": probe})
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.01)
    stop.set()
    elapsed = time.perf_counter() - started
    total = sum(out.get() for _ in procs)
    for proc in procs:
        proc.join()
    return total / elapsed, latencies


def long_poll_wakeups(server, samples: int) -> list[float]:
    api = server.api()
    queue = api.call("queues.create", {"name": f"wake-{time.time_ns()}"})["id"]
    waiter = Api(server.api_url)
    results: list[float] = []
    for _ in range(samples):
        task = api.call("tasks.create", {"name": "w", "type": "training"})["id"]
        box: dict = {}

        def wait() -> None:
            waiter.call("queues.get_next_task", {"queue": queue, "wait_s": 10})
            box["t"] = time.perf_counter()

        th = threading.Thread(target=wait)
        th.start()
        time.sleep(0.05)
        sent = time.perf_counter()
        api.call("tasks.enqueue", {"task": task, "queue": queue})
        th.join()
        results.append(box["t"] - sent)
    return results


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "srv", db=args.db)
        try:
            print("| clients | enqueue+get_next_task pairs/s | get_by_id p50 ms | get_by_id p99 ms |")
            print("|---|---|---|---|")
            for clients in (1, 8, 32):
                rate, lat = pairs_per_second(server, clients, args.seconds)
                print(f"| {clients} | {rate:,.0f} | {pct(lat, 0.5):.1f} | {pct(lat, 0.99):.1f} |")
            wake = long_poll_wakeups(server, 30)
            print(f"\nlong-poll wake-up (enqueue -> waiting get_next_task returns): "
                  f"p50 {statistics.median(wake) * 1000:.1f} ms, p99 {pct(wake, 0.99):.1f} ms (n={len(wake)})")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

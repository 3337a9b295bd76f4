"""Ingest benchmark: events.add_batch log lines per second, in batches of 1000.

Starts a real server (tests.helpers.start_server, SQLite in a temporary directory), creates a
task, then posts JSON-lines batches of log events for about `--seconds` seconds from one
client connection and prints the sustained rate. The request bodies are prepared before the
clock starts, so the figure is the server's (plus HTTP), not the client's JSON encoding.

Two figures: events per wall-clock second, and events per CPU-second the server process used
(its capacity, which stays meaningful when other work shares the machine), and the server's CPU
per request.

`--kind mixed` sends bench_scale.py's reporter batch (5 scalars at one iteration, 5 log lines;
`--batch` is ignored); `--db pg` runs the server on a private PostgreSQL (tests/pg.py).

    python -m bench.bench_events [--seconds 5] [--batch 1000] [--kind log|scalar|mixed] [--db pg] [--profile FILE]

`--profile FILE` runs the server under cProfile (its pstats written to FILE when it stops; the
CPU figures are then cProfile's, several times the real ones).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from tests.helpers import start_server  # noqa: E402


def _bodies(task: str, batch: int, count: int, kind: str) -> list[bytes]:
    bodies = []
    base = int(time.time() * 1000)
    n = 0
    for _ in range(count):
        lines = []
        for _ in range(batch):
            n += 1
            if kind == "mixed":
                lines.extend(json.dumps(ev) for ev in _mixed(task, n, base + n))
                break
            if kind == "log":
                ev = {"timestamp": base + n, "type": "log", "task": task, "level": "info", "worker": "bench",
                      "msg": f"step {n}: loss=0.{n % 1000:03d} lr=0.001 some typical console output",
                      "allow_locked": False, "model_event": False, "method": "get"}
            else:
                ev = {"timestamp": base + n, "type": "training_stats_scalar", "task": task, "iter": n,
                      "metric": "loss", "variant": f"v{n % 4}", "value": 1.0 / n,
                      "allow_locked": False, "model_event": False, "method": "get"}
            lines.append(json.dumps(ev))
        bodies.append("\n".join(lines).encode())
    return bodies


def _mixed(task: str, n: int, now: int) -> list[dict]:
    events: list[dict] = [{"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": f"v{k}",
                           "value": 1.0 / (n + k), "iter": n, "timestamp": now} for k in range(5)]
    return events + [{"task": task, "type": "log", "msg": f"step {n} line {k}", "level": "info", "timestamp": now}
                     for k in range(5)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--kind", choices=("log", "scalar", "mixed"), default="log")
    parser.add_argument("--db", default=None, help="pg: a private PostgreSQL; default SQLite")
    parser.add_argument("--profile", default=None, metavar="FILE", help="run the server under cProfile")
    args = parser.parse_args()
    database = None
    if args.db == "pg":
        from tests.pg import PgServer

        database = PgServer()
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        launcher = [sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve())] if args.profile else None
        server = start_server(Path(tmp) / "srv", db=database.url if database else args.db, launcher=launcher)
        try:
            api = server.api()
            task = api.call("tasks.create", {"name": "bench", "type": "training"})["id"]
            bodies = _bodies(task, args.batch, 64, args.kind)
            headers = {"Content-Type": "application/json-lines", "Authorization": f"Bearer {api.token}"}
            url = f"{server.api_url}/events.add_batch"
            api.http.post(url, data=bodies[0], headers=headers, timeout=60).raise_for_status()  # warm-up
            sent = 0
            requests_done = 0
            proc = psutil.Process(server.proc.pid)
            cpu_before = sum(proc.cpu_times()[:2])
            started = time.perf_counter()
            while time.perf_counter() - started < args.seconds:
                resp = api.http.post(url, data=bodies[requests_done % len(bodies)], headers=headers, timeout=60)
                data = resp.json()
                if data["meta"]["result_code"] != 200:
                    raise SystemExit(f"add_batch failed: {data['meta']}")
                sent += data["data"]["added"]
                requests_done += 1
            elapsed = time.perf_counter() - started
            cpu = sum(proc.cpu_times()[:2]) - cpu_before
            total = api.call("events.get_task_events", {"task": task, "batch_size": 1})["total"]
        finally:
            server.stop()
            if database:
                database.stop()
    size = 10 if args.kind == "mixed" else args.batch
    print(f"events.add_batch ({args.kind}, {args.db or 'sqlite'}): {sent} events in {requests_done} batches of "
          f"{size} over {elapsed:.2f} s = {sent / elapsed:,.0f} events/s wall-clock; server CPU {cpu:.2f} s = "
          f"{sent / cpu:,.0f} events per server CPU-second, {cpu / requests_done * 1e6:,.0f} us a batch "
          f"({total} events stored)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One events.add_batch, taken apart: server CPU and database round trips per batch, in-process.

The batch is bench_scale.py's reporter's (5 scalars and 5 log lines of one task, the SDK's
shape: no lease attempt), or `--shape logs|scalars`. The handler runs on a fresh store in this
process (no HTTP, no event loop), one batch after another over `--tasks` tasks, so what is
measured is the handler and its storage alone:

    cpu_us     thread CPU per batch (median of 5 runs)
    wall_us    wall-clock per batch (PostgreSQL: includes waiting on its round trips)
    trips      PostgreSQL round trips per batch: the times the client waited for the server (a
               simple Query, a Sync or a Flush in libpq's trace; the pool's checkout ping
               included), counted over 100 more batches after the timed ones

    python bench/bench_ingest.py [--db sqlite|pg|URL] [--batches 500] [--tasks 20] [--shape mixed]
    python bench/bench_ingest.py --db pg --profile FILE   (one more run under cProfile, CPU clock)

`--db pg` starts a private PostgreSQL (tests/pg.py). Run the same script against an older tree
with `SHIPYARD_TREE=/path/to/tree` (its server code is imported instead of this one's).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("SHIPYARD_TREE") or str(Path(__file__).resolve().parents[1]))


def batch_body(task: str, iteration: int, shape: str) -> dict:
    """One request body of `shape`, as the SDK sends it (JSON lines, parsed)."""
    now = int(time.time() * 1000)
    events: list[dict] = []
    if shape in ("mixed", "scalars"):
        events += [{"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": f"v{k}",
                    "value": 1.0 / (iteration + k + 1), "iter": iteration, "timestamp": now} for k in range(5)]
    if shape in ("mixed", "logs"):
        events += [{"task": task, "type": "log", "msg": f"step {iteration} line {k}", "level": "info",
                    "timestamp": now} for k in range(5)]
    return {"__lines__": events}


class TripCounter:
    """Round trips, from libpq's protocol trace of every connection the engine opens, taken only
    between `start` and `stop` (tracing costs CPU): the messages after which the client waits
    for the server (a simple Query, a Sync, a Flush; a Flush right after a Sync is one wait)."""

    ENDS = ("\tQuery\t", "\tSync", "\tFlush")

    def __init__(self, engine, path: Path):
        from sqlalchemy import event

        self.path = path
        self.fh = open(path, "w")  # noqa: SIM115 - libpq writes to its descriptor while tracing
        self.conns: list = []
        self.on = False

        @event.listens_for(engine, "connect")
        def _remember(dbapi_conn, _record) -> None:
            self.conns.append(dbapi_conn)
            if self.on:
                dbapi_conn.pgconn.trace(self.fh.fileno())

    def start(self) -> None:
        self.on = True
        for conn in self.conns:
            conn.pgconn.trace(self.fh.fileno())

    def stop(self) -> int:
        """The client's waits since `start` (untrace flushes each connection's trace)."""
        self.on = False
        for conn in self.conns:
            conn.pgconn.untrace()
        total, last = 0, ""
        with open(self.path) as fh:
            for line in fh:
                end = next((end for end in self.ENDS if "\tF\t" in line and end in line), None)
                if end and not (end == "\tFlush" and last == "\tSync"):
                    total += 1
                last = end or ("" if "\tB\t" in line else last)
        self.fh.truncate(0)
        self.fh.seek(0)
        return total


def run(args: argparse.Namespace, url: str) -> dict:
    import cProfile

    from server.auth.keys import Identity
    from server.rpc.registry import CallContext, Request
    from server.services import load_all
    from server.services.events import ingest
    from server.services.tasks import crud as tasks
    from server.storage.store import Store

    load_all()
    store = Store(url)
    trips = TripCounter(store.engine, Path(args.tmp) / "trace") if not url.startswith("sqlite") else None
    ctx = CallContext(store=store, identity=Identity(user="bench", user_name="bench"), endpoint="events.add_batch",
                      version="2.31", worker="bench")
    ids = [tasks.create(ctx, Request({"name": f"t{i}", "type": "training"}))["id"] for i in range(args.tasks)]
    done = [0]

    def go(count: int) -> None:
        for _ in range(count):
            n = done[0]
            done[0] += 1
            ingest.add_batch(ctx, Request(batch_body(ids[n % len(ids)], n // len(ids), args.shape)))

    go(100)
    cpu, wall = [], []
    for _ in range(5):
        c0, w0 = time.thread_time(), time.perf_counter()
        go(args.batches)
        cpu.append((time.thread_time() - c0) / args.batches * 1e6)
        wall.append((time.perf_counter() - w0) / args.batches * 1e6)
    rts = 0.0
    if trips:
        trips.start()
        go(100)
        rts = trips.stop() / 100
    if args.profile:
        prof = cProfile.Profile(time.thread_time)
        prof.runcall(go, args.batches)
        prof.dump_stats(args.profile)
    store.close()
    return {"db": "pg" if trips else "sqlite", "shape": args.shape, "cpu_us": round(statistics.median(cpu)),
            "wall_us": round(statistics.median(wall)), "trips": round(rts, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, pg (a private PostgreSQL) or a URL")
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--shape", choices=("mixed", "scalars", "logs"), default="mixed")
    parser.add_argument("--profile", default=None, metavar="FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        args.tmp = tmp
        if args.db == "sqlite":
            print(json.dumps(run(args, f"sqlite:///{tmp}/shipyard.db")))
        elif args.db == "pg":
            from tests.pg import PgServer

            pg = PgServer()
            try:
                print(json.dumps(run(args, pg.url)))
            finally:
                pg.stop()
        else:
            print(json.dumps(run(args, args.db)))


if __name__ == "__main__":
    main()

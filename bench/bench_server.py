"""Server benchmarks: enqueue+get_next_task pairs/s with 1, 8 and 32 clients on SQLite,
tasks.get_by_id p50/p99 under that load, long-poll wake-up latency, and projects.get_all_ex
with stats over 100 projects and N tasks (issue 19's target: 100k tasks, p50 <= 50 ms).

    python bench/bench_server.py [--seconds 5] [--db URL|pg] [--client lean|requests] [--project-tasks N]
    python bench/bench_server.py --project-tasks 0 --clients 8 [--db pg] [--profile FILE]
    python bench/bench_server.py --handlers 2000 [--db pg] [--profile FILE]   (the two handlers alone)
    python bench/bench_server.py --tasks-table 10000 [--samples 200] [--db URL]   (the UI's experiment table)

Starts its own `shipyard server` on free ports in a temp dir. Prints a markdown table, with
the server's own CPU time per call (from /proc), so a figure taken on a busy machine can be
read against it.

`--db pg` starts a private PostgreSQL for the run (tests/pg.py: initdb in a temp dir, fsync off).

Floors, measured in the same run before the pairs (so a ratio to them survives a noisy machine):
SQLite WAL commits/s (one writer, the server's own pragmas: the server takes SQLite's write
lock one transaction at a time), PostgreSQL commits/s over loopback with 1 and 8 connections
(one small UPDATE per transaction, the server's synchronous_commit), and debug.ping calls/s
from the same number of lean client processes (HTTP + JSON + envelope, nothing else). A pair is
two calls and two write transactions, so each floor is halved to read against pairs/s.
`--profile FILE` runs the server under cProfile (pstats to FILE when it stops).

The load clients share the machine with the server (2 cores here), so what a client costs
is taken from the server's share. `lean` (the default) is a keep-alive HTTP/1.1 client on a
plain socket, like the load generators servers are usually measured with (wrk, hey): about
40 us of CPU a call. `requests` is the library most Python clients use (the SDK included):
about 0.5-1 ms of CPU a call, so with 8 of them on 2 cores they, not the server, are the limit.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from server.storage.store import sqlite_pragmas  # noqa: E402
from tests.helpers import ACCESS_KEY, Api, start_server  # noqa: E402


class LeanApi:
    """A minimal keep-alive HTTP/1.1 JSON client: one socket, requests written whole, responses
    read by Content-Length. Checks every envelope's result_code like the real clients do."""

    def __init__(self, api_url: str, token: str):
        host, port = api_url.split("//", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\n").encode()
        self.buf = b""

    def call(self, endpoint: str, data: dict) -> dict:
        body = json.dumps(data).encode()
        self.sock.sendall(b"POST /" + endpoint.encode() + b" HTTP/1.1\r\n" + self.head
                          + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            self._read()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(self.buf) < length:
            self._read()
        payload, self.buf = self.buf[:length], self.buf[length:]
        envelope = json.loads(payload)
        if envelope["meta"]["result_code"] != 200:
            raise RuntimeError(f"{endpoint}: {envelope['meta']}")
        return envelope["data"]

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk


def _client(api_url: str, queue: str, ready, go, stop, out, lean: bool = True) -> None:
    api = Api(api_url)
    if lean:
        api = LeanApi(api_url, api.token)
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


def _ping_client(api_url: str, token: str, ready, go, stop, out) -> None:
    api = LeanApi(api_url, token)
    ready.release()
    go.wait()
    done = 0
    while not stop.is_set():
        api.call("debug.ping", {})
        done += 1
    out.put(done)


def _sqlite_committer(path: str, synchronous: str, ready, go, stop, out) -> None:
    """One small write transaction per commit, as the server runs them (BEGIN IMMEDIATE)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in sqlite_pragmas(synchronous):
        conn.execute(pragma)
    ready.release()
    go.wait()
    done = 0
    while not stop.is_set():
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE floor SET n = n + 1 WHERE id = 0")
        conn.execute("COMMIT")
        done += 1
    conn.close()
    out.put(done)


def _pg_committer(url: str, row: int, ready, go, stop, out) -> None:
    """One small UPDATE per transaction over loopback, each connection on its own row."""
    import psycopg

    conn = psycopg.connect(url)
    ready.release()
    go.wait()
    done = 0
    while not stop.is_set():
        conn.execute("UPDATE shipyard_bench_floor SET n = n + 1 WHERE id = %s", (row,))
        conn.commit()
        done += 1
    conn.close()
    out.put(done)


def _rate(targets: list[tuple], seconds: float) -> float:
    """Run each (function, args) in its own process for `seconds` once all are ready: ops/s."""
    ready, go, stop, out = mp.Semaphore(0), mp.Event(), mp.Event(), mp.Queue()
    procs = [mp.Process(target=fn, args=(*args, ready, go, stop, out)) for fn, args in targets]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()
    go.set()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - started
    total = sum(out.get() for _ in procs)
    for proc in procs:
        proc.join()
    return total / elapsed


def sqlite_commit_rate(directory: Path, seconds: float, synchronous: str = "NORMAL") -> float:
    path = str(directory / "floor.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, n INTEGER)")
    conn.execute("INSERT OR IGNORE INTO floor VALUES (0, 0)")
    conn.close()
    return _rate([(_sqlite_committer, (path, synchronous))], seconds)


def pg_commit_rate(url: str, connections: int, seconds: float) -> tuple[float, str]:
    """Commits/s and the database's synchronous_commit (the server leaves it at the database's)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS shipyard_bench_floor (id int PRIMARY KEY, n bigint)")
        conn.execute("INSERT INTO shipyard_bench_floor SELECT g, 0 FROM generate_series(0, %s) g "
                     "ON CONFLICT DO NOTHING", (connections,))
        setting = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
    try:
        return _rate([(_pg_committer, (url, row)) for row in range(connections)], seconds), setting
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE shipyard_bench_floor")


def ping_rate(server, clients: int, seconds: float) -> tuple[float, float]:
    """debug.ping calls/s from `clients` lean processes, and the server's CPU microseconds a call."""
    token = server.api().token
    cpu_before = server_cpu_s(server)
    rate = _rate([(_ping_client, (server.api_url, token))] * clients, seconds)
    return rate, (server_cpu_s(server) - cpu_before) / max(1.0, rate * seconds) * 1e6


def print_floors(server, db: str | None, tmp: Path, clients: int, seconds: float) -> None:
    rows = []
    if db is None:
        rows.append(("SQLite WAL commits/s, 1 writer, synchronous=NORMAL", sqlite_commit_rate(tmp, seconds)))
    else:
        for conns in sorted({1, clients}):
            rate, setting = pg_commit_rate(db, conns, seconds)
            rows.append((f"PostgreSQL commits/s, {conns} connection(s), synchronous_commit={setting}", rate))
    rate, cpu_us = ping_rate(server, clients, seconds)
    rows.append((f"debug.ping calls/s, {clients} lean clients (HTTP + JSON + envelope; "
                 f"server CPU {cpu_us:.0f} us a call)", rate))
    print("| floor (same run) | per second | as pairs/s (2 calls, 2 commits a pair) |\n|---|---|---|")
    for label, value in rows:
        print(f"| {label} | {value:,.0f} | {value / 2:,.0f} |")
    print()


def handler_cpu_us(db: str | None, pairs: int, profile: str | None = None) -> list[float]:
    """CPU microseconds a pair of the two handlers alone (tasks.enqueue, then the pop of
    queues.get_next_task), in this process on a fresh store: no HTTP, no event loop. Five runs
    of `pairs`; with `profile`, one more under cProfile on a CPU clock, its pstats to that file."""
    import cProfile

    from server.auth.keys import Identity
    from server.rpc.registry import CallContext, Request
    from server.services import load_all
    from server.services.queues import crud as queues
    from server.services.tasks import crud as tasks
    from server.services.tasks import status
    from server.storage.store import Store, sqlite_url

    load_all()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(db or sqlite_url(Path(tmp)))
        ctx = CallContext(store=store, identity=Identity(user="bench", user_name="bench"), endpoint="bench",
                          version="2.31")
        queue = queues.create(ctx, Request({"name": f"handlers-{time.time_ns()}"}))["id"]
        task = tasks.create(ctx, Request({"name": "h", "type": "training"}))["id"]

        def run(count: int) -> None:
            for _ in range(count):
                status.enqueue(ctx, Request({"task": task, "queue": queue, "force": True}))
                assert queues._try_pop_many(ctx, [queue], queues._Ask())

        run(200)
        results = []
        for _ in range(5):
            started = time.thread_time()
            run(pairs)
            results.append((time.thread_time() - started) / pairs * 1e6)
        if profile:
            prof = cProfile.Profile(time.thread_time)
            prof.runcall(run, pairs)
            prof.dump_stats(profile)
        store.close()
    return results


def server_cpu_s(server) -> float:
    with open(f"/proc/{server.proc.pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pairs_per_second(server, clients: int, seconds: float, lean: bool = True,
                     database=None) -> tuple[float, list[float], float, float]:
    """Each client is its own process (a Python client thread pool would measure the GIL).
    Returns pairs/s, get_by_id latencies, and the server's and `database`'s (a tests.pg.PgServer)
    CPU microseconds per pair (0 without one)."""
    setup = server.api()
    queue = setup.call("queues.create", {"name": f"bench-{clients}-{time.time_ns()}"})["id"]
    probe = setup.call("tasks.create", {"name": "probe", "type": "training"})["id"]
    ready, go, stop, out = mp.Semaphore(0), mp.Event(), mp.Event(), mp.Queue()
    procs = [mp.Process(target=_client, args=(server.api_url, queue, ready, go, stop, out, lean))
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()
    probe_api = Api(server.api_url)
    latencies: list[float] = []
    cpu_before = server_cpu_s(server)
    db_before = database.cpu_s() if database else 0.0
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
    cpu = server_cpu_s(server) - cpu_before
    db_cpu = database.cpu_s() - db_before if database else 0.0
    for proc in procs:
        proc.join()
    return total / elapsed, latencies, cpu / max(1, total) * 1e6, db_cpu / max(1, total) * 1e6


def long_poll_wakeups(server, samples: int) -> list[float]:
    api = server.api()
    queue = api.call("queues.create", {"name": f"wake-{time.time_ns()}"})["id"]
    waiter = Api(server.api_url)
    results: list[float] = []
    for _ in range(samples):
        task = api.call("tasks.create", {"name": "w", "type": "training"})["id"]
        box: dict = {}

        def wait(box: dict = box) -> None:  # bound now: each sample's thread writes its own box
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


def _task_row(n: int, now: float, project: str) -> dict:
    """A task as the server stores it (document plus derived columns), in one of 7 statuses."""
    from server.storage import tables as t
    from server.storage.store import columns_for, new_id
    from shipyard import clock

    statuses = ("created", "queued", "in_progress", "stopped", "completed", "failed", "published")
    start = now - 86400 * (n % 30) - 3600
    doc = {"id": new_id(), "name": f"task {n}", "type": "training", "status": statuses[n % len(statuses)],
           "project": project, "tags": [], "system_tags": ["archived"] if n % 10 == 0 else [],
           "created": clock.iso(start), "last_update": clock.iso(start), "last_change": clock.iso(start),
           "started": clock.iso(start), "completed": clock.iso(start + 60 + n % 600),
           "hyperparams": {"Args": {f"p{k}": {"section": "Args", "name": f"p{k}", "value": str(n % 7)}
                                    for k in range(10)}},
           "execution": {"parameters": {}, "artifacts": []}, "script": {"entry_point": "train.py"}}
    return {"id": doc["id"], "doc": doc, **columns_for(t.tasks, doc)}


def seed_projects(db_url: str, projects: int, tasks: int) -> None:
    """Write `projects` projects (a fifth of them top-level, the rest one level below) and `tasks`
    tasks spread over them straight into the store, as the server would have stored them."""
    from server.storage import tables as t
    from server.storage.store import Store, new_id
    from shipyard import clock

    store = Store(db_url)
    now = clock.now()
    with store.tx() as conn:
        tops: list[dict] = []
        ids = []
        for i in range(projects):
            parent = tops[i % len(tops)] if tops and i % 5 else None
            name = f"{parent['name']}/sub{i}" if parent else f"bench{i}"
            doc = {"id": new_id(), "name": name, "basename": name.rsplit("/", 1)[-1], "tags": [], "system_tags": [],
                   "created": clock.iso(now), "last_update": clock.iso(now), "parent": parent["id"] if parent else None,
                   "path": [parent["id"]] if parent else []}
            store.insert(conn, t.projects, doc)
            ids.append(doc["id"])
            if not parent:
                tops.append(doc)
        rows = [_task_row(n, now, ids[n % len(ids)]) for n in range(tasks)]
        for start in range(0, len(rows), 5000):
            conn.execute(insert(t.tasks), rows[start:start + 5000])
    if not store.is_sqlite:
        # What autovacuum does after a bulk load, before the server is measured: without it the
        # planner has no statistics and the visibility map is empty (no index-only scans).
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE tasks")
    store.close()


def projects_stats_latency(db: str | None, tasks: int, samples: int = 200) -> list[float]:
    """projects.get_all_ex with include_stats over all 100 projects (with their children), on a
    server of its own over a freshly seeded store."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "srv"
        data_dir.mkdir()
        from server.storage.store import sqlite_url

        seed_projects(db or sqlite_url(data_dir), 100, tasks)
        server = start_server(data_dir, db=db)
        try:
            api = LeanApi(server.api_url, server.api().token)
            body = {"include_stats": True, "stats_with_children": True, "only_fields": ["id", "name", "last_update"]}
            assert len(api.call("projects.get_all_ex", body)["projects"]) >= 100
            latencies = []
            for _ in range(samples):
                t0 = time.perf_counter()
                api.call("projects.get_all_ex", body)
                latencies.append(time.perf_counter() - t0)
            return latencies
        finally:
            server.stop()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def tasks_table_figures(server, db: str | None, count: int, samples: int = 200) -> None:
    """tasks.get_all_ex, a page of 50 with 10 metric columns sorted by a metric, over `count` tasks."""
    import tasks_table

    api = Api(server.api_url)
    project = api.call("projects.create", {"name": "table"})["id"]
    started = time.perf_counter()
    tasks_table.seed(server.data_dir, db, project, ACCESS_KEY, count)
    print(f"seeded {count:,} tasks in {time.perf_counter() - started:.1f} s")
    times = tasks_table.measure(LeanApi(server.api_url, api.token), project, samples)
    print("| tasks | calls | get_all_ex page p50 ms | p99 ms |\n|---|---|---|---|")
    print(f"| {count:,} | {samples} | {pct(times, 0.5):.1f} | {pct(times, 0.99):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--db", default=None)
    parser.add_argument("--client", choices=("lean", "requests"), default="lean")
    parser.add_argument("--project-tasks", type=int, default=100_000,
                        help="tasks under the 100 projects of the get_all_ex stats figure (0: skip it)")
    parser.add_argument("--only-projects", action="store_true", help="measure only get_all_ex with stats")
    parser.add_argument("--tasks-table", type=int, default=0, metavar="N",
                        help="measure only the UI's experiment table query over N tasks")
    parser.add_argument("--samples", type=int, default=200, help="calls measured by --tasks-table")
    parser.add_argument("--clients", default="1,8,32", help="client counts of the pairs table (comma-separated)")
    parser.add_argument("--server-tree", default=None, metavar="DIR",
                        help="run the server from this source tree (e.g. `git archive` of an older commit), "
                             "to compare it with the current one on the same machine and load")
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="run the server under cProfile (its event loop thread), pstats written to FILE")
    parser.add_argument("--handlers", type=int, default=0, metavar="N",
                        help="measure only the enqueue+pop handlers' CPU a pair in-process (5 runs of N pairs)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.db == "pg":
            from tests.pg import PgServer

            pg = PgServer()
            stack.callback(pg.stop)
            args.db = pg.new_database("bench")
            args.pg = pg
        run(args)


def run(args: argparse.Namespace) -> None:
    if args.handlers:
        cpu = handler_cpu_us(args.db, args.handlers, args.profile)
        print(f"enqueue+pop handlers in-process, {'SQLite' if args.db is None else 'PostgreSQL'}, load average "
              f"{os.getloadavg()[0]:.1f}: CPU us/pair best {min(cpu):.0f} (runs {', '.join(f'{c:.0f}' for c in cpu)})")
        return
    if args.project_tasks:
        lat = projects_stats_latency(args.db, args.project_tasks)
        print(f"projects.get_all_ex include_stats, 100 projects, {args.project_tasks:,} tasks: "
              f"p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms (n={len(lat)})\n")
    if args.only_projects:
        return
    with tempfile.TemporaryDirectory() as tmp:
        launcher = [sys.executable, "-m", "cProfile", "-o", os.path.abspath(args.profile)] if args.profile else None
        env = {"PYTHONPATH": os.path.abspath(args.server_tree)} if args.server_tree else None
        if args.server_tree:
            # `-m shipyard` looks in the working directory first: run there, or a checkout's own
            # shipyard/ (the bench run from the repository root) would shadow the tree
            os.chdir(args.server_tree)
        server = start_server(Path(tmp) / "srv", db=args.db, launcher=launcher, env=env)
        try:
            if args.tasks_table:
                tasks_table_figures(server, args.db, args.tasks_table, args.samples)
                return
            counts = [int(n) for n in args.clients.split(",")]
            print(f"{args.client} clients, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
                  f"{'SQLite' if args.db is None else 'PostgreSQL'}\n")
            print_floors(server, args.db, Path(tmp), max(counts), args.seconds)
            database = getattr(args, "pg", None)
            print("| clients | enqueue+get_next_task pairs/s | server CPU us/pair | PostgreSQL CPU us/pair "
                  "| get_by_id p50 ms | get_by_id p99 ms |")
            print("|---|---|---|---|---|---|")
            for clients in counts:
                rate, lat, cpu, db_cpu = pairs_per_second(server, clients, args.seconds, args.client == "lean",
                                                          database)
                print(f"| {clients} | {rate:,.0f} | {cpu:,.0f} | {f'{db_cpu:,.0f}' if database else '-'} "
                      f"| {pct(lat, 0.5):.1f} | {pct(lat, 0.99):.1f} |")
            wake = long_poll_wakeups(server, 30)
            print(f"\nlong-poll wake-up (enqueue -> waiting get_next_task returns): "
                  f"p50 {statistics.median(wake) * 1000:.1f} ms, p99 {pct(wake, 0.99):.1f} ms (n={len(wake)})")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

"""Scale benchmark (issue 23): replicas on one PostgreSQL, many queued tasks, many long-polling agents.

    python bench/bench_scale.py [--tasks 100000] [--queues 50] [--agents 1000] [--reporters 200]
                                [--replicas 1,2] [--pop-seconds 20] [--idle-seconds 20] [--pop-ab 3]
                                [--py-spy DIR]

For each replica count it starts a private PostgreSQL (tests/pg.py) and that many `shipyard
server --db ...` processes, writes the queued tasks straight into the database (each with 10
metrics, so the experiment table has columns to sort), and mints one agent key per simulated agent.
Then, with the agents as separate processes (asyncio, one lean keep-alive HTTP client and one key each, spread
over the replicas as a load balancer would):

    pop        every agent pops with a lease from its queue as fast as answers come: pops/s
    pop A/B    (2+ replicas, --pop-ab rounds) the same, alternately with every agent on the first
               replica and spread over all: the replicas' rate against one's, moments apart
    idle       every agent long-polls an empty queue, their first polls spread over one wait (as
               agents started at different moments are; `--no-spread-polls`: all at once, so all
               of them end together every wait): the replicas' CPU (% of one core per 100
               agents, from /proc) and RSS while they wait
    wake-up    (2+ replicas) a long-poll on replica B, an enqueue on replica A: time to answer
    report     `--reporters` tasks send events.add_batch (scalars and log lines) every second
               while a probe times tasks.get_by_id and a tasks.get_all_ex page of 50 with 10
               metric columns (sorted by one) - with the idle agents still waiting

Prints a markdown table per replica count, and each replica's CPU during the report phase
(`--py-spy DIR`: its stacks then and in the idle phase, recorded by py-spy, one raw file per
replica and phase). The login throttle per client address is turned off
for the run (every agent comes from 127.0.0.1).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.bench_server import LeanApi, pct  # noqa: E402
from bench.tasks_table import _task, page_body  # noqa: E402
from tests import pg  # noqa: E402
from tests.helpers import Api, start_server  # noqa: E402

SERVER_ENV = {"SHIPYARD_LOGIN_FAILURES_PER_ADDRESS": "0", "SHIPYARD_LOGIN_FAILURES_PER_KEY": "0",
              "SHIPYARD_LONG_POLL_MAX_S": "60", "SHIPYARD_HANDLER_THREADS": "8"}


# -- seeding ---------------------------------------------------------------------------------------
def seed(db_url: str, project: str, queue_ids: list[str], count: int) -> None:
    """`count` queued tasks spread over the queues, straight into the database (rows as the
    server writes them, metric rows and queue entries included), 5,000 to a transaction."""
    from server.storage import tables as t
    from server.storage.store import Store, columns_for, metric_rows

    store = Store(db_url)
    rng = random.Random(23)
    now = time.time()
    try:
        for start in range(0, count, 5000):
            tasks, metrics, entries = [], [], []
            for index in range(start, min(count, start + 5000)):
                doc = _task(project, "bench", index, rng)
                queue = queue_ids[index % len(queue_ids)]
                doc.update(status="queued", execution={"queue": queue})
                tasks.append({"id": doc["id"], "doc": doc, **columns_for(t.tasks, doc)})
                metrics += metric_rows(doc)
                entries.append({"queue": queue, "task": doc["id"], "position": float(index), "added": now})
            with store.engine.begin() as conn:
                conn.execute(t.tasks.insert(), tasks)
                conn.execute(t.task_metrics.insert(), metrics)
                conn.execute(t.queue_entries.insert(), entries)
        # the planner's statistics and the visibility map (index-only scans), as autovacuum
        # keeps them on a live server after a bulk load
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        store.close()


def mint_keys(db_url: str, count: int, role: str = "agent") -> list[tuple[str, str]]:
    """`count` keys of `role`, written as KeyStore.create writes them, in one transaction."""
    from server.auth.keys import generate_key_pair, hash_secret
    from server.storage import tables as t
    from server.storage.store import Store

    store = Store(db_url)
    pairs = [generate_key_pair() for _ in range(count)]
    try:
        with store.engine.begin() as conn:
            conn.execute(t.credentials.insert(), [
                {"access_key": access, "secret_hash": hash_secret(secret, generated=True), "name": f"bench-{role}-{i}",
                 "role": role, "created": time.time(), "revoked": False, "expires": None, "instance": None,
                 "minted_by": None} for i, (access, secret) in enumerate(pairs)])
    finally:
        store.close()
    return pairs


# -- simulated agents (separate processes) ---------------------------------------------------------
class LeanHttp:
    """A keep-alive HTTP/1.1 client on one asyncio connection, requests written whole and answers
    read by Content-Length. The clients share the server's two cores here (in a deployment they
    run on other machines), so what a client costs is taken from the server: 200 reporters at a
    batch a second each took 36 % of a core with httpx, 7 % with this. A connection idle for a
    few seconds is opened afresh (the server closes idle ones)."""

    IDLE_S = 3.0

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.port = int(port)
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def call(self, path: str, body: bytes = b"", method: str = "POST", headers: str = "",
                   content_type: str = "application/json") -> dict:
        """The envelope of one call (raises unless its result_code is 200)."""
        if self.writer is None or time.monotonic() - self.used > self.IDLE_S:
            await self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}{headers}"
                          f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        envelope = json.loads(await self.reader.readexactly(length))
        self.used = time.monotonic()
        if b"connection: close" in head:
            await self.close()
        if envelope["meta"]["result_code"] != 200:
            raise RuntimeError(f"{path}: {envelope['meta']}")
        return envelope["data"]

    async def login(self, key: tuple[str, str]) -> str:
        basic = base64.b64encode(f"{key[0]}:{key[1]}".encode()).decode()
        return (await self.call("/auth.login", method="GET", headers=f"Authorization: Basic {basic}\r\n"))["token"]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _agent(url: str, key: tuple[str, str], name: str, queues: list[str], wait_s: float, out: list,
                 ready: Any, go: Any, spread_s: float = 0.0) -> None:
    http = LeanHttp(url, {"X-ClearML-Worker": name})
    token = await http.login(key)
    with ready.get_lock():
        ready.value += 1
    while not go.is_set():  # every agent logged in first: logins are not what is measured
        await asyncio.sleep(0.05)
    # Idle agents start their long-polls spread over one wait, as agents started at different
    # moments are: started together, all 1,000 polls end in the same instant every wait_s, and
    # each such herd (a token check and a pop attempt each) held the replica for a second or more.
    await asyncio.sleep(random.uniform(0, spread_s))
    auth = f"Authorization: Bearer {token}\r\n"
    body = json.dumps({"queues": queues, "wait_s": wait_s, "lease_s": 3600, "worker": name}).encode()
    while True:
        if (await http.call("/queues.get_next_task", body, headers=auth)).get("entry"):
            out.append(time.monotonic())


def _agents_process(urls: list[str], keys: list[tuple[str, str]], first: int, queues: list[str],
                    wait_s: float, results: mp.Queue, stop: Any, ready: Any, go: Any, spread_s: float = 0.0) -> None:
    """Agents `first`.. of this process: agent i talks to replica i % len(urls), queue i % len(queues)."""
    pops: list[float] = []

    async def main() -> None:
        tasks = [asyncio.create_task(_agent(urls[(first + i) % len(urls)], key, f"agent-{first + i}",
                                            [queues[(first + i) % len(queues)]], wait_s, pops, ready, go,
                                            spread_s))
                 for i, key in enumerate(keys)]
        while not stop.is_set():
            await asyncio.sleep(0.1)
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
        results.put(pops)
        for task in tasks:
            task.cancel()

    asyncio.run(main())


class Agents:
    def __init__(self, urls: list[str], keys: list[tuple[str, str]], queues: list[str], wait_s: float,
                 processes: int = 2, spread_s: float = 0.0):
        ctx = mp.get_context("fork")
        self.results: mp.Queue = ctx.Queue()
        self.stop_event = ctx.Event()
        self.ready = ctx.Value("i", 0)
        self.go = ctx.Event()
        self.count = len(keys)
        per = -(-len(keys) // processes)
        self.procs = [ctx.Process(target=_agents_process, daemon=True,
                                  args=(urls, keys[i:i + per], i, queues, wait_s, self.results, self.stop_event,
                                        self.ready, self.go, spread_s))
                      for i in range(0, len(keys), per)]
        for proc in self.procs:
            proc.start()

    def wait_logged_in(self, timeout: float = 600) -> float:
        """Wait until every agent has its token; returns that moment (time.monotonic)."""
        deadline = time.monotonic() + timeout
        while self.ready.value < self.count:
            if time.monotonic() > deadline or not any(p.is_alive() for p in self.procs):
                raise RuntimeError(f"only {self.ready.value} of {self.count} agents logged in")
            time.sleep(0.2)
        self.go.set()
        return time.monotonic()

    def stop(self) -> list[float]:
        self.stop_event.set()
        pops: list[float] = []
        for _ in self.procs:
            pops += self.results.get(timeout=120)
        for proc in self.procs:
            proc.terminate()
            proc.join(10)
        return pops


# -- measurements ----------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def waiting(servers: list) -> int:
    total = 0
    for server in servers:
        for line in httpx.get(f"{server.api_url}/metrics", timeout=30).text.splitlines():
            if line.startswith("shipyard_long_polls_waiting"):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def wait_until_waiting(servers: list, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while waiting(servers) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {waiting(servers)} of {count} agents are long-polling")
        time.sleep(1)


def wake_ups(servers: list, samples: int) -> list[float]:
    """Enqueue on replica 0, a long-poll waiting on replica 1: seconds until it answers."""
    a, b = Api(servers[0].api_url), Api(servers[-1].api_url)
    queue = a.call("queues.create", {"name": f"wake-{time.time()}"})["id"]
    out = []
    for i in range(samples):
        task = a.call("tasks.create", {"name": f"wake-{i}", "type": "training"})["id"]
        got: dict = {}

        def poll(got: dict = got) -> None:
            b.call("queues.get_next_task", {"queue": queue, "wait_s": 30})
            got["at"] = time.perf_counter()

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.3)  # the long-poll is waiting by now
        enqueued = time.perf_counter()
        a.call("tasks.enqueue", {"task": task, "queue": queue})
        thread.join(30)
        out.append(got["at"] - enqueued)
    return out


async def _reporter(url: str, key: tuple[str, str], task: str, stop: Any, out: list, logged_in: Any) -> None:
    http = LeanHttp(url)
    auth = f"Authorization: Bearer {await http.login(key)}\r\n"
    with logged_in.get_lock():
        logged_in.value += 1
    await asyncio.sleep(random.random())  # reporters out of step, as runs started at different moments are
    iteration = 0
    while not stop.is_set():
        now = int(time.time() * 1000)
        events = [{"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": f"v{k}",
                   "value": random.random(), "iter": iteration, "timestamp": now} for k in range(5)]
        events += [{"task": task, "type": "log", "msg": f"step {iteration} line {k}", "level": "info",
                    "timestamp": now} for k in range(5)]
        payload = "\n".join(json.dumps(e) for e in events).encode()
        started = time.perf_counter()
        await http.call("/events.add_batch", payload, headers=auth, content_type="application/json-lines")
        out.append(time.perf_counter() - started)
        iteration += 1
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))


def _reporters_process(urls: list[str], keys: list[tuple[str, str]], tasks: list[str], results: mp.Queue,
                       stop: Any, logged_in: Any) -> None:
    latencies: list[float] = []

    async def main() -> None:
        await asyncio.gather(*[_reporter(urls[i % len(urls)], key, task, stop, latencies, logged_in)
                               for i, (key, task) in enumerate(zip(keys, tasks, strict=True))])

    asyncio.run(main())
    results.put(latencies)


def own_key(admin: Api, role: str) -> tuple[str, str]:
    """A key of its own, as each run and each person has one (a replica runs one call of a key at
    a time: calls sharing a key would wait for each other, which is not what is measured)."""
    made = admin.call("auth.create_credentials", {"role": role, "label": f"bench-{role}"})
    return made["access_key"], made["secret_key"]


def probe(servers: list, project: str, seconds: float) -> tuple[list[float], list[float]]:
    """tasks.get_by_id and a get_all_ex page, alternately, for `seconds` (round robin over replicas),
    as a person of its own (a user key)."""
    admin = Api(servers[0].api_url)
    person = Api(servers[0].api_url, *own_key(admin, "user"))
    some = admin.call("tasks.get_all", {"project": [project], "page_size": 500, "only_fields": ["id"]})["tasks"]
    # opened after that read: a connection's first request must come within the server's
    # header_timeout_s (10 s) of its opening, and at full size under load the read took longer
    clients = [LeanApi(s.api_url, person.token) for s in servers]
    by_id, pages = [], []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        client = clients[n % len(clients)]
        started = time.perf_counter()
        client.call("tasks.get_by_id", {"task": some[n % len(some)]["id"]})
        by_id.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert len(client.call("tasks.get_all_ex", page_body(project))["tasks"]) == 50
        pages.append(time.perf_counter() - started)
        n += 1
        time.sleep(0.05)
    return by_id, pages


# -- one configuration -----------------------------------------------------------------------------
def run(replicas: int, args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    database = pg.PgServer()
    url = database.new_database("bench")
    servers = []
    try:
        servers.append(start_server(root / "r0", db=url, env=SERVER_ENV))
        admin = Api(servers[0].api_url)
        project = admin.call("projects.create", {"name": "scale"})["id"]
        queues = [admin.call("queues.create", {"name": f"q{i}"})["id"] for i in range(args.queues)]
        idle = [admin.call("queues.create", {"name": f"idle{i}"})["id"] for i in range(args.queues)]
        started = time.monotonic()
        seed(url, project, queues, args.tasks)
        keys = mint_keys(url, args.agents)
        print(f"[{replicas} replica(s)] seeded {args.tasks} tasks, {args.agents} keys in "
              f"{time.monotonic() - started:.0f}s", file=sys.stderr)
        for i in range(1, replicas):
            servers.append(start_server(root / f"r{i}", db=url, env=SERVER_ENV))
        return measure(servers, keys, queues, idle, project, args, database)
    finally:
        for server in servers:
            server.stop()
        database.stop()


def pop_rate(urls: list[str], keys: list, queues: list[str], seconds: float) -> float:
    """Pops/s of every agent popping as fast as answers come, agent i on urls[i % len(urls)]."""
    agents = Agents(urls, keys, queues, wait_s=30)
    go = agents.wait_logged_in()
    time.sleep(seconds)
    end = time.monotonic()
    pops = [p for p in agents.stop() if go <= p <= end]
    return len(pops) / (end - go)


def pop_ab(urls: list[str], keys: list, queues: list[str], args: argparse.Namespace) -> list[tuple[float, float]]:
    """The replicas' pop rate against one replica's, on the same database and the same machine
    moments apart: rounds of (every agent on the first replica, the others idle; the agents
    spread over all of them). A shared machine's load drifts over minutes, so two runs that
    each seed their own database are not comparable; adjacent phases are."""
    rounds = []
    for _ in range(args.pop_ab):
        one = pop_rate(urls[:1], keys, queues, args.pop_seconds)
        rounds.append((one, pop_rate(urls, keys, queues, args.pop_seconds)))
        print(f"  pop A/B: one replica {one:.0f}/s, {len(urls)} replicas {rounds[-1][1]:.0f}/s", file=sys.stderr)
    return rounds


def measure(servers: list, keys: list, queues: list[str], idle: list[str], project: str,
            args: argparse.Namespace, database: Any = None) -> dict:
    urls = [s.api_url for s in servers]
    out: dict = {"replicas": len(servers)}
    if len(servers) > 1 and args.pop_ab:
        out["pop_ab"] = pop_ab(urls, keys, queues, args)
    out["pops_per_s"] = pop_rate(urls, keys, queues, args.pop_seconds)
    agents = Agents(urls, keys, idle, wait_s=30, spread_s=30 if args.spread_polls else 0.0)
    agents.wait_logged_in()
    wait_until_waiting(servers, len(keys))
    spies = record_stacks(servers, args, "idle", args.idle_seconds)
    before = [cpu_s(s.proc.pid) for s in servers]
    time.sleep(args.idle_seconds)
    used = sum(cpu_s(s.proc.pid) - b for s, b in zip(servers, before, strict=True))
    for spy in spies:
        spy.wait(60)
    out["idle_cpu_pct_per_100"] = 100 * used / args.idle_seconds / (len(keys) / 100)
    out["rss_mb"] = max(rss_mb(s.proc.pid) for s in servers)
    if len(servers) > 1:
        out["wake_ups"] = wake_ups(servers, args.wake_samples)
    out.update(report_phase(servers, project, args, database))
    agents.stop_event.set()
    for proc in agents.procs:
        proc.terminate()
    return out


def report_phase(servers: list, project: str, args: argparse.Namespace, database: Any = None) -> dict:
    admin = Api(servers[0].api_url)
    tasks = [admin.call("tasks.create", {"name": f"reporter-{i}", "type": "training", "project": project})["id"]
             for i in range(args.reporters)]
    for task in tasks:
        admin.call("tasks.started", {"task": task, "force": True})
    keys = [own_key(admin, "task") for _ in tasks]  # as the agent mints one for each run
    ctx = mp.get_context("fork")
    results, stop, logged_in = ctx.Queue(), ctx.Event(), ctx.Value("i", 0)
    proc = ctx.Process(target=_reporters_process, args=([s.api_url for s in servers], keys, tasks,
                                                        results, stop, logged_in), daemon=True)
    proc.start()
    deadline = time.monotonic() + 300
    while logged_in.value < len(tasks) and time.monotonic() < deadline:
        time.sleep(0.2)  # sign-ins take a while (a key hash each): the probe times the reporting, not them
    time.sleep(3)  # the reporters' first batches
    spies = record_stacks(servers, args, "report", args.probe_seconds)
    before = [cpu_s(s.proc.pid) for s in servers]
    reporters_before = cpu_s(proc.pid)
    machine = machine_busy()
    db_before = database.cpu_s() if database else 0.0
    histograms = [server_histograms(s.api_url) for s in servers]
    started = time.monotonic()
    by_id, pages = probe(servers, project, args.probe_seconds)
    busy = [(cpu_s(s.proc.pid) - b) / (time.monotonic() - started) for s, b in zip(servers, before, strict=True)]
    inside = server_side(histograms, [server_histograms(s.api_url) for s in servers])
    machine_pct = machine_busy(machine)
    db_pct = 100 * (database.cpu_s() - db_before) / (time.monotonic() - started) if database else 0.0
    reporters_pct = 100 * (cpu_s(proc.pid) - reporters_before) / (time.monotonic() - started)
    for spy in spies:
        spy.wait(60)
    stop.set()
    batches = results.get(timeout=120)
    proc.join(30)
    return {"get_by_id": by_id, "get_all_ex": pages, "add_batch": batches, "busy": busy, "inside": inside,
            "machine": machine_pct, "database": db_pct, "reporters": reporters_pct}


def record_stacks(servers: list, args: argparse.Namespace, phase: str, seconds: float) -> list:
    """`--py-spy DIR`: py-spy records each replica for `seconds`, one raw file per replica and
    phase (`replicas2-r0-idle.txt`); the processes to wait for (none without --py-spy)."""
    if not args.py_spy:
        return []
    return [subprocess.Popen(["py-spy", "record", "--pid", str(s.proc.pid), "--duration", str(int(seconds)),
                              "--format", "raw", "--nonblocking", "--output",
                              str(Path(args.py_spy) / f"replicas{len(servers)}-r{i}-{phase}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, s in enumerate(servers)]


def machine_busy(since: tuple[float, float] | None = None) -> Any:
    """(busy, total) CPU jiffies of the whole machine from /proc/stat; with `since`, the share
    of all its cores that was busy since then (100 = every core)."""
    with open("/proc/stat") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]]
    busy, total = sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy
    if since is None:
        return busy, total
    return 100 * (busy - since[0]) / max(1.0, total - since[1])


ENDPOINTS = ("tasks.get_by_id", "tasks.get_all_ex", "events.add_batch")


def server_histograms(api_url: str) -> dict[str, dict[str, float]]:
    """The replica's own request-duration histogram for ENDPOINTS: {endpoint: {le: count, "sum": s}}."""
    import urllib.request

    page = urllib.request.urlopen(api_url + "/metrics", timeout=30).read().decode()
    out: dict[str, dict[str, float]] = {e: {} for e in ENDPOINTS}
    for line in page.splitlines():
        if not line.startswith("shipyard_api_request_duration_seconds"):
            continue
        name, _, value = line.rpartition(" ")
        endpoint = name.split('endpoint="', 1)[1].split('"', 1)[0]
        if endpoint not in out:
            continue
        if "_bucket{" in name:
            out[endpoint][name.split('le="', 1)[1].split('"', 1)[0]] = float(value)
        elif name.startswith("shipyard_api_request_duration_seconds_sum"):
            out[endpoint]["sum"] = float(value)
    return out


def server_side(before: list[dict], after: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Per endpoint over the probe phase, from request to answer inside the replicas (no client
    or network time): (calls, mean ms, the bucket bound at or under which 99 % of them ended, ms)."""
    out = {}
    for endpoint in ENDPOINTS:
        buckets: dict[str, float] = {}
        total = 0.0
        for b, a in zip(before, after, strict=True):
            total += a[endpoint].get("sum", 0.0) - b[endpoint].get("sum", 0.0)
            for le, count in a[endpoint].items():
                if le != "sum":
                    buckets[le] = buckets.get(le, 0.0) + count - b[endpoint].get(le, 0.0)
        calls = buckets.get("+Inf", 0.0)
        bounds = sorted((float(le), n) for le, n in buckets.items())
        p99 = next((le for le, n in bounds if n >= 0.99 * calls), float("inf")) if calls else 0.0
        out[endpoint] = (calls, total / calls * 1000 if calls else 0.0, p99 * 1000)
    return out


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"{args.tasks} queued tasks in {args.queues} queues, {args.agents} agents, {args.reporters} "
             f"reporting tasks; load average {os.getloadavg()[0]:.1f}", "",
             "| replicas | pops/s | get_by_id p50/p99 ms | get_all_ex page p50/p99 ms | add_batch p50/p99 ms "
             "| idle CPU % of a core per 100 agents | RSS MB (largest replica) | wake-up p50/p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wake = f"{statistics.median(r['wake_ups']) * 1000:.1f} / {pct(r['wake_ups'], 0.99):.1f}" if "wake_ups" in r else "-"
        lines.append(f"| {r['replicas']} | {r['pops_per_s']:.0f} | {pct(r['get_by_id'], .5):.1f} / "
                     f"{pct(r['get_by_id'], .99):.1f} | {pct(r['get_all_ex'], .5):.1f} / {pct(r['get_all_ex'], .99):.1f} "
                     f"| {pct(r['add_batch'], .5):.1f} / {pct(r['add_batch'], .99):.1f} | "
                     f"{r['idle_cpu_pct_per_100']:.2f} | {r['rss_mb']:.0f} | {wake} |")
    lines += ["", "Replica CPU during the probe phase (reporters, probe and idle agents; 100 % = one core): "
              + "; ".join(f"{r['replicas']} replica(s): " + ", ".join(f"{b * 100:.0f} %" for b in r["busy"])
                          + f", PostgreSQL {r['database']:.0f} %, the reporters' process {r['reporters']:.0f} % "
                            f"(the whole machine: {r['machine']:.0f} % of its {os.cpu_count()} cores busy)"
                          for r in rows if "busy" in r)]
    lines += ["", "Inside the replicas during the probe phase (their request-duration histograms: no client "
              "or network time; p99 is the histogram bucket bound it falls under):"]
    for r in rows:
        if "inside" in r:
            lines.append(f"{r['replicas']} replica(s): " + "; ".join(
                f"{e} {int(c)} calls, mean {m:.1f} ms, p99 <= {p:.0f} ms" for e, (c, m, p) in r["inside"].items()))
    for r in rows:
        if r.get("pop_ab"):
            ratios = [many / one for one, many in r["pop_ab"] if one]
            lines += ["", f"Pops/s, one replica then {r['replicas']} on the same database, alternately: "
                      + ", ".join(f"{one:.0f} -> {many:.0f}" for one, many in r["pop_ab"])
                      + f"; median ratio {statistics.median(ratios):.2f}x" if ratios else ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--reporters", type=int, default=200)
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--pop-seconds", type=float, default=20)
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--probe-seconds", type=float, default=20)
    parser.add_argument("--wake-samples", type=int, default=30)
    parser.add_argument("--no-spread-polls", dest="spread_polls", action="store_false",
                        help="idle agents start their long-polls together (a herd every wait_s) instead of "
                             "spread over one wait")
    parser.add_argument("--py-spy", default="", metavar="DIR",
                        help="record each replica with py-spy during the idle and probe phases (raw stacks into DIR)")
    parser.add_argument("--pop-ab", type=int, default=3,
                        help="rounds of one-replica/all-replicas pop phases on the same database (0: none)")
    args = parser.parse_args()
    rows = []
    for count in args.replicas.split(","):
        rows.append(run(int(count), args))
        print(table(rows[-1:], args), file=sys.stderr, flush=True)  # each as it comes
    print(table(rows, args))


if __name__ == "__main__":
    main()

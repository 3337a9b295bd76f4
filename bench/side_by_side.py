"""Side by side: the real clearml-agent 3.0.3 and `shipyard daemon` against one Shipyard server.

    python bench/side_by_side.py            # the full run (about 12-15 min on 2 cores)
    python bench/side_by_side.py --quick    # fewer repetitions (about 8 min), for development
    python bench/side_by_side.py --at HEAD  # measure the committed tree, not this working tree
    python bench/side_by_side.py --only pickup,abort --no-write

One embedded server, one loopback package index (bench/pypi_mirror.py), and both daemons running
at once, each on a queue of its own. The same task documents go to both, one agent after the
other, alternating which goes first, and every figure is reported as a ratio, and against its
floor measured in the same run (issue 24: bench/floors.py and the benches it names). Prints a
markdown report and rewrites its generated blocks of docs/benchmarks.md, between the
`<!-- side_by_side.py NAME ... -->` markers (with the machine, the versions and the load average
at the start and the end); everything else in that file (hand-written sections) is kept. The
fairness rules are in that file.

Measures (see METHOD below): pickup, warm start and cold build (every cache empty, and with
the installers' download caches warm) of numpy+pandas+scikit-learn+requests, log throughput and lines lost, abort, the agents' footprint idle and busy, docker-mode
warm start (when both an engine and `shipyard daemon --docker` exist), and the server's
enqueue+dequeue pairs/s and API p99 with 1/8/32 clients (bench/bench_server.py's functions).
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import contextlib

from bench.bench_abort import floor_signal
from bench.bench_agent import MEDIUM
from bench.bench_logs import pipe_floor
from bench.bench_pickup import floor_rtt, floor_spawn
from bench.bench_server import pairs_per_second, pct
from bench.floors import VenvFloor, idle_python_rss_mb
from bench.pypi_mirror import Mirror, ensure_wheelhouse, write_index
from tests import peers
from tests.agent_helpers import FINAL, agent_env, start_daemon, task_log
from tests.compat.conftest import clean_env
from tests.helpers import Api, ServerProcess, start_server

CML, SY = "clearml-agent", "shipyard"
AGENTS = (CML, SY)
CLEARML_AGENT_PIN = peers.PEERS["agent"].requirements[0]           # clearml-agent==3.0.3
# What the loopback index serves: the medium set and what each installer asks for on its own
# (clearml-agent pins pip<22.3 for Python 3.10/3.11; uv seeds the latest pip, setuptools, wheel).
WHEELHOUSE = [*MEDIUM.split(), "pip", "pip<22.3", "setuptools", "wheel"]
# clearml-agent's docker mode pip-installs clearml-agent into every container it starts
DOCKER_WHEELHOUSE = [CLEARML_AGENT_PIN, "setuptools<81"]
LOOPBACK = "127.0.0.1,localhost"
POLL_CYCLE_S = 5.0            # clearml-agent's default --polling-interval (and its output/abort cycle)
PHASE = random.Random(10)     # seeded: the same pauses on every run
DEAD_PROXY = "http://127.0.0.1:9"   # anything that is not loopback fails at once instead of leaking

FIRST = re.compile(r"SXS-FIRST (\d+\.\d+) (\d+)")
IMPORTED = re.compile(r"SXS-IMPORTED (\d+\.\d+)")
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"

# -- the tasks (literal scripts: no repository, the script text in script.diff; both agents
# -- run them the ClearML way, clearml-agent from <venv>/code/, Shipyard from its workspace)
TRIVIAL = 'import os, time\nprint(f"SXS-FIRST {time.time():.6f} {os.getpid()}", flush=True)\n'
MEDIUM_PY = TRIVIAL + ('import numpy, pandas, sklearn, requests\n'
                       'print(f"SXS-IMPORTED {time.time():.6f}", flush=True)\n')
CHATTY = TRIVIAL + textwrap.dedent("""\
    for i in range(@LINES@):
        print(f"SXS-LINE {i:08d} step={i} loss=0.{i % 997:03d} the quick brown fox jumps over the lazy dog")
    print(f"SXS-LAST {time.time():.6f}", flush=True)
""")
STEADY = TRIVIAL + textwrap.dedent("""\
    for s in range(@TICKS@):
        for j in range(@PER_TICK@):
            print(f"SXS-BUSY {s} {j} the quick brown fox jumps over the lazy dog")
        time.sleep(0.1)
""")
LOOP = TRIVIAL + textwrap.dedent("""\
    for i in range(1200):
        print("SXS-TICK", i, flush=True)
        time.sleep(0.1)
    print("SXS-LOOP-FINISHED", flush=True)
""")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pctl(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p50 of 10 values is the 5th smallest, p90 the 9th)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- the agents ------------------------------------------------------------------------------


@dataclass
class Agent:
    name: str
    queue: str
    worker: str
    proc: subprocess.Popen
    log_path: Path
    caches: list[Path]
    """What a cold build wipes (venv caches, package download caches, built venvs)."""
    stop_fn: Callable[[], None]
    bytecode_root: Path | None = None
    """Shipyard's env cache: a cold build compiles bytecode in the background afterwards."""

    def tree(self, exclude: set[int] = frozenset()) -> list[psutil.Process]:
        """The agent's process tree, less the `exclude` pids and everything under them."""
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return []
        found, stack = [], [root]
        while stack:
            proc = stack.pop()
            if proc.pid in exclude:
                continue
            found.append(proc)
            with contextlib.suppress(psutil.NoSuchProcess):
                stack.extend(proc.children())
        return found

    def wipe_caches(self, *, keep_installer: bool = False) -> None:
        """Empty what a cold build must redo; with `keep_installer`, the agent's environment
        caches only: the installers' download caches (INSTALLER_CACHES) stay warm."""
        for path in self.caches:
            if not (keep_installer and path.name in INSTALLER_CACHES):
                shutil.rmtree(path, ignore_errors=True)


INSTALLER_CACHES = frozenset({"uv-cache", "pip-cache", "pip-download-cache"})
"""The installers' download caches among Agent.caches (uv's for Shipyard, pip's for clearml-agent):
kept by the "installer cache warm" cold builds, as the cold-build floor keeps uv's."""


def common_env(mirror_url: str) -> dict[str, str]:
    """What both agents (and so their installers and tasks) get: the loopback index only, no
    pip/uv config of the machine, no proxy that could reach past loopback."""
    env = {"PIP_INDEX_URL": mirror_url, "UV_DEFAULT_INDEX": mirror_url, "PIP_CONFIG_FILE": os.devnull,
           "UV_NO_CONFIG": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "VIRTUALENV_NO_PERIODIC_UPDATE": "1",
           "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = DEAD_PROXY
    return env


def _scrubbed(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items()
            if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV", "PYTHONUNBUFFERED"))
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}


def clearml_agent_config(server: ServerProcess, root: Path, worker: str, *, python_binary: str | None = sys.executable,
                         docker_args: list[str] | None = None) -> str:
    """clearml-agent's defaults, except: paths under the bench dir, the same interpreter as
    Shipyard (venv mode), no update check (it calls a host on the Internet), and in docker mode
    the container's network and installer settings (see METHOD)."""
    extra = "disable_agent_update_check: true\n"
    if docker_args is not None:
        extra += textwrap.dedent(f"""\
            extra_docker_arguments: {json.dumps(docker_args)}
            docker_install_opencv_libs: false
            docker_pip_cache: {root / "docker-pip-cache"}
            docker_apt_cache: {root / "docker-apt-cache"}
        """)
    return peers.clearml_agent_conf(server, worker, python_binary=python_binary, venvs_dir=root / "venvs-builds",
                                    cache_dir=root, vcs_dir=root / "vcs-cache", cache_entries=10, free_space_gb=2.0,
                                    agent_extra=extra)


def start_clearml_agent(server: ServerProcess, root: Path, queue: str, env_extra: dict[str, str],
                        agent_bin: Path | None = None, *, worker: str = f"sxs-clearml-agent-{os.getpid()}:0",
                        docker: str | None = None, docker_args: list[str] | None = None) -> Agent:
    agent_bin = agent_bin or peers.ensure("agent", log=log)
    root.mkdir(parents=True, exist_ok=True)
    config = clearml_agent_config(server, root, worker, python_binary=None if docker else sys.executable,
                                  docker_args=docker_args if docker else None)
    env = clean_env(root / "home", {**server.env(), "PIP_CACHE_DIR": str(root / "pip-cache")}, config_text=config)
    env = {**_scrubbed(env), "HOME": env["HOME"], "CLEARML_CONFIG_FILE": env["CLEARML_CONFIG_FILE"],
           "PIP_CACHE_DIR": str(root / "pip-cache"), **env_extra}
    log_path = root / "agent.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [str(agent_bin), "--config-file", env["CLEARML_CONFIG_FILE"], "daemon", "--queue", queue, "--foreground",
             *(["--cpu-only", "--docker", docker] if docker else [])],   # no GPU here: no `--gpus all`
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def stop() -> None:
        for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        with contextlib.suppress(ProcessLookupError):  # a task or pip still in the group
            os.killpg(proc.pid, signal.SIGKILL)

    agent = Agent(CML, queue, worker, proc, log_path,
                  [root / "venvs-builds", root / "venvs-cache", root / "pip-cache", root / "pip-download-cache"], stop)
    api = server.api()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"clearml-agent exited:\n{log_path.read_text()[-3000:]}")
        if worker in [w["id"] for w in api.call("workers.get_all", {})["workers"]]:
            return agent
        time.sleep(0.2)
    stop()
    raise RuntimeError(f"clearml-agent did not register:\n{log_path.read_text()[-3000:]}")


def start_shipyard(server: ServerProcess, root: Path, queue: str, env_extra: dict[str, str], *,
                   worker: str = "sxs-shipyard:0", docker: str | None = None) -> Agent:
    """`shipyard daemon` with its defaults (30 s long poll, 10 s abort grace, 30 s status report):
    agent_env's test-speed settings are taken out again."""
    env = _scrubbed(agent_env(server, root))
    for name in ("SHIPYARD_STATUS_REPORT_S", "SHIPYARD_ABORT_GRACE_S", "SHIPYARD_LONG_POLL_S"):
        env.pop(name, None)
    env.update({"CLEARML_WORKER_ID": worker, "UV_CACHE_DIR": str(root / "uv-cache"), **env_extra})
    if not docker:   # in docker mode the container's interpreter is the one
        env["SHIPYARD_PYTHON_BINARY"] = sys.executable
    daemon = start_daemon(env, [queue], root / "daemon.log", *(["--docker", docker] if docker else []))

    def stop() -> None:
        # An idle daemon logs "stopped after" at once on SIGTERM, but its process then lingers
        # until the abandoned long poll returns (up to long_poll_s): kill it once it has said so.
        daemon.signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while daemon.proc.poll() is None and time.monotonic() < deadline:
            if "stopped after" in daemon.output():
                try:
                    daemon.proc.wait(2)
                except subprocess.TimeoutExpired:
                    break
            time.sleep(0.1)
        if daemon.proc.poll() is None:
            os.killpg(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(10)

    cache = root / "cache"
    return Agent(SY, queue, worker, daemon.proc, daemon.log_path,
                 [cache / "venvs", root / "uv-cache", root / "work" / "tasks"], stop,
                 bytecode_root=cache / "venvs")


def wait_bytecode(agent: Agent, timeout: float = 300) -> float:
    """Wait for Shipyard's background byte-compiler to finish every cache entry (it runs after a
    cold build and would otherwise load the machine during the next measurement)."""
    if agent.bytecode_root is None:
        return 0.0
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        entries = [p for p in (agent.bytecode_root / "entries").glob("*") if (p / "COMPLETE").exists()]
        if all((p / "BYTECODE-COMPLETE").exists() for p in entries):
            return time.monotonic() - started
        time.sleep(0.2)
    return time.monotonic() - started


class Bench:
    """The loopback index, one server and both daemons; everything stopped on exit."""

    def __init__(self, wheels: Path, agent_bin: Path, *, keep: bool = False, work: Path | None = None):
        self.wheels, self.agent_bin, self.keep = wheels, agent_bin, keep
        self.work = work or Path(tempfile.mkdtemp(prefix="shipyard-sxs-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.mirror = Mirror(wheels, self.work / "mirror.log")
        self.server: ServerProcess | None = None
        self.agents: dict[str, Agent] = {}
        self.extra: list[Agent] = []   # docker-mode daemons, started by their measurement
        self.projects: list[str] = []
        self.env_extra: dict[str, str] = {}
        """Added to both agents' environment (set before entering; bench_env_cache.py --heavy)."""

    def __enter__(self) -> Bench:  # noqa: PYI034
        try:
            self.mirror.start()
            self.server = start_server(self.work / "server")
            self.api = self.server.api()
            self.env = {**common_env(self.mirror.url), **self.env_extra}
            for name in AGENTS:
                self.api.call("queues.create", {"name": f"sxs-{name}"})
            self.agents[CML] = start_clearml_agent(self.server, self.work / "cml", f"sxs-{CML}", self.env,
                                                   self.agent_bin)
            self.agents[SY] = start_shipyard(self.server, self.work / "sy", f"sxs-{SY}", self.env)
        except BaseException:
            self.__exit__()
            raise
        log(f"server {self.server.api_url}, index {self.mirror.url}, work dir {self.work}")
        return self

    def __exit__(self, *exc) -> None:
        for agent in [*self.extra, *self.agents.values()]:
            try:
                agent.stop_fn()
            except Exception as err:  # noqa: BLE001 - stop the rest regardless
                log(f"stopping {agent.name}: {err}")
        if self.server is not None:
            self.server.stop()
        self.mirror.stop()
        self.projects = self.mirror.requested_projects()
        if self.keep:
            log(f"work dir kept: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# -- one task, watched ----------------------------------------------------------------------


class LogTail:
    """New log lines of a task, following the server's scroll (cheap to poll)."""

    def __init__(self, api: Api, task: str):
        self.api, self.task, self.scroll = api, task, None

    def poll(self) -> list[str]:
        return [line for event in self.poll_events() for line in str(event.get("msg", "")).split("\n")]

    def poll_events(self) -> list[dict]:
        new: list[dict] = []
        while True:
            body = {"task": self.task, "event_type": "log", "order": "asc", "batch_size": 1000}
            if self.scroll:
                body["scroll_id"] = self.scroll
            data = self.api.call("events.get_task_events", body)
            self.scroll = data.get("scroll_id") or self.scroll
            events = data.get("events") or []
            new.extend(events)
            if len(events) < 1000:
                return new


@dataclass
class Run:
    agent: str
    task: str
    enqueued: float
    status: str = ""
    first: float | None = None          # the task's own clock at its first line
    pid: int | None = None
    visible: float | None = None        # when the bench first saw that line on the server
    imported: float | None = None
    ended: float | None = None
    extra: dict = field(default_factory=dict)

    def since(self, when: float | None) -> float | None:
        return None if when is None else when - self.enqueued


def create(api: Api, name: str, code: str, requirements: str | None = None) -> str:
    script = {"repository": "", "entry_point": "sxs.py", "working_dir": ".", "binary": PY, "diff": code}
    if requirements is not None:
        script["requirements"] = {"pip": requirements}
    return api.call("tasks.create", {"name": name, "type": "training", "script": script})["id"]


def status_of(api: Api, task: str) -> dict:
    return api.call("tasks.get_all", {"id": [task], "only_fields": ["status", "status_reason"]})["tasks"][0]


def _scan(run: Run, lines: list[str], seen_at: float) -> None:
    for line in lines:
        if run.first is None and (m := FIRST.search(line)):
            run.first, run.pid, run.visible = float(m.group(1)), int(m.group(2)), seen_at
        if run.imported is None and (m := IMPORTED.search(line)):
            run.imported = float(m.group(1))


def random_phase() -> None:
    """Sleep 0-5 s (seeded): what comes next lands at a random point of clearml-agent's 5 s
    cycle (queue poll, output tail, abort check), not right after its last one."""
    time.sleep(PHASE.uniform(0, POLL_CYCLE_S))


def run_task(api: Api, agent: Agent, name: str, code: str, requirements: str | None = None, *,
             timeout: float = 300, until: str = "final", tail: bool = True, poll_s: float = 0.05,
             jitter: bool = False) -> Run:
    """Create, enqueue and watch one task. until="final": till it ends; "first": till its first
    line is on the server (the task keeps running). tail=False watches the status only.
    jitter: enqueue after `random_phase()`."""
    task = create(api, name, code, requirements)
    time.sleep(0.2)
    if jitter:
        random_phase()
    run = Run(agent.name, task, time.time())
    api.call("tasks.enqueue", {"task": task, "queue_name": agent.queue})
    follow = LogTail(api, task)
    deadline = time.monotonic() + timeout
    next_status = 0.0
    while time.monotonic() < deadline:
        now = time.time()
        if tail and run.first is None or (tail and run.imported is None and requirements):
            _scan(run, follow.poll(), now)
        if until == "first" and run.first is not None:
            return run
        if time.monotonic() >= next_status:
            run.status = status_of(api, task)["status"]
            next_status = time.monotonic() + (0.1 if not tail else 0.25)
            if run.status in FINAL:
                run.ended = now
                if tail:
                    _scan(run, follow.poll(), time.time())
                return run
        if agent.proc.poll() is not None:
            raise RuntimeError(f"{agent.name} exited:\n{agent.log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(poll_s)
    raise RuntimeError(f"{agent.name}: task {name} ({task}) not done after {timeout:.0f}s, "
                       f"status {run.status}\n{agent.log_path.read_text(errors='replace')[-3000:]}\n"
                       + "\n".join(task_log(api, task)[-40:]))


def check(run: Run, what: str, api: Api) -> Run:
    if run.status != "completed" or run.first is None:
        tail = "\n".join(task_log(api, run.task)[-30:])
        raise RuntimeError(f"{run.agent} {what}: status {run.status}, first line {run.first}\n{tail}")
    return run


# -- the measurements ------------------------------------------------------------------------


def alternate(rounds: int, agents: dict[str, Agent], fn: Callable[[Agent, int], object]) -> dict[str, list]:
    """fn(agent, i) for each round, both agents, the first one alternating between rounds."""
    out: dict[str, list] = {name: [] for name in agents}
    order = list(agents)
    for i in range(rounds):
        for name in (order if i % 2 == 0 else order[::-1]):
            out[name].append(fn(agents[name], i))
    return out


def measure_pickup(api: Api, agents: dict[str, Agent], runs: int) -> dict[str, list[Run]]:
    for agent in agents.values():   # warm-up: clearml-agent creates its venv, Shipyard its cache entry
        check(run_task(api, agent, "pickup-warmup", TRIVIAL, timeout=300), "pickup warm-up", api)

    def one(agent: Agent, i: int) -> Run:
        run = check(run_task(api, agent, f"pickup-{i}", TRIVIAL, timeout=120, jitter=True), "pickup", api)
        log(f"  pickup {agent.name}: first line {run.since(run.first):.2f}s, visible {run.since(run.visible):.2f}s")
        return run

    return alternate(runs, agents, one)


def agent_stages(api: Api, run: Run) -> str:
    """Where the time went, from the agent's own stamped log lines (for the progress log)."""
    marks = {"pulled from": "pulled", "environment ready": "env ready", "running: ": "started",
             "Running task id": "pulled", "Starting Task Execution": "started"}
    found: dict[str, float] = {}
    for event in LogTail(api, run.task).poll_events():
        msg, stamp = str(event.get("msg", "")), event.get("timestamp")
        for needle, name in marks.items():
            if needle in msg and name not in found and isinstance(stamp, (int, float)):
                found[name] = stamp / 1000 - run.enqueued
    return ", ".join(f"{name} {at:.2f}s" for name, at in sorted(found.items(), key=lambda item: item[1]))


def measure_medium(api: Api, agents: dict[str, Agent], runs: int, *, cold: bool,
                   installer_warm: bool = False) -> dict[str, list[Run]]:
    """The medium set's task: cold (caches wiped first; with `installer_warm` the agents'
    environment caches only, after one uncounted run per agent that fills the installers'
    caches) or warm."""
    label = ("coldwarm" if installer_warm else "cold") if cold else "warm"
    if installer_warm:
        for agent in agents.values():
            check(run_task(api, agent, f"{label}-fill", MEDIUM_PY, MEDIUM, timeout=600), f"{label} fill", api)
            wait_bytecode(agent)

    def one(agent: Agent, i: int) -> Run:
        if cold:
            agent.wipe_caches(keep_installer=installer_warm)
        run = check(run_task(api, agent, f"{label}-{i}", MEDIUM_PY, MEDIUM, timeout=600, jitter=True),
                    f"{label} build", api)
        settle = wait_bytecode(agent)
        if settle > 0.5:
            run.extra["bytecode_s"] = settle
        stages = agent_stages(api, run)
        log(f"  {label} {agent.name}: first line {run.since(run.first):.1f}s, imports done "
            f"{run.since(run.imported):.1f}s" + (f" (bytecode compiled {settle:.0f}s later)" if settle > 0.5 else "")
            + (f"; {stages}" if stages else ""))
        return run

    return alternate(runs, agents, one)


def log_messages(api: Api, task: str) -> list[str]:
    """The `msg` of every log event of a task, in the order the server stored them."""
    tail = LogTail(api, task)
    msgs: list[str] = []
    while True:
        body = {"task": task, "event_type": "log", "order": "asc", "batch_size": 5000}
        if tail.scroll:
            body["scroll_id"] = tail.scroll
        data = api.call("events.get_task_events", body)
        tail.scroll = data.get("scroll_id") or tail.scroll
        events = data.get("events") or []
        msgs.extend(str(event.get("msg", "")) for event in events)
        if len(events) < 5000:
            return msgs


def compare_lines(msgs: list[str], expected: set[str]) -> dict:
    """What the task printed vs what the log holds. A line is intact when some event holds it
    whole; split when its head ends one event and its tail starts the next (clearml-agent cuts
    its 64 KiB events anywhere, so the log shows such a line broken in two); lost otherwise."""
    seen: dict[str, int] = {}
    split: set[str] = set()
    for k, msg in enumerate(msgs):
        for line in msg.split("\n"):
            if line in expected:
                seen[line] = seen.get(line, 0) + 1
        if k + 1 < len(msgs) and msg and not msg.endswith("\n"):
            joined = msg.rpartition("\n")[2] + msgs[k + 1].partition("\n")[0]
            if joined in expected and joined not in seen:
                split.add(joined)
    lost = expected.difference(seen, split)
    return {"intact": len(seen), "split": len(split), "lost": len(lost),
            "duplicated": sum(seen.values()) - len(seen),
            "lost_sample": sorted(lost)[:3], "split_sample": sorted(split)[:3]}


def expected_lines(lines: int) -> set[str]:
    return {f"SXS-LINE {i:08d} step={i} loss=0.{i % 997:03d} the quick brown fox jumps over the lazy dog"
            for i in range(lines)}


def measure_logs(api: Api, agents: dict[str, Agent], lines: int) -> dict[str, dict]:
    expected = expected_lines(lines)

    def one(agent: Agent, i: int) -> dict:
        code = CHATTY.replace("@LINES@", str(lines))
        run = run_task(api, agent, f"chatty-{i}", code, timeout=900, tail=False, poll_s=0.1)
        msgs = log_messages(api, run.task)
        text = "\n".join(msgs)
        if first := FIRST.search(text):
            run.first, run.pid = float(first.group(1)), int(first.group(2))
        last = re.search(r"SXS-LAST (\d+\.\d+)", text)
        result = compare_lines(msgs, expected)
        time.sleep(3)   # anything still arriving after the task ended?
        result["late"] = sum(m.count("SXS-LINE ") for m in log_messages(api, run.task)) - text.count("SXS-LINE ")
        elapsed = (run.ended or time.time()) - (run.first or run.enqueued)
        result.update({"run": run, "status": run.status, "elapsed": elapsed,
                       "rate": (result["intact"] + result["split"]) / elapsed if elapsed > 0 else 0.0,
                       "print_s": (float(last.group(1)) - run.first) if last and run.first else None})
        log(f"  logs {agent.name}: {result['rate']:,.0f} lines/s over {elapsed:.1f}s; intact {result['intact']}, "
            f"split {result['split']}, lost {result['lost']}, duplicated {result['duplicated']}, late {result['late']}"
            + (f"; lost e.g. {result['lost_sample']}" if result["lost"] else "")
            + (f"; split e.g. {result['split_sample'][:1]}" if result["split"] else ""))
        return result

    return alternate(1, agents, one)


def _pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def measure_abort(api: Api, agents: dict[str, Agent], runs: int) -> dict[str, list[dict]]:
    def one(agent: Agent, i: int) -> dict:
        run = run_task(api, agent, f"abort-{i}", LOOP, timeout=300, until="first")
        follow = LogTail(api, run.task)
        while not any(line.startswith("SXS-TICK 3") for line in follow.poll()):   # the loop is running
            time.sleep(0.05)
        random_phase()
        stop_at = time.monotonic()
        api.call("tasks.stop", {"task": run.task})
        gone = stopped = None
        status = ""
        while time.monotonic() - stop_at < 90 and (gone is None or stopped is None):
            if gone is None and _pid_gone(run.pid):
                gone = time.monotonic() - stop_at
            if stopped is None:
                status = status_of(api, run.task)["status"]
                if status in FINAL:
                    stopped = time.monotonic() - stop_at
            time.sleep(0.02)
        log(f"  abort {agent.name}: process gone {gone}s, task {status} {stopped}s")
        if gone is None or stopped is None or status != "stopped":
            raise RuntimeError(f"{agent.name} abort: gone={gone} status={status}")
        return {"gone": gone, "stopped": stopped, "status": status}

    return alternate(runs, agents, one)


class TreeSampler:
    """CPU % (of one core) and RSS of an agent's process tree, less the task, sampled at 4 Hz."""

    def __init__(self, agent: Agent, exclude: set[int] = frozenset()):
        self.agent, self.exclude = agent, set(exclude)
        self.cpu: dict[int, tuple[float, float]] = {}    # pid -> (first, last) cpu seconds
        self.rss: list[float] = []
        self.procs: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        total = 0
        for proc in self.agent.tree(self.exclude):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    used = times.user + times.system
                    total += proc.memory_info().rss
                    self.procs.add(proc.name())
            except psutil.NoSuchProcess:
                continue
            first = self.cpu.get(proc.pid, (used, used))[0]
            self.cpu[proc.pid] = (first, used)
        self.rss.append(total / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def __enter__(self) -> TreeSampler:  # noqa: PYI034
        self._sample()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall = time.monotonic() - self.started

    @property
    def cpu_percent(self) -> float:
        return 100 * sum(last - first for first, last in self.cpu.values()) / self.wall

    @property
    def rss_mb(self) -> float:
        return statistics.mean(self.rss)


def measure_footprint(api: Api, agents: dict[str, Agent], seconds: float) -> dict[str, dict]:
    out: dict[str, dict] = {name: {} for name in agents}
    samplers = {name: TreeSampler(agent) for name, agent in agents.items()}
    for sampler in samplers.values():   # idle: both at once (neither has work)
        sampler.__enter__()
    time.sleep(seconds)
    for name, sampler in samplers.items():
        sampler.__exit__()
        out[name]["idle"] = (sampler.cpu_percent, sampler.rss_mb)
        log(f"  idle {name}: {sampler.cpu_percent:.2f}% CPU, {sampler.rss_mb:.0f} MB ({', '.join(sorted(sampler.procs))})")
    per_tick = 100   # 1,000 lines/s, steady
    ticks = int((seconds + 8) * 10)

    def busy(agent: Agent, i: int) -> None:
        run = run_task(api, agent, "busy", STEADY.replace("@TICKS@", str(ticks)).replace("@PER_TICK@", str(per_tick)), timeout=300, until="first")
        time.sleep(1)
        with TreeSampler(agent, {run.pid}) as sampler:
            time.sleep(seconds)
        api.call("tasks.stop", {"task": run.task})
        deadline = time.monotonic() + 60
        while status_of(api, run.task)["status"] not in FINAL and time.monotonic() < deadline:
            time.sleep(0.2)
        out[agent.name]["busy"] = (sampler.cpu_percent, sampler.rss_mb)
        log(f"  busy {agent.name}: {sampler.cpu_percent:.1f}% CPU, {sampler.rss_mb:.0f} MB "
            f"({', '.join(sorted(sampler.procs))})")

    alternate(1, agents, busy)
    return out


def docker_status(image: str) -> tuple[bool, str]:
    """Can the docker row run? An engine, Shipyard's docker mode and a local image with Python."""
    help_text = subprocess.run([sys.executable, "-m", "shipyard", "daemon", "--help"], capture_output=True,
                               text=True, check=False).stdout
    if "--docker" not in help_text:
        return False, "skipped: `shipyard daemon --docker` does not exist in this tree yet"
    if not shutil.which("docker"):
        return False, "skipped: no docker client on this machine"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60, check=False).returncode != 0:
        return False, "skipped: no Docker engine answers `docker info`"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60,
                      check=False).returncode != 0:
        return False, (f"skipped: image {image} is not on this machine (the bench pulls nothing; "
                       "scripts/build-base-image.sh builds it)")
    return True, ""


def _remove_containers(label: str) -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True,
                         text=True, check=False).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def measure_docker(bench: Bench, runs: int, image: str) -> dict | str:
    """Docker mode: each agent's own docker mode, same image, same loopback index (host network).
    One build per agent first (fills each one's caches), then warm starts alternating."""
    ok, reason = docker_status(image)
    if not ok:
        log(f"  {reason}")
        return reason
    try:
        ensure_wheelhouse(DOCKER_WHEELHOUSE, bench.wheels, log=log)   # clearml-agent installs itself in each container
        write_index(bench.wheels)
        api, env = bench.api, bench.env
        container_env = [f"{k}={v}" for k, v in env.items() if k.startswith("PIP_") and k != "PIP_CONFIG_FILE"]
        container_env += [f"{k}={v}" for k, v in env.items() if "proxy" in k.lower()]
        docker_args = ["--network", "host", *[a for kv in container_env for a in ("-e", kv)]]
        agents: dict[str, Agent] = {}
        for name in AGENTS:
            api.call("queues.create", {"name": f"sxs-{name}-docker"})
        agents[CML] = start_clearml_agent(bench.server, bench.work / "cml-docker", f"sxs-{CML}-docker", env,
                                          bench.agent_bin, worker=f"sxs-clearml-agent-docker-{os.getpid()}:0", docker=image,
                                          docker_args=docker_args)
        bench.extra.append(agents[CML])
        agents[SY] = start_shipyard(bench.server, bench.work / "sy-docker", f"sxs-{SY}-docker", env,
                                    worker="sxs-shipyard-docker:0", docker=image)
        bench.extra.append(agents[SY])

        def one(label: str) -> Callable[[Agent, int], Run]:
            def run(agent: Agent, i: int) -> Run:
                result = check(run_task(api, agent, f"docker-{label}-{i}", MEDIUM_PY, MEDIUM, timeout=900, jitter=True),
                               f"docker {label}", api)
                log(f"  docker {label} {agent.name}: first line {result.since(result.first):.1f}s, "
                    f"imports done {result.since(result.imported):.1f}s")
                return result
            return run

        return {"image": image, "build": alternate(1, agents, one("build")), "warm": alternate(runs, agents, one("warm"))}
    except Exception as exc:  # noqa: BLE001 - a failed docker row must not lose the others
        log(f"  docker mode failed: {exc}")
        return f"failed: {str(exc).splitlines()[0][:300]}"
    finally:
        for agent in list(bench.extra):
            agent.stop_fn()
            bench.extra.remove(agent)
        _remove_containers(f"clearml-worker-id=sxs-clearml-agent-docker-{os.getpid()}:0")
        _remove_containers("shipyard.worker=sxs-shipyard-docker:0")


def measure_server(server: ServerProcess, seconds: float) -> list[tuple[int, float, float, float]]:
    rows = []
    for clients in (1, 8, 32):
        rate, lat, _cpu = pairs_per_second(server, clients, seconds)
        rows.append((clients, rate, pct(lat, 0.5), pct(lat, 0.99)))
        log(f"  server {clients} clients: {rate:,.0f} pairs/s, get_by_id p99 {pct(lat, 0.99):.1f} ms")
    return rows


# -- the report -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": str(os.cpu_count()), "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
            "cpu": model, "kernel": platform.release()}


def versions(agent_bin: Path) -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO,
                                  check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    from sandbox.pyenv import find_uv
    from shipyard import __version__
    uv = find_uv()
    cml = out([str(agent_bin), "--version"]).splitlines()
    return {"python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
            "clearml-agent": (cml[-1] if cml else "?") + f" (pinned {CLEARML_AGENT_PIN})",
            "shipyard": f"{__version__}, " + (os.environ.get("SXS_TREE") or (
                f"the working tree at {out(['git', 'rev-parse', '--short', 'HEAD'])}"
                + (" with uncommitted changes (other work in progress)" if out(["git", "status", "--porcelain"])
                   else ""))),
            "uv (Shipyard's installer)": out([str(uv), "--version"]) if uv else "not found",
            "pip (clearml-agent's installer)": "pip<22.3, clearml-agent's default pin for Python 3.10/3.11"}


def fmt_s(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f}, n={len(values)})"


@dataclass(frozen=True)
class Floor:
    """A row's floor (issue 24), measured in the same run: `value` in the row's unit (seconds,
    or lines/s with `rate`), `what` says how it was measured; `target` names the issue's target
    and `meets(figure, ratio)` judges Shipyard's figure against it (ratio: Shipyard ÷ floor in
    time, 1.0 = at the floor)."""

    value: float
    what: str
    target: str = ""
    meets: Callable[[float, float], bool] | None = None
    rate: bool = False

    def cells(self, figure: float | None) -> tuple[str, float | None, bool | None]:
        """(the floor's two table cells, the ratio, whether the target is met)."""
        if figure is None or figure <= 0 or self.value <= 0:
            return f"{self.what} | -", None, None
        ratio = self.value / figure if self.rate else figure / self.value
        met = None if self.meets is None else self.meets(figure, ratio)
        verdict = f"; {self.target}: **{'met' if met else 'missed'}**" if met is not None else ""
        return f"{self.what} | **{ratio:.2f}x**{verdict}", ratio, met


NO_FLOOR = "- | -"


def ratio_row(measure: str, cml: list[float], sy: list[float], target: float | None, *,
              p: float = 0.5, note: str = "", floor: Floor | None = None,
              floor_targets: dict | None = None) -> tuple[str, float | None, bool | None]:
    """A row comparing both agents (`target`: clearml-agent ÷ Shipyard at least), with Shipyard's
    figure against its floor; a floor target's verdict goes to `floor_targets` under `measure`."""
    if not cml or not sy:
        return f"| {measure} | - | - | - | {floor.what + ' | -' if floor else NO_FLOOR} | {note} |", None, None
    a, b = pctl(cml, p), pctl(sy, p)
    ratio = a / b if b > 0 else float("inf")
    met = None if target is None else ratio >= target
    verdict = "" if target is None else f"≥{target:g}x: **{'met' if met else 'missed'}**"
    cells = f"{fmt_s(cml)} | {fmt_s(sy)}" if p == 0.5 else f"{a:.2f} s | {b:.2f} s"
    floor_cells = NO_FLOOR
    if floor is not None:
        floor_cells, floor_ratio, floor_met = floor.cells(b)
        if floor_targets is not None and floor_met is not None:
            floor_targets[f"{measure}: {floor.target}"] = (floor_ratio, floor_met)
    return (f"| {measure} | {cells} | **{ratio:.1f}x** | {floor_cells} | {verdict}{(' ' + note) if note else ''} |",
            ratio, met)


def since(runs: list[Run], attr: str) -> list[float]:
    return [v for r in runs if (v := r.since(getattr(r, attr))) is not None]


def row_floors(floors: dict[str, dict[str, float]]) -> dict[str, Floor]:
    """The Floor of each row that has one (issue 24's targets), from what `measure_floor`
    measured after each section."""
    out = {}
    if p := floors.get("pickup"):
        spawn, rtt = p["spawn_ms"], p["rtt_ms"]
        out["first"] = Floor((spawn + rtt) / 1000, f"bare spawn {spawn:.0f} ms + loopback RTT {rtt:.1f} ms",
                             "≤50 ms", lambda figure, _: figure <= 0.05)
        out["visible"] = Floor(spawn / 1000, f"bare spawn {spawn:.0f} ms", "≤2x a bare spawn",
                               lambda _, ratio: ratio <= 2)
    if w := floors.get("warm"):
        out["imported"] = Floor(w["import_s"], f"bare `import numpy, pandas, sklearn` in a uv venv of the set: "
                                f"{w['import_s']:.2f} s", "≤1.2x", lambda _, ratio: ratio <= 1.2)
    if c := floors.get("cold"):   # unlike the row (it empties uv's cache too): shown, not judged
        out["cold"] = Floor(c["build_s"], f"`uv venv` + `uv pip install` of the set, warm uv cache "
                            f"(this row empties it): {c['build_s']:.2f} s")
    if c := floors.get("coldwarm"):
        out["coldwarm"] = Floor(c["build_s"], f"`uv venv` + `uv pip install` of the set, warm uv cache: "
                                f"{c['build_s']:.2f} s", "≤1.2x", lambda _, ratio: ratio <= 1.2)
    if lg := floors.get("logs"):
        out["logs"] = Floor(lg["rate"], f"the same task + a bare reader of its pipe in large chunks: "
                            f"{lg['rate']:,.0f} lines/s", "≥350k lines/s", lambda figure, _: figure >= 350_000,
                            rate=True)
    if ab := floors.get("abort"):
        out["gone"] = Floor((ab["signal_ms"] + ab["rtt_ms"]) / 1000, f"SIGTERM → exit {ab['signal_ms']:.1f} ms + "
                            f"long-poll wake (one loopback RTT) {ab['rtt_ms']:.1f} ms", "≤0.3 s",
                            lambda figure, _: figure <= 0.3)
    if fp := floors.get("footprint"):
        out["rss"] = Floor(fp["rss_mb"], f"a bare Python with requests imported: {fp['rss_mb']:.0f} MB", "≤45 MB",
                           lambda figure, _: figure <= 45)
    return out


def _floor_cells(floor: Floor | None, figure: float, floor_targets: dict, name: str) -> str:
    """A hand-built row's floor cells; its floor target's verdict into `floor_targets`."""
    if floor is None:
        return NO_FLOOR
    cells, ratio, met = floor.cells(figure)
    if met is not None:
        floor_targets[f"{name}: {floor.target}"] = (ratio, met)
    return cells


def _log_rows(args, logs: dict, floor: Floor | None = None,
              floor_targets: dict | None = None) -> tuple[list[str], tuple[None, bool]]:
    """Log throughput and line accounting rows, and the zero-lines-lost target's outcome."""
    rows = []
    lg = {name: logs[name][0] for name in AGENTS}
    a, b = lg[CML]["rate"], lg[SY]["rate"]
    floor_cells = _floor_cells(floor, b, {} if floor_targets is None else floor_targets, "log throughput")
    rows.append(f"| log throughput, {args.lines:,} lines printed as fast as the task can: delivered lines/s "
                f"(first line → task ended) | {a:,.0f} | {b:,.0f} | **{b / a if a else float('inf'):.1f}x** | "
                f"{floor_cells} | |")

    def counts(r: dict) -> str:
        return f"{r['lost']:,} / {r['split']:,} / {r['duplicated']:,} / {r['late']:,}"

    clean = {n: lg[n]["lost"] == 0 and lg[n]["split"] == 0 and lg[n]["duplicated"] == 0 for n in AGENTS}
    rows.append(f"| lines lost / broken in two (split across log events) / duplicated / arrived after the "
                f"task ended | {counts(lg[CML])} | {counts(lg[SY])} | | {NO_FLOOR} | zero lost: "
                f"**{'met' if clean[SY] else 'missed'}** |")
    printing = {n: lg[n]["print_s"] for n in AGENTS}
    rows.append(f"| (how long the task itself took to print them) | "
                f"{printing[CML] or 0:.1f} s | {printing[SY] or 0:.1f} s | | {NO_FLOOR} | |")
    return rows, (None, clean[SY])


def _footprint_rows(fp: dict, floor: Floor | None = None, floor_targets: dict | None = None) -> list[str]:
    """CPU and memory of each agent's process tree, idle and busy (`floor`: the idle RSS's)."""
    rows = []
    for state in ("idle", "busy"):
        if state in fp[CML] and state in fp[SY]:
            (ca, ra), (cb, rb) = fp[CML][state], fp[SY][state]
            what = "idle, both waiting for work" if state == "idle" else "busy, running a task printing 1,000 lines/s"
            floor_cells = _floor_cells(floor if state == "idle" else None, rb,
                                       {} if floor_targets is None else floor_targets, "idle daemon RSS")
            rows.append(f"| agent footprint {what}: CPU % of one core / RSS of the agent's process tree "
                        f"(the task excluded) | {ca:.2f} % / {ra:.0f} MB | {cb:.2f} % / {rb:.0f} MB | "
                        f"{(ca / cb if cb else float('inf')):.1f}x CPU, {(ra / rb if rb else float('inf')):.1f}x RSS | "
                        f"{floor_cells} | |")
    return rows


def _docker_rows(d, rows: list[str], add) -> None:
    """Docker mode rows, or the reason they are missing (`d` is then a string)."""
    if isinstance(d, str):
        rows.append(f"| docker mode warm start | - | - | - | {NO_FLOOR} | {d} |")
    else:
        add(ratio_row(f"docker mode, image `{d['image']}`: first build of the medium set → first line",
                      since(d["build"][CML], "first"), since(d["build"][SY], "first"), None))
        add(ratio_row("docker mode warm start, medium set: enqueue → first line", since(d["warm"][CML], "first"),
                      since(d["warm"][SY], "first"), None))
        add(ratio_row("docker mode warm start, medium set: enqueue → imports done",
                      since(d["warm"][CML], "imported"), since(d["warm"][SY], "imported"), None))


def _add_row(rows: list[str], row: tuple) -> tuple:
    """Append a ratio_row's text to `rows`; return its (ratio, met) for the targets."""
    text, ratio, met = row
    rows.append(text)
    return ratio, met


def _pickup_rows(p: dict, add, fl: dict[str, Floor], ft: dict) -> tuple:
    """Pickup rows; returns the p50 ≥10x target's (ratio, met)."""
    target = add(ratio_row("pickup: enqueue → task's first line, p50", since(p[CML], "first"),
                           since(p[SY], "first"), 10, floor=fl.get("first"), floor_targets=ft))
    add(ratio_row("pickup: enqueue → task's first line, p90", since(p[CML], "first"), since(p[SY], "first"),
                  None, p=0.9))
    add(ratio_row("pickup: enqueue → that line on the server, p50", since(p[CML], "visible"),
                  since(p[SY], "visible"), None, floor=fl.get("visible"), floor_targets=ft))
    return target


def _warm_rows(w: dict, add, fl: dict[str, Floor], ft: dict) -> tuple:
    """Warm start rows; returns the ≥10x target's (ratio, met)."""
    target = add(ratio_row("warm start, medium set: enqueue → first line", since(w[CML], "first"),
                           since(w[SY], "first"), 10))
    add(ratio_row("warm start, medium set: enqueue → imports done", since(w[CML], "imported"),
                  since(w[SY], "imported"), None, floor=fl.get("imported"), floor_targets=ft))
    return target


def _cold_rows(c: dict, add, fl: dict[str, Floor], ft: dict) -> tuple:
    """Cold build rows; returns the ≥3x target's (ratio, met)."""
    bc = [r.extra["bytecode_s"] for r in c[SY] if "bytecode_s" in r.extra]
    target = add(ratio_row("cold build, medium set: enqueue → first line", since(c[CML], "first"),
                           since(c[SY], "first"), 3, floor=fl.get("cold"), floor_targets=ft))
    add(ratio_row("cold build, medium set: enqueue → imports done", since(c[CML], "imported"),
                  since(c[SY], "imported"), None,
                  note=(f"(Shipyard then byte-compiles the new cache entry in the background, done "
                        f"{statistics.median(bc):.0f} s after the task ended; the bench waits for it, "
                        "uncounted)" if bc else "")))
    return target


def _coldwarm_rows(c: dict, add, fl: dict[str, Floor], ft: dict) -> None:
    """Cold build with the installers' download caches warm: the definition of its floor."""
    add(ratio_row("cold build, installer cache warm: enqueue → first line", since(c[CML], "first"),
                  since(c[SY], "first"), None, floor=fl.get("coldwarm"), floor_targets=ft))
    add(ratio_row("cold build, installer cache warm: enqueue → imports done", since(c[CML], "imported"),
                  since(c[SY], "imported"), None))


def _build_rows(results: dict, add, fl: dict[str, Floor], ft: dict, targets: dict) -> None:
    """The cold build rows: every cache empty, then the installers' download caches warm."""
    if "cold" in results:
        targets["cold build ≥3x"] = _cold_rows(results["cold"], add, fl, ft)
    if "coldwarm" in results:
        _coldwarm_rows(results["coldwarm"], add, fl, ft)


def _abort_rows(ab: dict, add, fl: dict[str, Floor], ft: dict) -> None:
    """How long tasks.stop takes to end the task process, and to mark the task stopped."""
    add(ratio_row("abort: tasks.stop → task process gone", [r["gone"] for r in ab[CML]],
                  [r["gone"] for r in ab[SY]], None, floor=fl.get("gone"), floor_targets=ft))
    add(ratio_row("abort: tasks.stop → task `stopped` on the server", [r["stopped"] for r in ab[CML]],
                  [r["stopped"] for r in ab[SY]], None))


def _server_table(levels: list) -> str:
    """Server throughput and API latency at each client count."""
    srv = ["", ("Server (the same embedded server; bench/bench_server.py's `pairs_per_second`: each client "
                "a process (bench_server's lean keep-alive HTTP client) re-enqueuing one task and popping it "
                "with `queues.get_next_task`, while a probe times `tasks.get_by_id` every 10 ms):"), "",
           "| clients | enqueue+dequeue pairs/s | API p50 (tasks.get_by_id) | API p99 |", "|---|---|---|---|"]
    srv += [f"| {c} | {rate:,.0f} | {p50:.1f} ms | {p99:.1f} ms |" for c, rate, p50, p99 in levels]
    return "\n".join(srv)


HEADER = ("| measure | clearml-agent 3.0.3 | shipyard daemon | shipyard's advantage (>1x: shipyard better) "
          "| floor (same run) | shipyard ÷ floor (1.00x: at the floor) | target |")


def report(args, info: dict, results: dict, targets: dict, floor_targets: dict | None = None) -> str:
    """The results table (and the server's); the rows' targets go to `targets`, issue 24's
    targets against the floors to `floor_targets`."""
    rows = [HEADER, "|---|---|---|---|---|---|---|"]
    add = functools.partial(_add_row, rows)
    fl = row_floors(results.get("floors") or {})
    ft = {} if floor_targets is None else floor_targets
    if "pickup" in results:
        targets["pickup (p50) ≥10x"] = _pickup_rows(results["pickup"], add, fl, ft)
    if "warm" in results:
        targets["warm start ≥10x"] = _warm_rows(results["warm"], add, fl, ft)
    _build_rows(results, add, fl, ft, targets)
    if "logs" in results:
        log_rows, targets["zero lines lost"] = _log_rows(args, results["logs"], fl.get("logs"), ft)
        rows += log_rows
    if "abort" in results:
        _abort_rows(results["abort"], add, fl, ft)
    if "footprint" in results:
        rows += _footprint_rows(results["footprint"], fl.get("rss"), ft)
    if "docker" in results:
        _docker_rows(results["docker"], rows, add)
    if results.get("skipped"):
        rows.append(f"| {', '.join(results['skipped'])} | - | - | - | {NO_FLOOR} | skipped: past the --max-minutes budget |")
    out = ["\n".join(rows)]
    if "server" in results:
        out.append(_server_table(results["server"]))
    return "\n".join(out)


METHOD = """\
## How it is measured

- **One server, both agents.** `shipyard server` (SQLite) on loopback; `clearml-agent daemon`
  (the real 3.0.3 from PyPI, in its own venv: `tests/peers.py`) on queue `sxs-clearml-agent`,
  `shipyard daemon` on queue `sxs-shipyard`, both running for the whole bench. The same task
  documents go to each queue, one agent at a time, alternating which agent goes first in each
  round, so slow drifts of this shared machine's load hit both.
- **Tasks** are literal scripts (no repository: the script text is `script.diff`, the ClearML
  way of running a script without git), so both agents do the same work and no git server is
  involved. The script's first statement prints `SXS-FIRST <time.time()> <pid>`, which gives the
  moment the task's own code started (same clock as the bench) and its process id.
- **Arrival phase**: before each enqueue (pickup, warm, cold, docker rows) and before each abort
  request the bench pauses 0–5 s at random (seeded), so these land at a random point of
  clearml-agent's 5 s cycle; without it, a task enqueued just after the previous one ended
  would always meet clearml-agent at the start of its 5 s sleep. Shipyard long-polls and does
  not care.
- **pickup**: a trivial task, warm caches (one warm-up task per agent first). Enqueue → the task's
  first line (task clock), p50 and p90; also enqueue → the bench sees that line through the API
  (polled every 50 ms), which adds each agent's log shipping delay. clearml-agent polls its
  queues every **5 s, its default** (`--polling-interval`, minimum 5): the bench does not lower
  it. Shipyard long-polls (`queues.get_next_task` with a wait, default 30 s).
- **warm start**: numpy pandas scikit-learn requests (unpinned, as a user writes them) after a
  cold build of the same set: enqueue → first line, and → `import numpy, pandas, sklearn,
  requests` done.
- **cold build**: the same task after wiping, for clearml-agent, its venvs dir, venv cache, pip
  cache and pip download cache; for Shipyard, its env cache and its uv cache. Both then download
  every wheel again from the loopback index. Shipyard byte-compiles a new cache entry in the
  background after publishing it; the bench waits for that before the next measurement (its
  duration is noted), and the "imports done" row shows what a not-yet-compiled env costs.
- **cold build, installer cache warm** (`--only coldwarm`): the same task after wiping only the
  agents' environment caches (clearml-agent: venvs dir and venv cache; Shipyard: env cache and
  task dirs), keeping the installers' download caches (clearml-agent's pip cache and pip
  download cache, Shipyard's uv cache), after one uncounted run per agent that fills them. This
  is the floor's definition (a fresh venv from a warm uv cache), so this row carries the ≤1.2x
  target; the everything-empty row above shows that floor only for reference.
- **log throughput**: a task prints N lines of ~90 characters in a tight `print` loop (both
  agents run tasks unbuffered: clearml-agent with `python -u`, Shipyard with
  `PYTHONUNBUFFERED=1`). Rate = distinct expected lines in the task log ÷ (task's first line →
  task reported ended; both agents flush the console before reporting the end). Every line is
  then compared with what was printed, event by event: whole in some event (intact), its head
  ending one event and its tail starting the next (split: the log shows it broken in two),
  absent (lost), more than once (duplicated); and whether more arrived 3 s after the end.
- **abort**: a task printing every 100 ms; once its 4th line is on the server (plus the random
  pause) the bench calls
  `tasks.stop` and polls every 20 ms for the task's process to be gone (psutil, by the pid the
  task printed) and for the task's status to be `stopped`. The task does not trap SIGTERM:
  clearml-agent SIGKILLs the tree; Shipyard sends SIGTERM (grace period 10 s, its default).
- **footprint**: CPU time and RSS of each agent's process tree (the daemon and every process
  under it, e.g. clearml-agent's `execute` child before it execs the task, pip/uv), less the task
  process and what it starts, sampled at 4 Hz. Idle: both daemons waiting, at the same time.
  Busy: while a task prints 1,000 lines/s, one agent at a time. RSS is summed over the tree (shared
  pages count once per process).
- **docker mode**: a second pair of daemons, `clearml-agent daemon --docker IMAGE --cpu-only` and
  `shipyard daemon --docker IMAGE`, same local image (nothing is pulled), same medium task: one
  first build per agent (their docker-mode caches start empty), then warm starts alternating.
- **server**: bench/bench_server.py's `pairs_per_second` and `pct`, against the same server.
- **floor** (issue 24): right after each section, what the machine allows for that job done
  bare, and Shipyard's figure ÷ that floor in time (1.00x: at the floor; a rate is inverted).
  pickup → first line: a bare `python -c "print()"` spawn → its line read (bench_pickup's
  `floor_spawn`) + one loopback round trip (`floor_rtt`); → that line on the server: the bare
  spawn (target ≤2x). warm start → imports done: a bare `python -c "import numpy, pandas,
  sklearn"` in a venv of the set that uv built from Shipyard's warm uv cache (after one untimed
  import, as a warm environment has its byte code). cold build → first line: `uv venv` + `uv pip
  install` of the set into a fresh venv from that warm cache (median of 3, after each cold section). log throughput: the same task,
  unbuffered as Shipyard runs it, read by a bare reader of its pipe in large chunks counting
  lines, first line → exit (bench_logs's `pipe_floor`). abort → process gone: SIGTERM → a
  sleeping child's exit (bench_abort's `floor_signal`) + one loopback round trip (the long-poll
  wake). Idle RSS: a bare Python that imported requests.

## Fairness

- **Same server, same machine, same run**; figures are ratios of runs interleaved in time.
- **Same interpreter**: both agents build task environments from `{python}` (clearml-agent
  `agent.python_binary`, Shipyard `SHIPYARD_PYTHON_BINARY`); neither goes through a pyenv shim.
- **Same packages from the same place**: a wheelhouse served as a PEP 503 index on 127.0.0.1
  (`bench/pypi_mirror.py`, one version of each project); `PIP_INDEX_URL` and `UV_DEFAULT_INDEX`
  point at it, the machine's pip/uv configuration is switched off (`PIP_CONFIG_FILE=/dev/null`,
  `UV_NO_CONFIG=1`), and HTTP(S) proxies point at a closed loopback port, so nothing but loopback
  is reachable by either agent, its installers or its tasks.
- **Same caches allowed for both**, each agent's own defaults: clearml-agent keeps its venv
  cache (`agent.venvs_cache`, on by default, 10 entries), re-uses its venvs dir, its pip HTTP/wheel
  cache and its pip download cache; Shipyard keeps its content-addressed env cache and uv's cache.
  Warm rows run with all of them full, cold rows with all of them emptied (same policy for both:
  every package is downloaded again from the loopback index), the "installer cache warm" cold
  rows with the environment caches emptied and the download caches full (again the same for both).
- **Each agent's default installer**: pip (`agent.package_manager.type: pip`, clearml-agent's
  default) for clearml-agent, uv for Shipyard. clearml-agent can be configured to use uv
  (`uv_replace_pip`); that is not what it does out of the box, so it is not what is measured.
- **Defaults otherwise**: clearml-agent's 5 s polling, its status/abort checks; Shipyard's 30 s
  long poll, 200 ms log batches, 10 s abort grace, 30 s status reports. The only non-default
  clearml-agent settings are paths, the interpreter and `agent.disable_agent_update_check`
  (the update check calls a host on the Internet).
- **Docker mode** needs an engine, `shipyard daemon --docker` and the image on the machine; the
  row is skipped, with the reason, when one is missing. Both agents' containers use the host
  network (Shipyard's default; `--network host` in clearml-agent's `agent.extra_docker_arguments`,
  which also passes the index and proxy variables into its containers). clearml-agent keeps its
  default of pip-installing `clearml-agent` (3.0.3, from the loopback index) in every container;
  `agent.docker_install_opencv_libs` is switched off, since it would `apt-get` from the Internet
  in every container (this favours clearml-agent); `--cpu-only` because this machine has no GPU.

## Reading the figures

- clearml-agent polls an empty queue every 5 s, then starts a fresh `clearml-agent execute`
  process per task that re-checks the venv (`pip install "pip<22.3"`, requirements, `pip
  freeze`) before the script runs; its daemon tails the task's output file and checks for an
  abort once per 5 s cycle. Hence pickup ≈ 0–5 s of waiting for the poll + seconds of setup, and
  abort ≈ 0–5 s.
- clearml-agent writes the task's output to a file and packs lines into 64 KiB log events cut
  at any byte, so about one line per 64 KiB shows up broken in two in the log (counted as split,
  not lost: the text is all there).
- The "imports done" rows add the same work for both agents (importing numpy, pandas, sklearn
  and requests: about 1.3 s of CPU here) and swing by seconds with the machine's load; the
  first-line rows are the agents' own part.
- Shipyard reads the task's output from a pipe and redacts and batches every line before
  shipping it, so a task printing as fast as it can waits on the pipe (compare the time the task
  itself took to print), where clearml-agent's task writes to a file and never waits.
"""


def _verdicts(targets: dict) -> str:
    return "; ".join(f"{name}: **{'met' if met else 'missed'}**" + (f" ({ratio:.2f}x)" if ratio else "")
                     for name, (ratio, met) in targets.items() if met is not None) or "none measured"


def render(args, started: str, mach: dict, load_start: tuple, load_end: tuple, vers: dict, table: str,
           targets: dict, wall: float, mirror_projects: list[str], floor_targets: dict | None = None) -> dict[str, str]:
    """The generated blocks of docs/benchmarks.md: {"results": ..., "method": ...}."""
    load = lambda la: " / ".join(f"{x:.2f}" for x in la)
    cmdline = os.environ.get("SXS_ARGV", " ".join(args.argv))
    lines = [
        "# Side-by-side benchmarks: clearml-agent vs shipyard daemon",
        "",
        (f"Generated by `python bench/side_by_side.py{' ' + cmdline if cmdline else ''}` "
         f"on {started} (took {wall / 60:.1f} min). Re-run it to refresh this block and the method "
         "below; the hand-written sections of this file are kept."),
        "",
        "| machine | |", "|---|---|",
        f"| CPUs (nproc) | {mach['nproc']} |", f"| CPU model | {mach['cpu']} |", f"| memory | {mach['memory']} |",
        f"| kernel | {mach['kernel']} |",
        f"| load average (1/5/15 min) at the start | {load(load_start)} |",
        f"| load average (1/5/15 min) at the end | {load(load_end)} |",
        *[f"| {k} | {v} |" for k, v in vers.items()],
        "",
        "The machine is shared with other work (see the load average): read the ratios, not the",
        "absolute times, and rerun when a figure looks off.",
        "",
        "## Results",
        "",
        table,
        "",
        "Targets: " + _verdicts(targets) + ".",
        "",
        "Against the floor (issue 24; the ratio is Shipyard ÷ the floor in time): "
        + _verdicts(floor_targets or {}) + ".",
        "",
        f"Projects the agents fetched from the loopback index during the run: {', '.join(mirror_projects) or 'none'}.",
    ]
    return {"results": "\n".join(lines), "method": METHOD.format(python=sys.executable)}


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- side_by_side.py {name}: generated; a re-run rewrites only what is between these markers -->",
            f"<!-- side_by_side.py {name}: end -->")


def merge_blocks(text: str, blocks: dict[str, str]) -> str:
    """`text` (a markdown file) with each named block replaced between its markers, everything
    else kept as it was (hand-written sections); a block whose markers are missing is added at
    the end (a new file: all of them, in order)."""
    for name, body in blocks.items():
        begin, end = _markers(name)
        block = f"{begin}\n{body.strip()}\n{end}"
        start = text.find(begin)
        if start < 0:
            text = f"{text.rstrip()}\n\n{block}\n" if text.strip() else f"{block}\n"
            continue
        stop = text.find(end, start)
        if stop < 0:
            raise ValueError(f"the marker {begin!r} has no {end!r} after it")
        text = text[:start] + block + text[stop + len(end):]
    return text


def write_report(path: Path, blocks: dict[str, str]) -> None:
    """Rewrite the generated blocks of `path`, keeping the rest of the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    path.write_text(merge_blocks(old, blocks))


def run_at(rev: str, argv: list[str], out: Path) -> int:
    """Export `rev` with git archive and run this bench from there (its code, its server and
    daemon), writing the report to `out` here."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix="shipyard-sxs-tree-"))
    try:
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        if not (tree / "bench" / "side_by_side.py").exists():
            raise SystemExit(f"{rev} has no bench/side_by_side.py")
        rest, skip = [], False
        for arg in argv:   # everything but --at REV / --at=REV
            if skip:
                skip = False
            elif arg == "--at":
                skip = True
            elif not arg.startswith("--at="):
                rest.append(arg)
        env = {**os.environ, "SXS_ARGV": " ".join(argv),
               "SXS_TREE": f"commit {sha[:12]} ({rev}), exported clean with git archive"}
        command = [sys.executable, str(tree / "bench" / "side_by_side.py"), *rest, "--out", str(out.resolve())]
        return subprocess.run(command, cwd=tree, env=env, check=False).returncode
    finally:
        shutil.rmtree(tree, ignore_errors=True)


SECTIONS = ("footprint", "pickup", "logs", "abort", "cold", "coldwarm", "warm", "docker", "server")


def _fill_defaults(args) -> None:
    """Repetitions the command line left out: fewer with --quick."""
    q = args.quick
    args.runs = args.runs or (4 if q else 10)
    args.warm_runs = args.warm_runs or (2 if q else 3)
    args.cold_runs = args.cold_runs or (1 if q else 2)
    args.abort_runs = args.abort_runs or (2 if q else 3)
    args.lines = args.lines or (50_000 if q else 200_000)
    args.footprint_s = args.footprint_s or (10.0 if q else 20.0)
    args.server_s = args.server_s or (2.0 if q else 5.0)


def floor_venv(bench: Bench, requirements: str = MEDIUM) -> VenvFloor:
    """The cold-build and warm-start floors' venv: uv, with Shipyard's uv cache and the loopback index."""
    from sandbox.pyenv import find_uv

    uv = find_uv()
    if uv is None:
        raise RuntimeError("no uv binary")
    env = {**_scrubbed(dict(os.environ)), **bench.env, "UV_CACHE_DIR": str(bench.work / "sy" / "uv-cache")}
    return VenvFloor(uv, requirements, env)


def measure_floor(section: str, bench: Bench, args, venv: Callable[[], VenvFloor]) -> dict[str, float] | None:
    """The floor of `section`'s rows, measured right after it (the same load); None if it has
    none or it could not be measured (said in the log)."""
    api = bench.api
    chatty = CHATTY.replace("@LINES@", str(args.lines))
    measures: dict[str, Callable[[], dict[str, float]]] = {
        "pickup": lambda: {"spawn_ms": floor_spawn(5), "rtt_ms": floor_rtt(api, 10)},
        "logs": lambda: {"rate": statistics.median(pipe_floor(args.lines, code=chatty, since_first_line=True)
                                                   for _ in range(3))},
        "abort": lambda: {"signal_ms": floor_signal(3), "rtt_ms": floor_rtt(api, 10)},
        "footprint": lambda: {"rss_mb": statistics.median(idle_python_rss_mb() for _ in range(3))},
        "cold": lambda: {"build_s": statistics.median(venv().build_s() for _ in range(3))},
        "coldwarm": lambda: {"build_s": statistics.median(venv().build_s() for _ in range(3))},
        "warm": lambda: {"import_s": venv().import_s("numpy, pandas, sklearn")},
    }
    measure = measures.get(section)
    if measure is None:
        return None
    try:
        floor = measure()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log(f"  {section} floor: not measured ({exc})")
        return None
    log(f"  {section} floor: {floor}")
    return floor


def _run_sections(bench: Bench, args, only: list[str], t0: float) -> dict:
    """Measure each asked-for section in turn, skipping those that would start past --max-minutes;
    each section's floor right after it (results["floors"])."""
    results: dict = {"floors": {}}
    venvs: list[VenvFloor] = []

    def venv() -> VenvFloor:
        if not venvs:
            venvs.append(floor_venv(bench))
        return venvs[0]

    try:
        _measure_sections(bench, args, only, t0, results, functools.partial(measure_floor, bench=bench, args=args,
                                                                          venv=venv))
    finally:
        for made in venvs:
            made.close()
    return results


def _due(section: str, only: list[str], args, t0: float, skipped: list[str]) -> bool:
    """Run `section`? Only if asked for and the run is still within --max-minutes."""
    if section not in only:
        return False
    if time.monotonic() - t0 > args.max_minutes * 60:
        skipped.append(section)
        log(f"{section}: skipped, past the {args.max_minutes:g} min budget")
        return False
    return True


def _measure_sections(bench: Bench, args, only: list[str], t0: float, results: dict,
                      floor: Callable[[str], dict[str, float] | None]) -> None:
    api, agents = bench.api, bench.agents
    skipped: list[str] = []
    due = functools.partial(_due, only=only, args=args, t0=t0, skipped=skipped)

    def record(section: str, what: str, measure: Callable[[], object]) -> None:
        log(what)
        results[section] = measure()
        if measured := floor(section):
            results["floors"][section] = measured

    if due("pickup"):
        record("pickup", "pickup (warm-up first)", lambda: measure_pickup(api, agents, args.runs))
    elif "footprint" in only and "pickup" not in only:
        log("pickup warm-up (the footprint is measured after a first task)")
        measure_pickup(api, agents, 0)
    plan = [  # in this order: section, what the log says, how it is measured
        ("footprint", "footprint", lambda: measure_footprint(api, agents, args.footprint_s)),
        ("logs", f"log throughput, {args.lines:,} lines", lambda: measure_logs(api, agents, args.lines)),
        ("abort", "abort", lambda: measure_abort(api, agents, args.abort_runs)),
        ("cold", "cold build", lambda: measure_medium(api, agents, args.cold_runs, cold=True)),
        ("coldwarm", "cold build, installer cache warm",
         lambda: measure_medium(api, agents, args.cold_runs, cold=True, installer_warm=True)),
        ("warm", "warm start", lambda: measure_medium(api, agents, args.warm_runs, cold=False)),
        ("docker", "docker mode", lambda: measure_docker(bench, args.warm_runs, args.docker_image)),
        ("server", "server", lambda: measure_server(bench.server, args.server_s)),
    ]
    for section, what, measure in plan:
        if due(section):
            record(section, what, measure)
    if skipped:
        results["skipped"] = skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (development)")
    parser.add_argument("--runs", type=int, help="pickup runs per agent (default 10; quick 4)")
    parser.add_argument("--warm-runs", type=int, help="warm starts per agent (default 3; quick 2)")
    parser.add_argument("--cold-runs", type=int, help="cold builds per agent (default 2; quick 1)")
    parser.add_argument("--abort-runs", type=int, help="aborts per agent (default 3; quick 2)")
    parser.add_argument("--lines", type=int, help="lines the chatty task prints (default 200,000; quick 50,000)")
    parser.add_argument("--footprint-s", type=float, help="footprint window (default 20 s; quick 10 s)")
    parser.add_argument("--server-s", type=float, help="seconds per server load level (default 5; quick 2)")
    parser.add_argument("--max-minutes", type=float, default=25.0,
                        help="start no new section after this many minutes (default 25)")
    parser.add_argument("--docker-image", default="shipyard-test/python:bookworm",
                        help="image with Python for the docker rows; must be on the machine already")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, venvs) and print its path")
    parser.add_argument("--at", metavar="REV", help="measure the committed tree of REV (e.g. HEAD), exported to a "
                        "temporary directory, instead of this working tree with whatever is uncommitted in it")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.at:
        return run_at(args.at, args.argv, args.out)
    _fill_defaults(args)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}")

    t0 = time.monotonic()
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_start = os.getloadavg()
    mach = machine()
    log(f"machine: {mach}; load {load_start}")
    agent_bin = peers.ensure("agent", log=log)
    wheels = ensure_wheelhouse(WHEELHOUSE, log=log)
    vers = versions(agent_bin)
    with Bench(wheels, agent_bin, keep=args.keep) as bench:
        results = _run_sections(bench, args, only, t0)
    projects = bench.projects
    load_end = os.getloadavg()
    targets: dict = {}
    floor_targets: dict = {}
    table = report(args, {}, results, targets, floor_targets)
    blocks = render(args, started, mach, load_start, load_end, vers, table, targets, time.monotonic() - t0, projects,
                    floor_targets)
    print("\n\n".join(blocks.values()))
    if not args.no_write:
        write_report(args.out, blocks)
        log(f"wrote the generated blocks of {args.out} (the rest of it is kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

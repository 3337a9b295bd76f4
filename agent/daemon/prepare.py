"""Prepare while queued: build the environments of the tasks waiting in this daemon's queues
into its environment cache before they are claimed, so their pickup links a cached venv.

    Preparer(api, settings, queues, env_cache, repo_cache, running=...).start()
    every agent.prepare.interval_s:  read the head of each queue (queues.get_by_id, read-only:
        nothing is claimed) → for each task not yet looked at that was already there at the
        previous pass (a task a free worker claims at once is left alone), while there is room:
        plan its environment exactly as its pickup would (agent/execution/build.py: recorded
        packages or the lock file at its commit, the Python, install_plan's indexes and torch
        choice) → in the cache already: ready; else one niced build process at a time
        (sandbox/prebuild.py, EnvCache.ensure) → ready or failed
    daemon claims a task →  claimed(task): a build for another task is killed at once (the
        pickup never waits for it); one for the claimed task goes on, back at normal priority
        where the agent may renice it, and the pickup waits on the entry's lock, then links it
    status report        →  report(): {task id: building|ready|failed} for the queued tasks,
        the worker's `prepared` field (shipyard/protocol.py WORKER_PREPARED), which the queue
        views (`shipyard queue show`, the web UI's Queues page) show as "env ready"

Room: agent.prepare.enabled; while a task runs only with agent.prepare.while_busy; the load
average per CPU at most agent.prepare.max_load (0: no limit); the cache's disk above
agent.venvs_cache.free_space_threshold_gb. A failed build is not tried again ahead of pickup
(the pickup builds it and reports the failure as it always does); one preempted by a claim is
tried again, at most MAX_STARTS times. The build runs as the agent's user with the agent's
builder, as the pickup's build does; its output is kept (redacted) only for the warning line.
Docker mode: the task's image is pulled ahead; its venv is built in the container at pickup.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.daemon.poller import Queue
from agent.execution.build import environment_source, git_credentials, install_inputs, recorded_wins
from agent.taskserver.port import TaskServer
from sandbox.env_cache import EnvCache
from sandbox.envsource import EnvSource
from sandbox.git_workspace import prepare_workspace
from sandbox.prebuild import RESULT_PREFIX, PrebuildJob
from sandbox.proc import kill_group, module_env
from sandbox.repo_cache import RepoCache
from sandbox.requirements import from_script
from shipyard.client.config import Settings
from shipyard.errors import ServerError, ServerUnreachable, ShipyardError
from shipyard.protocol import PrepareState, TaskStatus
from shipyard.redact import Redactor

log = logging.getLogger("shipyard.agent.prepare")

NICE = 10
"""Added niceness of the build: a running task gets about ten times its CPU share."""
MAX_STARTS = 3
"""Tries ahead for one task: a claim of another task kills one, a failure ends them, and an
unexpected error counts too, so nothing is tried for ever."""


@dataclass(frozen=True)
class Plan:
    """What a task's pickup will ask the cache for."""
    job: PrebuildJob
    key: str


class Preparer:
    def __init__(self, api: TaskServer, settings: Settings, queues: list[Queue], env_cache: EnvCache,
                 repo_cache: RepoCache, *, running: Callable[[], int], echo: Callable[[str], None] = lambda _l: None,
                 on_change: Callable[[], None] = lambda: None):
        self.api = api
        self.settings = settings
        self.config = settings.agent.prepare
        self.queues = queues
        self.env_cache = env_cache
        self.repo_cache = repo_cache
        self.running = running          # how many tasks this daemon runs now
        self.echo = echo
        self.on_change = on_change      # a state changed: the reporter sends it at once
        self.redact = Redactor(settings.secrets(), settings.agent.redact_patterns)
        self.states: dict[str, PrepareState] = {}
        self.keys: dict[str, str] = {}       # task -> the cache key it is ready under
        self.starts: dict[str, int] = {}
        self.done: set[str] = set()          # looked at, nothing (more) to do ahead: not cacheable, failed
        self.seen: set[str] = set()          # the heads at the previous pass
        self.current: str | None = None
        self._claimed: set[str] = set()      # claimed by this daemon since the last pass
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prepare", daemon=True)

    # -- the daemon's side ----------------------------------------------------------------
    def start(self) -> Preparer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._kill()
        self._thread.join(10)

    def claimed(self, task_id: str) -> None:
        """The daemon claimed `task_id`: a build for any other task gives way at once."""
        with self._lock:
            self._claimed.add(task_id)   # a build for it not started yet never starts (its pickup builds)
            if self.current is not None and self.current != task_id:
                log.info("task %s claimed: stopping the environment build for queued task %s", task_id, self.current)
                self._kill()
            elif self.current == task_id:
                self._hurry()

    def report(self) -> dict[str, str]:
        """{task id: state} of the queued tasks looked at (the worker report's `prepared`)."""
        with self._lock:
            return {task: str(state) for task, state in self.states.items()}

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except (ServerError, ServerUnreachable) as exc:
                log.warning("prepare: could not read the queues: %s", exc)
            except Exception:  # noqa: BLE001 - preparing is an optimisation: it must never stop the daemon
                log.exception("prepare: unexpected error")
            self._stop.wait(self.config.interval_s)

    def scan(self) -> None:
        """One pass: forget tasks that left the queues, then prepare the head while there is room.
        Only tasks already queued at the previous pass: one that a free worker claims at once is
        never prepared (the claim would only find a build racing its own)."""
        heads = self._heads()
        self._forget(set(heads))
        waited, self.seen = [t for t in heads if t in self.seen], set(heads)
        for task_id in waited:
            if self._stop.is_set() or not self._room():
                return
            if task_id not in self.states and task_id not in self.done and self.starts.get(task_id, 0) < MAX_STARTS:
                self._prepare(task_id)

    def _heads(self) -> list[str]:
        """The first agent.prepare.depth task ids of each queue, queue by queue, read-only."""
        heads: list[str] = []
        for queue in self.queues:
            entries = self.api.call("queues.get_by_id", {"queue": queue.id}).get("queue", {}).get("entries") or []
            heads.extend(str(e["task"]) for e in entries[:self.config.depth] if e.get("task"))
        return list(dict.fromkeys(heads))

    def _forget(self, queued: set[str]) -> None:
        """Tasks no longer queued leave the report; a ready entry that the cache evicted, too."""
        changed = False
        with self._lock:
            self._claimed &= queued   # a claimed task left its queue: nothing more to remember
            for task in [t for t in self.states if t not in queued]:
                del self.states[task]
                changed = True
            for task, key in list(self.keys.items()):
                if task not in queued or not self.env_cache.complete(key):
                    del self.keys[task]
                    if self.states.pop(task, None) is not None:
                        changed = True
        if changed:
            self.on_change()

    def _room(self) -> bool:
        if not self.config.enabled or (self.running() and not self.config.while_busy):
            return False
        if self.config.max_load and _load_per_cpu() > self.config.max_load:
            return False
        floor = self.settings.agent.venvs_cache.free_space_threshold_gb
        return not floor or _free_gb(self.env_cache.root) > floor

    # -- one task -------------------------------------------------------------------------
    def _prepare(self, task_id: str) -> None:
        task = self.api.call("tasks.get_by_id", {"task": task_id})["task"]
        if task.get("status") != TaskStatus.QUEUED:
            return
        self.starts[task_id] = self.starts.get(task_id, 0) + 1   # whatever happens next, at most MAX_STARTS
        if self.settings.agent.docker.enabled:
            self._pull_image(task_id, task)
            return
        scratch = Path(tempfile.mkdtemp(prefix=f"prepare-{task_id[:12]}.", dir=self._scratch_root()))
        try:
            plan = self._plan(task_id, task, scratch)
        except (ShipyardError, OSError) as exc:
            self._fail(task_id, f"could not plan its environment: {self.redact(str(exc))}")
            return
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if plan is not None:
            self._build(task_id, plan)

    def _scratch_root(self) -> Path:
        root = self.settings.agent.work_dir / "prepare"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _plan(self, task_id: str, task: dict, scratch: Path) -> Plan | None:
        """The cache's inputs for this task, as its pickup will compute them (None: not cacheable)."""
        script = task.get("script") or {}
        source = self._source(task, script, scratch)
        _recorded, install, python, extra = install_inputs(source, script, self.settings, log.debug)
        reason = install.uncacheable_reason()
        if reason:
            log.info("prepare: task %s: environment not cacheable (%s); it is built at pickup", task_id, reason)
            self.done.add(task_id)
            return None
        return Plan(PrebuildJob(self.env_cache, install, python, extra), self.env_cache.key(install, python, extra))

    def _source(self, task: dict, script: dict, scratch: Path) -> EnvSource:
        """Recorded packages that win need no checkout; else the repository at the task's commit."""
        recorded = from_script(script)
        if recorded_wins(recorded, self.settings):
            return EnvSource(recorded, "task")
        workspace = prepare_workspace(script, scratch / "code", self.repo_cache,
                                      credentials=git_credentials(self.settings, str(script.get("repository") or "")),
                                      log=log.debug)
        return environment_source(task, workspace, self.settings, self.env_cache.builder)

    def _build(self, task_id: str, plan: Plan) -> None:
        if self.env_cache.complete(plan.key):
            self._ready(task_id, plan.key, built=False)
            return
        self._set(task_id, PrepareState.BUILDING)
        self.echo(f"task {task_id}: queued; building its environment {plan.key[:12]} ahead of pickup")
        result, tail = self._run_build(task_id, plan)
        if result is None:            # killed: a claim of another task, or the daemon stopping
            with self._lock:
                self.states.pop(task_id, None)
            self.on_change()
        elif "key" in result:
            self._ready(task_id, plan.key, built=bool(result.get("built")))
        else:
            self._fail(task_id, f"{result.get('error')}{tail}")

    def _run_build(self, task_id: str, plan: Plan) -> tuple[dict | None, str]:
        """The build process to its end; (its result or None when it was killed, its output's tail)."""
        with self._lock:
            if self._stop.is_set() or task_id in self._claimed:
                return None, ""
            self.current = task_id
            self._proc = subprocess.Popen([sys.executable, "-m", "sandbox.prebuild", str(NICE)], env=module_env(),
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        proc = self._proc
        try:
            output, _ = proc.communicate(pickle.dumps(plan.job))
        finally:
            with self._lock:
                self.current, self._proc = None, None
        lines = output.decode(errors="replace").splitlines()
        results = [json.loads(line[len(RESULT_PREFIX):]) for line in lines if line.startswith(RESULT_PREFIX)]
        tail = "".join(f"\n  {self.redact(line)}" for line in lines[-6:] if not line.startswith(RESULT_PREFIX))
        return (results[-1] if results else None), tail

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            kill_group(proc)   # its own session: uv and the resolver go too

    def _hurry(self) -> None:
        """The claimed task's pickup now waits for this build: back to normal CPU priority where
        the agent may raise it (as root); otherwise it finishes niced."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.setpriority(os.PRIO_PGRP, proc.pid, 0)   # its own session: uv under it too
        except OSError as exc:
            log.info("the claimed task's environment build stays niced: %s", exc)

    def _pull_image(self, task_id: str, task: dict) -> None:
        """Docker mode: the task's image on this machine before pickup (not force-pulled again)."""
        from agent.execution.docker import container_request
        from sandbox.docker_runner import DockerEngine
        self.done.add(task_id)
        try:
            image = container_request(task, self.settings.agent.docker).image
            DockerEngine.connect().image(image, log=log.info)
        except (ShipyardError, OSError) as exc:
            self._fail(task_id, f"could not pull its image: {self.redact(str(exc))}")
            return
        self._ready(task_id, "", built=False)

    # -- states ---------------------------------------------------------------------------
    def _set(self, task_id: str, state: PrepareState) -> None:
        with self._lock:
            self.states[task_id] = state
        self.on_change()

    def _ready(self, task_id: str, key: str, *, built: bool) -> None:
        if key:
            with self._lock:
                self.keys[task_id] = key
        self._set(task_id, PrepareState.READY)
        if built:
            self.echo(f"task {task_id}: queued; its environment {key[:12]} is ready in the cache")

    def _fail(self, task_id: str, why: str) -> None:
        """Not tried again ahead: the pickup builds it and reports a failure as it always does."""
        self.done.add(task_id)
        self._set(task_id, PrepareState.FAILED)
        self.echo(f"task {task_id}: queued; preparing its environment failed (its pickup tries again): {why}")


def _load_per_cpu() -> float:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def _free_gb(path: Path) -> float:
    try:
        return shutil.disk_usage(path if path.exists() else path.parent).free / (1 << 30)
    except OSError:
        return 0.0

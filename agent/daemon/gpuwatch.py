"""The daemon's GPU watch: a thread that samples the GPUs every `interval_s` and acts.

    sample   inventory.processes() and readings; the lease file (agent/gpus/sharing.py)
    → steps aside: GPUs with a person's process (or lately) or a lease are `blocked` for new tasks
      (`on_blocked`, the allocator's blocked set); the change is said once on the console. A
      daemon without --gpus leaves GPUs alone (on_blocked None): it only measures
    → measures: each running task's peak GPU memory, written to its `runtime.gpu_memory_peak_mb`
      when it grows (clones inherit it as their request, see agent/gpus/packing.py)
    → idle policy: `agent.queue_idle_gpu` (agent/gpus/idle.py) flags or stops a task
    → `tags()`: the worker's system_tags for leases and stepped-aside GPUs (status reports)

A process belongs to a task when its environment names the task (CLEARML_TASK_ID, which every
task process inherits, in venv and docker mode alike).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.execution.lifecycle import fenced
from agent.gpus.idle import IdleTracker, parse_rules
from agent.gpus.inventory import GpuInventory
from agent.gpus.packing import EXCEEDED_FIELD, PEAK_FIELD, REQUEST_FIELD
from agent.gpus.sharing import UNSEEN, LeaseBook, Sharing, blocked_gpus, status_tags
from agent.taskserver.port import TaskServer
from shipyard.client.config import Settings
from shipyard.errors import ConfigError, ServerError, ServerUnreachable
from shipyard.protocol import OutcomeKind

log = logging.getLogger("shipyard.agent.gpuwatch")
GROWTH = 1.05   # write the peak again when it grew by 5 %


@dataclass(frozen=True)
class Running:
    queue: str
    gpus: tuple[int, ...]
    request_mb: int | None = None    # packed on a shared GPU with this budget
    attempt: int | None = None       # the claim's attempt (a leased claim): fences the runtime writes


def task_of_pid(pid: int) -> str | None:
    """CLEARML_TASK_ID from the process's environment; None when it names none or is not ours to
    read (another user's process); UNSEEN when the pid is not in this /proc at all."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except FileNotFoundError:
        return UNSEEN
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"CLEARML_TASK_ID="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


class GpuWatch:
    def __init__(self, api: TaskServer, settings: Settings, inventory: GpuInventory, *,
                 running: Callable[[], Mapping[str, Running]], on_blocked: Callable[[set[int]], None] | None,
                 stop_task: Callable[..., None], echo: Callable[[str], None], interval_s: float):
        agent = settings.agent
        self.api = api
        self.inventory = inventory
        self.running = running
        self.on_blocked = on_blocked
        self.stop_task = stop_task
        self.echo = echo
        self.interval_s = interval_s
        self.leases = LeaseBook(agent.work_dir)
        self.sharing = Sharing(agent.foreign_gpu_idle_s)
        self.idle = IdleTracker(parse_rules(agent.queue_idle_gpu))
        self._written: dict[str, int] = {}
        self._over: set[str] = set()
        self._lock = threading.Lock()
        self._blocked: dict[int, str] = {}
        self._tags: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-watch", daemon=True)

    def start(self) -> "GpuWatch":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def tags(self) -> list[str]:
        return list(self._tags)

    def blocked(self) -> dict[int, str]:
        return dict(self._blocked)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the watch must outlive one bad sample
                log.exception("GPU sample failed")

    def sample(self, now: float | None = None) -> None:
        moment = time.time() if now is None else now
        running = dict(self.running())
        processes = self.inventory.processes()
        with self._lock:
            self.sharing.observe(processes, lambda pid: _ours(pid, running), moment)
        self.refresh(moment)
        for task in list(self.sharing.peaks):
            if task not in running:
                self.sharing.forget(task)
                self._written.pop(task, None)
                self._over.discard(task)
                self.idle.forget(task)
        self._write_peaks(running)
        self._over_budget(running)
        self._apply_idle(running, moment)

    def refresh(self, now: float | None = None) -> None:
        """Leases and stepped-aside GPUs now (cheap: one small file); the daemon calls it before
        each claim, so a lease taken a moment ago already counts."""
        moment = time.time() if now is None else now
        try:
            leases = self.leases.read(moment)
        except ConfigError as exc:
            log.error("%s", exc)
            leases = {}
        with self._lock:
            self._set_blocked(blocked_gpus(self.sharing, leases, moment))
            self._tags = status_tags(self._blocked, leases) if self.on_blocked is not None else []

    def _set_blocked(self, blocked: dict[int, str]) -> None:
        if self.on_blocked is None:   # GPUs not managed (no --gpus): nothing to step aside with
            return
        for gpu in sorted(set(blocked) - set(self._blocked)):
            self.echo(f"GPU {gpu}: no new task goes there: {blocked[gpu]}")
        for gpu in sorted(set(self._blocked) - set(blocked)):
            self.echo(f"GPU {gpu}: free for tasks again")
        self._blocked = blocked
        self.on_blocked(set(blocked))

    def _write_peaks(self, running: Mapping[str, Running]) -> None:
        for task, peak in list(self.sharing.peaks.items()):
            grew = peak > 0 and peak >= self._written.get(task, 0) * GROWTH + 1
            if grew and update_runtime(self.api, task, {PEAK_FIELD: peak}, _attempt(running, task)):
                self._written[task] = peak

    def _over_budget(self, running: Mapping[str, Running]) -> None:
        """A packed task above its memory request endangers its neighbours: stop it, and hand it
        back to its queue marked so that its next run gets a whole GPU (once: no request then)."""
        for task, run in running.items():
            used = self.sharing.peaks.get(task, 0)
            if run.request_mb is None or used <= run.request_mb or task in self._over:
                continue
            self._over.add(task)
            reason = (f"GPU out of memory budget: the task used {used} MB of GPU memory, more than its request of "
                      f"{run.request_mb} MB on a shared GPU (runtime.{REQUEST_FIELD}); handed back to run alone "
                      "on a whole GPU")
            update_runtime(self.api, task, {EXCEEDED_FIELD: used}, run.attempt)
            self.stop_task(task, reason, OutcomeKind.INFRASTRUCTURE)

    def _apply_idle(self, running: Mapping[str, Running], now: float) -> None:
        if not self.idle.rules:
            return
        usage = self.inventory.stats().get("gpu_usage") or []
        for task, run in running.items():
            readings = [usage[g] for g in run.gpus if 0 <= g < len(usage)]
            if not readings:
                continue
            rule = self.idle.sample(task, run.queue, max(readings), now)
            if rule is None:
                continue
            if rule.action == "stop":
                self.stop_task(task, rule.reason())
            else:
                self.echo(f"task {task}: flagged: {rule.reason()}")
                update_runtime(self.api, task, {"gpu_idle_flagged": rule.reason()}, run.attempt)
                self._note(task, f"shipyard: flagged: {rule.reason()}")

    def _note(self, task: str, line: str) -> None:
        event = {"type": "log", "task": task, "timestamp": int(time.time() * 1000), "level": "warning", "msg": line}
        try:
            self.api.add_events([event], deadline_s=5)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not write to its console: %s", task, exc)


def _ours(pid: int, running: Mapping[str, Running]) -> str | None:
    task = task_of_pid(pid)
    return task if task in running or task == UNSEEN else None


def _attempt(running: Mapping[str, Running], task: str) -> int | None:
    run = running.get(task)
    return run.attempt if run is not None else None


def update_runtime(api: TaskServer, task: str, values: Mapping[str, object], attempt: int | None = None) -> bool:
    """Merge `values` into the task's runtime (tasks.edit replaces the whole map); False on failure.
    With the claim's `attempt`, the server refuses the write once the claim is gone (handed back,
    reaped), so a late write never replaces what was written since (runtime.preemptions)."""
    try:
        rows = api.call("tasks.get_all", {"id": [task], "only_fields": ["runtime"], "search_hidden": True},
                        deadline_s=5).get("tasks") or []
        runtime = dict((rows[0].get("runtime") or {}) if rows else {})
        api.call("tasks.edit", {"task": task, "force": True, "runtime": {**runtime, **values}, **fenced(attempt)},
                 deadline_s=5)
        return True
    except (ServerError, ServerUnreachable) as exc:
        log.warning("task %s: could not record %s: %s", task, ", ".join(values), exc)
        return False

"""`shipyard daemon`: the worker loop.

    register → loop { claim the next task → run it → report } → unregister

With a GPU inventory, a GPU watch thread (agent/daemon/gpuwatch.py) runs beside the loop: it
keeps GPUs that people use or lease out of the slots, measures each task's peak GPU memory, and
applies the idle-GPU policy; packed slots take the claimed task's memory request (`_request_of`).

A preparer (agent/daemon/prepare.py, agent.prepare.*) builds the environments of the tasks at
the head of the queues into the cache while they wait; a claim makes it give way (`claimed`).

The first SIGTERM/SIGINT drains (the running task finishes, nothing new is taken); a second
aborts the running task, which ends `stopped` with the reason - never `completed`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from agent.daemon.gpuwatch import GpuWatch, Running
from agent.daemon.metrics import AgentMetrics
from agent.daemon.poller import Claim, Queue, TaskSource, resolve_queues
from agent.daemon.prepare import Preparer
from agent.daemon.reporter import StatusReporter
from agent.daemon.slots import ServiceSlots, Slot, SlotPool
from agent.daemon.stats import StatsSampler
from agent.execution import lifecycle, preempt
from agent.execution.build import make_env_cache, prune_env_cache
from agent.execution.lifecycle import Outcome
from agent.execution.runner import SHUTDOWN_ABORT, ExecutorFactory, TaskRun, safe_report
from agent.execution.taskkey import TaskKey, TaskKeys
from agent.gpus.inventory import GpuInventory
from agent.gpus.packing import request_of
from agent.taskserver.port import TaskServer
from sandbox.repo_cache import RepoCache
from shipyard import faults
from shipyard.client.config import Settings
from shipyard.errors import ServerError, ServerUnreachable
from shipyard.protocol import LeaseOutcome, OutcomeKind, TaskStatus
from shipyard.signals import Shutdown

log = logging.getLogger("shipyard.agent.daemon")
_AFTER_RESTART = {LeaseOutcome.REQUEUED: "put back in its queue by the lease rules; it runs again from the start",
                  LeaseOutcome.FAILED: "failed by the lease rules (no retries left)",
                  LeaseOutcome.COMPLETED: "its process had already exited 0; ended completed"}


class Daemon:
    def __init__(self, api: TaskServer, settings: Settings, queues: list[str], *, shutdown: Shutdown,
                 order_fairness: bool = False, create_queue: bool = False,
                 echo: Callable[[str], None] | None = None, max_tasks: int | None = None,
                 slots: SlotPool | None = None, stats_extra: Callable[[], dict] | None = None,
                 make_slots: Callable[[list[Queue]], SlotPool] | None = None, exact_order: bool = False,
                 metrics: AgentMetrics | None = None,
                 executor_factory: ExecutorFactory | None = None, watch_check_s: float = 1.0,
                 drain_hint: str = "", shutdown_abort: tuple[str, str] = SHUTDOWN_ABORT,
                 gpu_inventory: GpuInventory | None = None):
        self.api = api
        self.gpu_inventory = gpu_inventory      # with one: the GPU watch (agent/daemon/gpuwatch.py)
        self.gpu_watch: GpuWatch | None = None
        self._runs: dict[str, TaskRun] = {}
        self.drain_hint = drain_hint              # appended to "draining: ..." (`shipyard up`: how to abort)
        self.shutdown_abort = shutdown_abort      # (kind, reason) a second signal ends running tasks with
        self.executor_factory = executor_factory   # None: local or docker, as the settings say
        self.watch_check_s = watch_check_s
        self.settings = settings
        self.queue_names = queues
        self.shutdown = shutdown
        self.order_fairness = order_fairness
        self.create_queue = create_queue
        self.echo = echo or (lambda _line: None)
        self.metrics = metrics            # --metrics-port: it reads the console lines and the runs' log counts
        if metrics is not None:
            self.echo = metrics.tap(self.echo)
        self.max_tasks = max_tasks
        self.slots = slots or ServiceSlots(1)
        self.make_slots = make_slots      # pools that need the resolved queues (GPU slots)
        self.exact_order = exact_order
        self.stats_extra = stats_extra
        self.worker = settings.agent.worker_id
        self.env_cache = make_env_cache(settings)
        self.repo_cache = RepoCache(settings.agent.git_cache_dir)
        self.task_keys = TaskKeys(api, (settings.api.access_key, settings.api.secret_key),
                                  ttl_s=settings.agent.task_key_ttl_s)   # one per daemon: it warns once
        self.tasks_started = 0
        self._active: dict[str, tuple[threading.Thread, Slot, Claim]] = {}
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self.preparer: Preparer | None = None

    def work(self) -> int:
        preempt.check(self.settings.agent)
        queues = resolve_queues(self.api, self.queue_names, create=self.create_queue)
        if self.make_slots is not None:
            self.slots = self.make_slots(queues)
        self.gpu_watch = self._start_gpu_watch()
        reporter = StatusReporter(self.api, self.worker, [q.id for q in queues],
                                  interval_s=self.settings.agent.status_report_s,
                                  sampler=StatsSampler(gpu_stats=self.stats_extra),
                                  tags=self.gpu_watch.tags if self.gpu_watch else None)
        self.preparer = self._start_preparer(queues, reporter)
        reporter.register()
        reporter.start()
        source = TaskSource(self.api, queues, order_fairness=self.order_fairness,
                            poll_interval_s=self.settings.agent.poll_interval_s,
                            long_poll_s=self.settings.agent.long_poll_s, stop=self.shutdown.event,
                            lease_s=self.settings.agent.lease_s, worker=self.worker, with_task=True)
        source.exact_order = self.exact_order
        if source.lease_s:
            self._reconcile()
        self.echo(f"worker {self.worker} listening on {', '.join(q.name for q in queues)} "
                  f"({'long-poll' if source.long_poll else f'polling every {source.poll_interval_s:g}s'}; "
                  f"{self.slots.capacity} slot(s))")
        try:
            while not self._should_stop():
                self._reap()
                if self.gpu_watch is not None:
                    self.gpu_watch.refresh()
                fitting = self.slots.claimable(queues)
                if not fitting:
                    self._finished.wait(0.5)
                    self._finished.clear()
                    continue
                claim = self._claim(source, fitting)
                if claim is not None:
                    self._start(claim, reporter)
            self._drain()
        finally:
            if self.preparer is not None:
                self.preparer.stop()
            if self.gpu_watch is not None:
                self.gpu_watch.stop()
            source.close()
            reporter.stop()
            reporter.unregister()
            self.echo(f"worker {self.worker} stopped after {self.tasks_started} task(s)")
        return 0

    def _start_preparer(self, queues: list[Queue], reporter: StatusReporter) -> Preparer | None:
        """Prepare while queued (agent.prepare.enabled; local runs: a custom executor builds its own way)."""
        if not self.settings.agent.prepare.enabled or self.executor_factory is not None:
            return None
        preparer = Preparer(self.api, self.settings, queues, self.env_cache, self.repo_cache,
                            running=lambda: len(self._active), echo=self.echo, on_change=reporter.wake)
        reporter.prepared = preparer.report
        return preparer.start()

    def _start_gpu_watch(self) -> GpuWatch | None:
        if self.gpu_inventory is None:
            return None
        allocator = getattr(self.slots, "allocator", None)

        def running() -> dict[str, Running]:
            with self._lock:
                return {task: Running(claim.queue.name, slot.gpus, slot.request_mb, claim.attempt)
                        for task, (_t, slot, claim) in self._active.items()}

        def stop_task(task: str, reason: str, kind: str = OutcomeKind.ABORTED) -> None:
            run = self._runs.get(task)
            if run is not None:
                self.echo(f"task {task}: stopping it: {reason}")
                run.request_stop(f"stopped by the agent: {reason}" if kind == OutcomeKind.ABORTED else reason, kind)

        return GpuWatch(self.api, self.settings, self.gpu_inventory, running=running,
                        on_blocked=allocator.set_blocked if allocator is not None else None,
                        stop_task=stop_task, echo=self.echo, interval_s=self.settings.agent.status_report_s).start()

    def _reconcile(self) -> None:
        """Tasks the server believes this worker holds (from before a crash) go back to their queues."""
        released = self.api.call("workers.reconcile", {"worker": self.worker}).get("released") or []
        for item in released:
            line = (f"worker {self.worker} restarted while this task was running on it (the agent was killed "
                    f"before it could report the end): {_AFTER_RESTART.get(item['outcome'], item['outcome'])}")
            self.echo(f"task {item['task']}: {line}")
            self._console_note(item["task"], f"shipyard: {line}")

    def _console_note(self, task_id: str, line: str) -> None:
        """One line in a task's console from the daemon itself (best effort: the console is not the record)."""
        event = {"type": "log", "task": task_id, "timestamp": int(time.time() * 1000), "level": "warning",
                 "worker": self.worker, "msg": line}
        try:
            self.api.add_events([event], deadline_s=5)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not write to its console: %s", task_id, exc)

    def _should_stop(self) -> bool:
        if self.shutdown.requested:
            return True
        return self.max_tasks is not None and self.tasks_started >= self.max_tasks

    def _claim(self, source: TaskSource, fitting: list[Queue]) -> Claim | None:
        # While tasks run, wait briefly: a run that ends may make other queues claimable.
        wait_s = min(self.settings.agent.long_poll_s, 2.0) if self._active else None
        try:
            return source.next(fitting, wait_s)
        except (ServerUnreachable, ServerError) as exc:
            log.warning("could not reach the queue: %s; retrying", exc)
            self.shutdown.event.wait(2.0)
            return None

    def _start(self, claim: Claim, reporter: StatusReporter) -> None:
        if self.preparer is not None:
            self.preparer.claimed(claim.task_id)   # a build for another queued task gives way
        request = self._request_of(claim) if getattr(self.slots, "head_request", None) else None
        try:
            slot = self.slots.acquire(claim.queue, request)
        except RuntimeError as exc:   # a packing peek raced with the queue: the task did not fit after all
            self.echo(f"task {claim.task_id}: handed back: {exc}")
            safe_report(self.api, claim.task_id, Outcome(TaskStatus.STOPPED, OutcomeKind.INFRASTRUCTURE,
                        f"no room on worker {self.worker}'s GPUs after all ({exc})"), self.worker, claim.attempt)
            return
        self.tasks_started += 1
        thread = threading.Thread(target=self._run, args=(claim, slot, reporter),
                                  name=f"task-{claim.task_id[:8]}", daemon=True)
        with self._lock:
            self._active[claim.task_id] = (thread, slot, claim)
        reporter.set_task(claim.task_id, claim.queue.id)
        thread.start()

    def _request_of(self, claim: Claim) -> int | None:
        """The claimed task's GPU memory request (agent/gpus/packing.py), None to take whole GPUs."""
        try:
            rows = self.api.call("tasks.get_all", {"id": [claim.task_id], "only_fields": ["runtime"]}).get("tasks")
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not read its GPU memory request (%s); it gets a whole GPU", claim.task_id, exc)
            return None
        return request_of(rows[0]) if rows else None

    def _reap(self) -> None:
        with self._lock:
            done = [task for task, (thread, _slot, _claim) in self._active.items() if not thread.is_alive()]
            for task in done:
                _thread, slot, _claim = self._active.pop(task)
                self.slots.release(slot)
        if done:
            self._prune_env_cache()

    def _prune_env_cache(self) -> None:
        """Between tasks: the environment cache back within agent.venvs_cache's limits (the
        venvs of tasks still running are held, so they stay)."""
        try:
            prune_env_cache(self.env_cache, self.settings, self.echo)
        except OSError as exc:
            log.warning("could not prune the environment cache: %s", exc)

    def _drain(self) -> None:
        """Let running tasks finish (a second signal makes them abort), then free their slots."""
        if self._active:
            self.echo(f"draining: waiting for {len(self._active)} running task(s){self.drain_hint}")
        while self._active:
            self._finished.wait(0.5)
            self._finished.clear()
            self._reap()

    def _run(self, claim: Claim, slot: Slot, reporter: StatusReporter) -> Outcome | None:
        where = f" on {slot.name}" + (f" (GPUs {','.join(map(str, slot.gpus))})" if slot.gpus else "")
        self.echo(f"task {claim.task_id} pulled from {claim.queue.name}{where}")
        faults.checkpoint("after_claim")
        started = time.monotonic()
        try:
            run = TaskRun(self.api, self.settings, claim.task_id, queue=claim.queue.name,
                          should_abort=lambda: self.shutdown.abort, env_cache=self.env_cache,
                          repo_cache=self.repo_cache, echo=self.echo, attempt=claim.attempt,
                          slot_env=slot.env, gpus=slot.gpus, task_keys=self.task_keys,
                          log_stats=self.metrics.record_log_shipping if self.metrics else None,
                          executor_factory=self.executor_factory, watch_check_s=self.watch_check_s,
                          shutdown_abort=self.shutdown_abort)
            self._runs[claim.task_id] = run
            outcome = run.run(self._start_claim(claim, run))
            self.echo(f"task {claim.task_id} {outcome.status} in {time.monotonic() - started:.2f}s: "
                      f"{outcome.status_reason}")
            return outcome
        except (ServerUnreachable, ServerError) as exc:
            log.error("task %s: lost contact with the server: %s", claim.task_id, exc)
            self._report_crash(claim, f"the agent lost contact with the server: {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 - an agent bug must fail the task loudly, not hang it
            log.exception("task %s: the agent failed while running it", claim.task_id)
            self._report_crash(claim, f"agent error: {type(exc).__name__}: {exc}")
            return None
        finally:
            self._runs.pop(claim.task_id, None)
            self._finished.set()
            others = [c for t, (_th, _s, c) in list(self._active.items()) if t != claim.task_id]
            reporter.set_task(others[0].task_id if others else None, others[0].queue.id if others else None)

    def _start_claim(self, claim: Claim, run: TaskRun) -> TaskKey | None:
        """The claim marked started and its run's key minted, in one `tasks.start_run` where the
        server offers it (else `tasks.started`; the run mints), while the run reads its task
        document, unless the claim brought it (`with_task`; issue 24: one round trip, not three in
        a row, between the claim and the run)."""
        run.prefetch(claim.task)
        message = f"pulled by shipyard {self.worker}"
        key = self.task_keys.start_run(claim.task_id, claim.attempt, message)
        if key is None:
            lifecycle.mark_started(self.api, claim.task_id, message, claim.attempt)
        return key

    def _report_crash(self, claim: Claim, reason: str) -> None:
        outcome = Outcome(TaskStatus.FAILED, OutcomeKind.INFRASTRUCTURE, reason)
        self._last_line(claim, f"shipyard: task {claim.task_id} ended: {outcome.status_reason}")
        safe_report(self.api, claim.task_id, outcome, self.worker, claim.attempt)

    def _last_line(self, claim: Claim, line: str) -> None:
        """The run broke before it could write its own last line: say why in the console anyway."""
        event: dict = {"type": "log", "task": claim.task_id, "level": "error", "worker": self.worker,
                       "msg": line, "timestamp": int(time.time() * 1000)}
        if claim.attempt is not None:
            event["attempt"] = claim.attempt
        try:
            self.api.add_events([event], deadline_s=5)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not write its last console line: %s", claim.task_id, exc)

"""`shipyard daemon`: the worker loop.

    register → loop { claim the next task → run it → report } → unregister

The first SIGTERM/SIGINT drains (the running task finishes, nothing new is taken); a second
aborts the running task, which ends `stopped` with the reason - never `completed`.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from agent import lifecycle
from agent.api import ApiClient
from agent.config import Settings
from agent.lifecycle import Outcome
from agent.poller import Claim, TaskSource, resolve_queues
from agent.reporter import StatusReporter
from agent.runner import TaskRun, safe_report
from sandbox.env_cache import EnvCache
from sandbox.repo_cache import RepoCache
from shipyard.errors import ServerError, ServerUnreachable
from shipyard import faults
from shipyard.signals import Shutdown

log = logging.getLogger("shipyard.agent.daemon")


class Daemon:
    def __init__(self, api: ApiClient, settings: Settings, queues: list[str], *, shutdown: Shutdown,
                 order_fairness: bool = False, create_queue: bool = False,
                 echo: Callable[[str], None] | None = None, max_tasks: int | None = None):
        self.api = api
        self.settings = settings
        self.queue_names = queues
        self.shutdown = shutdown
        self.order_fairness = order_fairness
        self.create_queue = create_queue
        self.echo = echo or (lambda _line: None)
        self.max_tasks = max_tasks
        self.worker = settings.agent.worker_id
        self.env_cache = EnvCache(settings.agent.venv_cache_dir)
        self.repo_cache = RepoCache(settings.agent.git_cache_dir)
        self.tasks_run = 0

    def work(self) -> int:
        queues = resolve_queues(self.api, self.queue_names, create=self.create_queue)
        reporter = StatusReporter(self.api, self.worker, [q.id for q in queues],
                                  interval_s=self.settings.agent.status_report_s)
        reporter.register()
        reporter.start()
        source = TaskSource(self.api, queues, order_fairness=self.order_fairness,
                            poll_interval_s=self.settings.agent.poll_interval_s,
                            long_poll_s=self.settings.agent.long_poll_s, stop=self.shutdown.event,
                            lease_s=self.settings.agent.lease_s, worker=self.worker)
        if source.lease_s:
            self._reconcile()
        self.echo(f"worker {self.worker} listening on {', '.join(q.name for q in queues)} "
                  f"({'long-poll' if source.long_poll else f'polling every {source.poll_interval_s:g}s'})")
        try:
            while not self._should_stop():
                claim = self._claim(source)
                if claim is not None:
                    self._run(claim, reporter)
        finally:
            source.close()
            reporter.stop()
            reporter.unregister()
            self.echo(f"worker {self.worker} stopped after {self.tasks_run} task(s)")
        return 0

    def _reconcile(self) -> None:
        """Tasks the server believes this worker holds (from before a crash) go back to their queues."""
        released = self.api.call("workers.reconcile", {"worker": self.worker}).get("released") or []
        for item in released:
            self.echo(f"task {item['task']} was held by this worker before it restarted: {item['outcome']}")

    def _should_stop(self) -> bool:
        if self.shutdown.requested:
            return True
        return self.max_tasks is not None and self.tasks_run >= self.max_tasks

    def _claim(self, source: TaskSource) -> Claim | None:
        try:
            return source.next()
        except (ServerUnreachable, ServerError) as exc:
            log.warning("could not reach the queue: %s; retrying", exc)
            self.shutdown.event.wait(2.0)
            return None

    def _run(self, claim: Claim, reporter: StatusReporter) -> Outcome | None:
        self.echo(f"task {claim.task_id} pulled from {claim.queue.name}")
        faults.checkpoint("after_claim")
        reporter.set_task(claim.task_id, claim.queue.id)
        started = time.monotonic()
        try:
            lifecycle.mark_started(self.api, claim.task_id, f"pulled by shipyard {self.worker}", claim.attempt)
            run = TaskRun(self.api, self.settings, claim.task_id, queue=claim.queue.name,
                          should_abort=lambda: self.shutdown.abort, env_cache=self.env_cache,
                          repo_cache=self.repo_cache, echo=self.echo, attempt=claim.attempt)
            outcome = run.run()
            self.echo(f"task {claim.task_id} {outcome.status} in {time.monotonic() - started:.2f}s: "
                      f"{outcome.status_reason}")
            return outcome
        except (ServerUnreachable, ServerError) as exc:
            log.error("task %s: lost contact with the server: %s", claim.task_id, exc)
            safe_report(self.api, claim.task_id, Outcome("failed", "infrastructure",
                                                         f"the agent lost contact with the server: {exc}"),
                        self.worker, claim.attempt)
            return None
        finally:
            self.tasks_run += 1
            reporter.set_task(None)

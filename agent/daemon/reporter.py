"""Worker presence: workers.register / status_report (machine stats; with a preparer, the queued
tasks whose environment it prepared: `prepared`, agent/daemon/prepare.py) / unregister."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.daemon.stats import StatsSampler
from agent.taskserver.port import TaskServer
from shipyard.errors import ServerError, ServerUnreachable
from shipyard.protocol import WORKER_PREPARED

log = logging.getLogger("shipyard.agent.reporter")
MISSED_REPORTS = 3   # reports a worker may miss before the server stops listing it
MIN_TIMEOUT_S = 5


class StatusReporter:
    def __init__(self, api: TaskServer, worker: str, queue_ids: list[str], *, interval_s: float = 30.0,
                 sampler: StatsSampler | None = None, tags: Callable[[], list[str]] | None = None):
        self.api = api
        self.worker = worker
        self.queue_ids = queue_ids
        self.interval_s = interval_s
        self.sampler = sampler or StatsSampler()
        self.tags = tags     # the worker's system_tags (GPU leases, GPUs stepped aside from)
        self.prepared: Callable[[], dict[str, str]] | None = None   # {task id: prepare state}
        self.task_id: str | None = None
        self.queue_id: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-report", daemon=True)

    @property
    def timeout_s(self) -> int:
        """How long the server lists this worker after its last report: three missed reports.
        A daemon that died (kill -9, machine gone) leaves listings after that, not after the
        reference server's 600 s default; a live one reports every `interval_s`."""
        return max(MIN_TIMEOUT_S, round(self.interval_s * MISSED_REPORTS))

    def register(self) -> None:
        self.api.call("workers.register", {"worker": self.worker, "queues": self.queue_ids,
                                           "timeout": self.timeout_s})

    def unregister(self) -> None:
        try:
            self.api.call("workers.unregister", {"worker": self.worker}, deadline_s=5)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("could not unregister worker %s: %s", self.worker, exc)

    def start(self) -> "StatusReporter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def set_task(self, task_id: str | None, queue_id: str | None = None) -> None:
        """Report at once when the worker takes or finishes a task."""
        self.task_id, self.queue_id = task_id, queue_id
        self._wake.set()

    def wake(self) -> None:
        """Report now (a prepared environment's state changed)."""
        self._wake.set()

    def report(self) -> None:
        body = {"worker": self.worker, "timestamp": int(time.time() * 1000), "queues": self.queue_ids,
                "machine_stats": self.sampler.sample(), "is_daemon": True}
        if self.task_id:
            body.update({"task": self.task_id, "queue": self.queue_id})
        if self.tags is not None:
            body["system_tags"] = self.tags()
        # always sent: a worker restarted without a preparer clears what it reported before
        body[WORKER_PREPARED] = self.prepared() if self.prepared is not None else {}
        self.api.call("workers.status_report", body, deadline_s=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.report()
            except (ServerError, ServerUnreachable) as exc:
                log.warning("status report failed: %s", exc)
            self._wake.wait(self.interval_s)
            self._wake.clear()

"""While a task runs: watch for an abort or preemption request, keep the task alive (tasks.ping),
keep the run's own API key alive (`keepalive`, every `keepalive_s`), and enforce the maximum run
time. A thread that only sets `abort_kind`/`abort_reason` (and `fired`); the runner acts on them.
A preemption request is a `status_message` starting with PREEMPT_REQUEST while the task stays
in_progress (the server's fair-share scheduler sets it); it becomes `abort_kind == preempted`.

Two ways to hear a request: the check every `check_s` (any server), and, where the server offers
the `task_watch` extension (Shipyard's `tasks.wait_status`), a second thread that long-polls the
task's status, so tasks.stop / reset / delete / a preemption reach the run as soon as they are
committed. A server without it (the reference clearml-server) answers the first long-poll with an
error; the listener then ends and the check alone remains."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.taskserver.port import TaskServer
from shipyard.errors import ServerError, ServerUnreachable
from shipyard.protocol import PREEMPT_REQUEST, STOP_REQUEST, OutcomeKind, Subcode, TaskStatus

log = logging.getLogger("shipyard.agent.watch")

_ENDED = frozenset({TaskStatus.STOPPED, TaskStatus.FAILED, TaskStatus.CLOSED, TaskStatus.PUBLISHED,
                    TaskStatus.QUEUED, TaskStatus.PUBLISHING})
_RESET_CHECKS = 3
LISTEN_S = 30.0
"""How long one `tasks.wait_status` long-poll waits on the server (capped by its max_s)."""


class TaskWatch:
    def __init__(self, api: TaskServer, task_id: str, *, check_s: float = 1.0, ping_s: float = 30.0,
                 max_runtime_s: float | None = None, attempt: int | None = None, lease_s: float = 60.0,
                 keepalive: Callable[[], None] | None = None, keepalive_s: float = 3600.0):
        self.api = api
        self.keepalive = keepalive
        self.keepalive_s = keepalive_s
        self.task_id = task_id
        self.attempt = attempt
        self.lease_s = lease_s
        self._last_contact = time.monotonic()
        self.check_s = check_s
        self.ping_s = ping_s
        self.max_runtime_s = max_runtime_s
        self.abort_kind: str | None = None
        self.abort_reason = ""
        self.fired = threading.Event()   # set with abort_kind: the runner waits on it
        self.listening = False           # the long-poll is in use (the server offers it)
        self._stop = threading.Event()
        self._set_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"watch-{task_id[:8]}", daemon=True)
        self._listener = threading.Thread(target=self._listen, name=f"listen-{task_id[:8]}", daemon=True)
        self._created_seen = 0

    def start(self) -> "TaskWatch":
        self._started = time.monotonic()
        self._thread.start()
        self._listener.start()
        return self

    def stop(self) -> None:
        """Stop checking. The listener is not joined: it may sit in a long-poll, and ends when it
        returns (the run's own end changes the status, which answers it)."""
        self._stop.set()
        self._thread.join(5)

    @property
    def triggered(self) -> bool:
        return self.abort_kind is not None

    def _set(self, kind: str, reason: str) -> None:
        with self._set_lock:   # the check and the listener may both find a reason at once
            if self.abort_kind is None:
                self.abort_kind, self.abort_reason = kind, reason
                self.fired.set()

    def _run(self) -> None:
        next_ping = time.monotonic() + self.ping_s
        next_renew = time.monotonic() + self.lease_s / 4
        next_keepalive = time.monotonic() + self.keepalive_s
        while not self._stop.wait(self.check_s):
            if self.keepalive is not None and time.monotonic() >= next_keepalive:
                self.keepalive()   # never raises: it logs its own failures
                next_keepalive = time.monotonic() + self.keepalive_s
            if self.max_runtime_s and time.monotonic() - self._started > self.max_runtime_s:
                self._set(OutcomeKind.TIMED_OUT, f"ran longer than the maximum run time of {self.max_runtime_s:g}s")
            try:
                self._check_status()
                if self.attempt is not None and time.monotonic() >= next_renew:
                    self._renew()
                    next_renew = time.monotonic() + self.lease_s / 4
                elif self.attempt is None and time.monotonic() >= next_ping:
                    self.api.call("tasks.ping", {"task": self.task_id}, deadline_s=5)
                    next_ping = time.monotonic() + self.ping_s
                self._last_contact = time.monotonic()
            except ServerError as exc:
                if exc.subcode == Subcode.STALE_CLAIM:
                    self._set(OutcomeKind.LEASE_LOST, "the server gave this task to another agent (lease lost)")
                log.warning("status check of task %s failed: %s", self.task_id, exc)
            except ServerUnreachable as exc:
                log.warning("status check of task %s failed: %s", self.task_id, exc)
            if self.attempt is not None and time.monotonic() - self._last_contact > self.lease_s:
                # The server has re-queued the task by now: stop, so it never runs twice for long.
                self._set(OutcomeKind.LEASE_LOST, f"cut off from the server for more than the {self.lease_s:g}s lease")

    def _renew(self) -> None:
        self.api.call("tasks.renew_lease", {"task": self.task_id, "attempt": self.attempt,
                                            "lease_s": self.lease_s}, deadline_s=5)

    def _check_status(self) -> None:
        rows = self.api.call("tasks.get_all", {"id": [self.task_id], "only_fields": ["status", "status_message"],
                                               "search_hidden": True}, deadline_s=5).get("tasks") or []
        if self._judge(rows[0] if rows else None):
            return
        status = rows[0].get("status")
        if status == TaskStatus.CREATED:
            self._created_seen += 1
            if self._created_seen >= _RESET_CHECKS:
                self._set(OutcomeKind.ABORTED, "the task was reset while running")
        else:
            self._created_seen = 0

    def _judge(self, row: dict | None) -> bool:
        """Abort on a stop request, an ended status or a deleted task; True when it did. (A reset,
        `created`, must be seen by several checks in a row: the check's business, not this.)"""
        if row is None:
            self._set(OutcomeKind.ABORTED, "the task was deleted on the server")
            return True
        status, message = row.get("status"), str(row.get("status_message") or "")
        if status == TaskStatus.IN_PROGRESS and STOP_REQUEST in message.lower():
            self._set(OutcomeKind.ABORTED, "abort requested (tasks.stop)")
        elif status == TaskStatus.IN_PROGRESS and message.lower().startswith(PREEMPT_REQUEST):
            self._set(OutcomeKind.PREEMPTED, message)
        elif status in _ENDED:
            self._set(OutcomeKind.ABORTED, f"the task was set to '{status}' on the server while running")
        else:
            return False
        return True

    # -- the long-poll listener -------------------------------------------------------------------
    def _listen(self) -> None:
        try:
            extensions = (self.api.server_info().get("shipyard") or {}).get("extensions") or {}
        except (ServerError, ServerUnreachable):
            return
        if "task_watch" not in extensions:
            return
        self.listening = True
        seen: dict = {}
        while not self._stop.is_set() and self.abort_kind is None:
            try:
                answer = self.api.call("tasks.wait_status", {"task": self.task_id, "wait_s": LISTEN_S if seen else 0,
                                                             **seen}, timeout=LISTEN_S + 15, deadline_s=10)
            except ServerError as exc:   # refused: the check every check_s goes on alone
                log.info("long-poll of task %s's status refused (%s); checking every %gs", self.task_id, exc, self.check_s)
                break
            except ServerUnreachable:
                self._stop.wait(self.check_s)
                continue
            row = answer.get("task")
            if self._stop.is_set() or self._judge(row) or not isinstance(row, dict):
                break
            seen = {"status": row.get("status") or "", "status_message": row.get("status_message") or ""}
        self.listening = False

"""The in-memory task server's state and the rules every endpoint shares: `InMemoryState`,
the base of `InMemoryTaskServer` (memory.py, which answers the endpoints).

    queues, tasks, workers,   the plain dicts a test reads; `calls` records every call,
    keys, events, calls       `_changed` is the lock every change holds (and long polls wait on)
    reap_expired()            the reaper: a task whose lease has expired (by `shipyard.clock`)
                              is re-queued or failed
    _grant(doc, ...)          a leased claim: the next attempt (the fencing token), its run number,
                              the lease, a row in `shipyard_attempts`
    _task(endpoint, id)       the task, or 400/101
    _fenced(endpoint, body)   the task, or 400/150 when `attempt` names a superseded one
    _fresh(task, attempt)     that check as a bool (log events are dropped, not refused)
    _change(endpoint, doc, new, ...)
                              a status change by `shipyard.protocol.TRANSITIONS`, or 400/110;
                              leaving in_progress drops the lease
    _requeue_or_fail(doc, reason)
                              an infrastructure loss: back to the front of its queue, at most
                              `max_attempts` runs, then failed with a server log line
    _dequeue(task_id)         the task out of every queue

`_error` builds the ServerError an endpoint raises; `_public` is a task document without its
private (`_`) fields. It imports nothing from server/.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any

from shipyard import clock
from shipyard.errors import ServerError
from shipyard.protocol import LeaseOutcome, Subcode, TaskStatus, can_transition


def _error(endpoint: str, code: int, subcode: int, message: str) -> ServerError:
    return ServerError(f"{endpoint} failed ({code}/{subcode}): {message}", code=code, subcode=subcode,
                       endpoint=endpoint)


class InMemoryState:
    """Queues, tasks, workers, keys and events in dicts, and the rules that change them; every
    change is made holding `_changed`."""

    def __init__(self, *, max_attempts: int = 3):
        self.max_attempts = max_attempts
        self.queues: dict[str, dict[str, Any]] = {}     # id -> {id, name, entries: [task ids]}
        self.tasks: dict[str, dict[str, Any]] = {}      # id -> document (private fields start with _)
        self.workers: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)
        self._changed = threading.Condition()

    def reap_expired(self) -> list[tuple[str, str]]:
        """The reaper: every task whose lease has expired is re-queued or failed."""
        done = []
        for doc in list(self.tasks.values()):
            lease = doc.get("_lease")
            if lease and lease["expires"] < clock.now():
                done.append((doc["id"], self._requeue_or_fail(doc, f"lease of worker {lease['worker']} expired")))
        return done

    def _grant(self, doc: dict[str, Any], worker: str, queue_id: str, lease_s: float) -> dict[str, Any]:
        doc["_attempt"] = attempt = int(doc.get("_attempt") or 0) + 1
        doc["_run"] = run = int(doc.get("_run", attempt - 1) or 0) + 1
        doc["_lease"] = {"worker": worker, "queue": queue_id, "expires": clock.now() + lease_s, "lease_s": lease_s}
        doc["last_worker"] = worker
        doc.setdefault("shipyard_attempts", []).append({"attempt": attempt, "run": run, "worker": worker,
                                                        "max_runs": self.max_attempts})
        return {"attempt": attempt, "expires_in_s": lease_s}

    # -- the rules ---------------------------------------------------------------------------------

    def _task(self, endpoint: str, task_id: str) -> dict[str, Any]:
        if task_id not in self.tasks:
            raise _error(endpoint, 400, 101, f"invalid task id {task_id}")
        return self.tasks[task_id]

    def _fenced(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._task(endpoint, body["task"])
        if not self._fresh(doc["id"], body.get("attempt")):
            raise _error(endpoint, 400, Subcode.STALE_CLAIM, f"stale claim: attempt {body.get('attempt')} was "
                                                       f"superseded by attempt {doc.get('_attempt')}")
        return doc

    def _fresh(self, task_id: Any, attempt: Any) -> bool:
        """A write without an attempt is unfenced; with one, it must be the task's current attempt."""
        return attempt is None or (task_id in self.tasks and self.tasks[task_id].get("_attempt") == attempt)

    def _change(self, endpoint: str, doc: dict[str, Any], new: str, *, force: bool = False,
                reason: str | None = None, message: str | None = None) -> None:
        current = doc["status"]
        if not can_transition(current, new, force=force):
            raise _error(endpoint, 400, Subcode.INVALID_TASK_STATUS, f"cannot change from {current} to {new}")
        if new != TaskStatus.IN_PROGRESS:
            doc.pop("_lease", None)
        doc.update(status=new, status_reason=reason or "", status_message=message or "")

    def _requeue_or_fail(self, doc: dict[str, Any], reason: str) -> str:
        queue_id = (doc.get("_lease") or {}).get("queue") or (doc.get("execution") or {}).get("queue")
        attempts = int(doc.get("_run", doc.get("_attempt")) or 0)
        doc.pop("_lease", None)
        if doc.get("shipyard_attempts"):
            doc["shipyard_attempts"][-1]["end"] = f"infrastructure: {reason}"
        if attempts >= self.max_attempts or queue_id not in self.queues:
            why = f"infrastructure: agent lost {attempts} time(s); last: {reason}"
            self._change("reaper", doc, TaskStatus.FAILED, force=True, reason=why)
            self.events.append({"type": "log", "task": doc["id"], "level": "error", "worker": "shipyard-server",
                                "msg": f"shipyard server: task {doc['id']} ended failed: {why}"})
            return LeaseOutcome.FAILED
        self._dequeue(doc["id"])
        self._change("reaper", doc, TaskStatus.QUEUED, force=True,
                     reason=f"infrastructure: {reason}; re-queued for run {attempts + 1} of {self.max_attempts}")
        self.queues[queue_id]["entries"].insert(0, doc["id"])
        return LeaseOutcome.REQUEUED

    def _dequeue(self, task_id: str) -> None:
        for queue in self.queues.values():
            queue["entries"] = [entry for entry in queue["entries"] if entry != task_id]


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}

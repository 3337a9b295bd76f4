"""The ControlPlane over a Shipyard server's REST API (agent.api.ApiClient, admin credentials).

Who holds a task is read from three places, so a worker that just took one is never taken
for idle: the task its status report names, the lease the server granted it (the task's open
entry in `shipyard_attempts`), and an `in_progress` task whose `last_worker` it is. A task
under a lease is given back with `tasks.release` (the server counts the attempt); one
without, with a forced `tasks.enqueue` and a move to the front of its queue.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autoscaler.control import ControlPlane, Credential, WorkerView
from autoscaler.model import QueueState
from shipyard import clock
from shipyard.client.api import ApiClient
from shipyard.errors import ServerError
from shipyard.protocol import TaskStatus

_HELD_FIELDS = ["id", "status", "last_worker", "shipyard_attempts", "execution.queue"]


def open_attempt(task: dict) -> dict | None:
    """The lease attempt still running on a task (the server's lease record), if any."""
    attempts = task.get("shipyard_attempts") or []
    last = attempts[-1] if attempts else None
    return last if isinstance(last, dict) and "ended" not in last else None


def _holder(task: dict) -> str | None:
    attempt = open_attempt(task)
    if attempt is not None:
        return attempt.get("worker")
    return task.get("last_worker") if task.get("status") == TaskStatus.IN_PROGRESS else None


class HttpControlPlane(ControlPlane):
    def __init__(self, api: ApiClient, *, deadline_s: float = 15.0):
        self.api = api
        self.deadline_s = deadline_s  # how long one call retries an unreachable server

    def _call(self, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.api.call(endpoint, body or {}, deadline_s=self.deadline_s)

    # -- queues and workers -------------------------------------------------------------------

    def _queues(self) -> list[dict]:
        return self._call("queues.get_all", {"only_fields": ["id", "name", "entries"]})["queues"]

    def ensure_queues(self, names: Iterable[str]) -> None:
        have = {q["name"] for q in self._queues()}
        for name in names:
            if name not in have:
                self._call("queues.create", {"name": name})

    def queue_states(self, names: Iterable[str]) -> dict[str, QueueState]:
        now, docs = clock.now(), {q["name"]: q for q in self._queues()}
        out = {}
        for name in names:
            entries = (docs.get(name) or {}).get("entries") or []
            oldest = min((clock.parse_iso(e["added"]) for e in entries if e.get("added")), default=now)
            out[name] = QueueState(name, len(entries), max(0.0, now - oldest))
        return out

    def workers(self) -> dict[str, WorkerView]:
        out = {}
        for doc in self._call("workers.get_all")["workers"]:
            task = (doc.get("task") or {}).get("id")
            seen = doc.get("last_activity_time") or doc.get("register_time")
            out[doc["id"]] = WorkerView(doc["id"], task, clock.parse_iso(seen) if seen else clock.now())
        return out

    # -- who holds what -----------------------------------------------------------------------

    def _active_tasks(self, statuses: list[str]) -> list[dict]:
        return self._call("tasks.get_all", {"status": statuses, "only_fields": _HELD_FIELDS})["tasks"]

    def held_task(self, worker: str) -> str | None:
        view = self.workers().get(worker)
        if view is not None and view.task:
            return view.task
        for task in self._active_tasks([TaskStatus.IN_PROGRESS, TaskStatus.QUEUED]):
            if _holder(task) == worker:
                return task["id"]
        return None

    def requeue_held(self, worker: str, reason: str) -> list[str]:
        held = [t for t in self._active_tasks([TaskStatus.IN_PROGRESS, TaskStatus.QUEUED]) if _holder(t) == worker]
        for task in held:
            self._requeue(task, reason)
        return [t["id"] for t in held]

    def orphans(self, queues: Iterable[str]) -> list[str]:
        docs = self._queues()
        ids = {q["id"] for q in docs if q["name"] in set(queues)}
        listed = {e["task"] for q in docs for e in q.get("entries") or []}
        return [t["id"] for t in self._active_tasks([TaskStatus.QUEUED])
                if (t.get("execution") or {}).get("queue") in ids and t["id"] not in listed
                and open_attempt(t) is None]

    def requeue(self, task: str, reason: str) -> None:
        docs = self._call("tasks.get_all", {"id": [task], "only_fields": _HELD_FIELDS})["tasks"]
        if docs:
            self._requeue(docs[0], reason)

    def _requeue(self, task: dict, reason: str) -> None:
        attempt = open_attempt(task)
        if attempt is not None and attempt.get("attempt") is not None:
            self._call("tasks.release", {"task": task["id"], "attempt": attempt["attempt"], "retry": True,
                                         "reason": reason})
            return
        queue = (task.get("execution") or {}).get("queue")
        if not queue:
            return
        self._call("tasks.enqueue", {"task": task["id"], "queue": queue, "force": True,
                                     "status_reason": f"infrastructure: {reason}",
                                     "status_message": "re-queued by the autoscaler"})
        self._call("queues.move_task_to_front", {"queue": queue, "task": task["id"]})

    # -- credentials --------------------------------------------------------------------------

    def mint(self, label: str, ttl_s: float) -> Credential:
        data = self._call("auth.create_credentials",
                          {"label": label, "expires_in_s": ttl_s, "role": "agent"})  # it runs an agent
        return Credential(data["access_key"], data["secret_key"], clock.parse_iso(data["expires"]))

    def extend(self, access_key: str, ttl_s: float) -> float:
        data = self._call("auth.extend_credentials", {"access_key": access_key, "expires_in_s": ttl_s})
        return clock.parse_iso(data["expires"])

    def revoke(self, access_key: str) -> None:
        self._call("auth.revoke_credentials", {"access_key": access_key})

    def forget_worker(self, worker: str) -> None:
        try:
            self._call("workers.unregister", {"worker": worker})
        except ServerError as exc:
            if exc.code != 400:  # 400: not registered (any more)
                raise

    def close(self) -> None:
        self.api.close()

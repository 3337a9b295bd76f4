"""An in-memory task server for the loop tests and the simulator (the stub beside the real
`HttpControlPlane`). The "world" side (enqueue, register, claim, finish) is what agents and
users would do; the ControlPlane side is what the autoscaler sees, with the same semantics:
a claim needs an active key, a revoked key claims nothing, a requeue goes to the front."""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from autoscaler.control import ControlPlane, Credential, WorkerView
from autoscaler.model import QueueState
from shipyard import clock
from shipyard.protocol import TaskStatus

QUEUED, IN_PROGRESS, COMPLETED = TaskStatus.QUEUED, TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED


@dataclass
class MemTask:
    id: str
    queue: str
    enqueued_at: float
    status: str = QUEUED
    worker: str | None = None
    claimed_at: float | None = None
    requeues: int = 0


@dataclass
class MemWorker:
    id: str
    queues: tuple[str, ...]
    access_key: str
    last_seen: float
    task: str | None = None


@dataclass
class MemKey:
    label: str
    expires: float
    revoked: bool = False


@dataclass
class InMemoryControlPlane(ControlPlane):
    entries: dict[str, list[str]] = field(default_factory=dict)
    tasks: dict[str, MemTask] = field(default_factory=dict)
    worker_docs: dict[str, MemWorker] = field(default_factory=dict)
    keys: dict[str, MemKey] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)

    # -- the world: users and agents ---------------------------------------------------------

    def enqueue(self, queue: str, task_id: str | None = None) -> str:
        task_id = task_id or f"task-{next(self._ids)}"
        self.tasks[task_id] = MemTask(task_id, queue, clock.now())
        self.entries.setdefault(queue, []).append(task_id)
        return task_id

    def key_active(self, access_key: str) -> bool:
        key = self.keys.get(access_key)
        return key is not None and not key.revoked and clock.now() < key.expires

    def register(self, worker: str, queues: Iterable[str], access_key: str) -> bool:
        if not self.key_active(access_key):
            return False
        self.worker_docs[worker] = MemWorker(worker, tuple(queues), access_key, clock.now())
        return True

    def report(self, worker: str) -> None:
        doc = self.worker_docs.get(worker)
        if doc is not None and self.key_active(doc.access_key):
            doc.last_seen = clock.now()

    def claim(self, worker: str, *, start: bool = True) -> str | None:
        """Pop the next task of the worker's queues; `start=False` pops without starting it
        (an agent that dies right after its claim)."""
        doc = self.worker_docs.get(worker)
        if doc is None or doc.task or not self.key_active(doc.access_key):
            return None
        for queue in doc.queues:
            waiting = self.entries.get(queue) or []
            if waiting:
                task = self.tasks[waiting.pop(0)]
                if start:
                    task.status, task.worker, task.claimed_at = IN_PROGRESS, worker, clock.now()
                    doc.task = task.id
                return task.id
        return None

    def finish(self, worker: str) -> str | None:
        doc = self.worker_docs.get(worker)
        if doc is None or doc.task is None:
            return None
        task, doc.task = self.tasks[doc.task], None
        if task.worker == worker and task.status == IN_PROGRESS:
            task.status = COMPLETED
        return task.id

    def drop_worker(self, worker: str) -> None:
        """The machine vanished: its worker stops reporting and leaves the list."""
        self.worker_docs.pop(worker, None)

    # -- the ControlPlane --------------------------------------------------------------------

    def ensure_queues(self, names: Iterable[str]) -> None:
        for name in names:
            self.entries.setdefault(name, [])

    def queue_states(self, names: Iterable[str]) -> dict[str, QueueState]:
        now, out = clock.now(), {}
        for name in names:
            waiting = self.entries.get(name) or []
            oldest = min((self.tasks[t].enqueued_at for t in waiting), default=now)
            out[name] = QueueState(name, len(waiting), max(0.0, now - oldest))
        return out

    def workers(self) -> dict[str, WorkerView]:
        return {w.id: WorkerView(w.id, w.task, w.last_seen) for w in self.worker_docs.values()}

    def held_task(self, worker: str) -> str | None:
        doc = self.worker_docs.get(worker)
        if doc is not None and doc.task:
            return doc.task
        return next((t.id for t in self.tasks.values() if t.status == IN_PROGRESS and t.worker == worker), None)

    def requeue_held(self, worker: str, reason: str) -> list[str]:
        held = [t.id for t in self.tasks.values() if t.status == IN_PROGRESS and t.worker == worker]
        for task_id in held:
            self.requeue(task_id, reason)
        doc = self.worker_docs.get(worker)
        if doc is not None:
            doc.task = None
        return held

    def orphans(self, queues: Iterable[str]) -> list[str]:
        wanted = set(queues)
        listed = {t for waiting in self.entries.values() for t in waiting}
        return [t.id for t in self.tasks.values()
                if t.status == QUEUED and t.queue in wanted and t.id not in listed]

    def requeue(self, task: str, reason: str) -> None:
        doc = self.tasks[task]
        doc.status, doc.worker, doc.requeues = QUEUED, None, doc.requeues + 1
        waiting = self.entries.setdefault(doc.queue, [])
        if task not in waiting:
            waiting.insert(0, task)
        self.log.append(f"requeue {task}: {reason}")

    def mint(self, label: str, ttl_s: float) -> Credential:
        access = f"KEY{next(self._ids):06d}"
        expires = clock.now() + ttl_s
        self.keys[access] = MemKey(label, expires)
        return Credential(access, f"secret-{access}", expires)

    def extend(self, access_key: str, ttl_s: float) -> float:
        key = self.keys[access_key]
        key.expires = clock.now() + ttl_s
        return key.expires

    def revoke(self, access_key: str) -> None:
        if access_key in self.keys:
            self.keys[access_key].revoked = True

    def forget_worker(self, worker: str) -> None:
        self.worker_docs.pop(worker, None)

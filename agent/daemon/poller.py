"""Where the next task comes from: queue resolution and the claim call.

Against Shipyard's server (server.info advertises `long_poll`) one `queues.get_next_task`
waits on all of the worker's queues at once and returns the moment a task is enqueued.
Against a reference ClearML server it asks each queue in turn and sleeps `poll_interval_s`
when all are empty - only documented endpoints.

`next` claims one task (the daemon: its request is the reference one plus the long-poll fields).
`next_many` claims up to N in one call where the server advertises `claim_many` (Shipyard's
`count` field: the cluster glue, which has room for many jobs at once); elsewhere it is `next`.
"""
from __future__ import annotations

import re
import threading
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field

from agent.taskserver.port import TaskServer
from shipyard.errors import ConfigError
from shipyard.protocol import CLAIM_COUNT, CLAIMS

_ID_RE = re.compile(r"^[-a-f0-9]{30,}$")


@dataclass(frozen=True)
class Queue:
    id: str
    name: str


@dataclass(frozen=True)
class Claim:
    task_id: str
    queue: Queue
    attempt: int | None = None   # the fencing token of a leased claim (Shipyard's server only)
    task: dict | None = field(default=None, compare=False)   # the task's document, when asked for (with_task)


def resolve_queues(api: TaskServer, names: list[str], *, create: bool = False) -> list[Queue]:
    """Queue names or ids → queues; the default queue when none are given."""
    if not names:
        default = api.call("queues.get_default")
        return [Queue(default["id"], default["name"])]
    resolved = []
    for name in names:
        if _ID_RE.match(name):
            doc = api.call("queues.get_by_id", {"queue": name})["queue"]
            resolved.append(Queue(doc["id"], doc["name"]))
            continue
        rows = api.call("queues.get_all", {"name": f"^{re.escape(name)}$", "only_fields": ["id", "name"],
                                           "search_hidden": True})["queues"]
        exact = [r for r in rows if r["name"].lower() == name.lower()]
        if exact:
            resolved.append(Queue(exact[0]["id"], exact[0]["name"]))
        elif create:
            resolved.append(Queue(api.call("queues.create", {"name": name})["id"], name))
        else:
            raise ConfigError(f"queue '{name}' does not exist on the server (use --create-queue to create it)")
    return resolved


class TaskSource:
    def __init__(self, api: TaskServer, queues: list[Queue], *, order_fairness: bool = False,
                 poll_interval_s: float = 5.0, long_poll_s: float = 30.0, stop: threading.Event | None = None,
                 lease_s: float | None = None, worker: str = "", with_task: bool = False):
        self.api = api
        self.queues = list(queues)
        self.order_fairness = order_fairness
        self.poll_interval_s = poll_interval_s
        self.long_poll_s = long_poll_s
        self.stop = stop or threading.Event()
        info = api.server_info()
        extensions = (info.get("shipyard") or {}).get("extensions") or {}
        self.long_poll = "long_poll" in extensions
        self.lease_s = lease_s if "leases" in extensions else None
        self.max_count = int((extensions.get("claim_many") or {}).get("max") or 1)   # claims one call may carry
        self.worker = worker
        self.with_task = with_task   # ask for the task's document with the claim (Shipyard's server)
        self.exact_order = False
        self._pending: Future | None = None

    def _ordered(self, only: list[Queue] | None = None) -> list[Queue]:
        if only is None:
            return list(self.queues)
        if self.exact_order:  # the slot pool decided the order (GPU picker): keep it
            return list(only)
        wanted = {q.id for q in only}
        return [q for q in self.queues if q.id in wanted]

    def _picked(self, queue: Queue) -> None:
        if self.order_fairness and not self.exact_order:  # round-robin: the queue just served goes to the back
            self.queues.remove(queue)
            self.queues.append(queue)

    def _by_id(self, queue_id: str) -> Queue:
        return next(q for q in self.queues if q.id == queue_id)

    def _long_poll_once(self, ordered: list[Queue], wait_s: float, count: int = 1) -> list[Claim]:
        body = {"queue": ordered[0].id, "queues": [q.id for q in ordered], "wait_s": wait_s}
        if self.lease_s:
            body.update({"lease_s": self.lease_s, "worker": self.worker})
        if self.with_task:
            body["with_task"] = True
        if count > 1:
            body[CLAIM_COUNT] = count
        data = self.api.call("queues.get_next_task", body, timeout=wait_s + 30)
        answers = (data.get(CLAIMS) or []) if count > 1 else [data]
        return [self._claim_of(answer, ordered) for answer in answers if answer.get("entry")]

    def _claim_of(self, answer: dict, ordered: list[Queue]) -> Claim:
        queue = self._by_id(answer.get("queue") or ordered[0].id)
        return Claim(answer["entry"]["task"], queue, (answer.get("lease") or {}).get("attempt"), answer.get("task"))

    def _poll_once(self, ordered: list[Queue]) -> Claim | None:
        for queue in ordered:
            data = self.api.call("queues.get_next_task", {"queue": queue.id}, version="2.14")
            if data.get("entry"):
                return Claim(data["entry"]["task"], queue)
        return None

    def next(self, only: list[Queue] | None = None, wait_s: float | None = None) -> Claim | None:
        """The next claimed task from `only` (default: every queue), or None when nothing came
        before the wait ended or `stop` was set."""
        claims = self.next_many(only, wait_s, 1)
        return claims[0] if claims else None

    def next_many(self, only: list[Queue] | None = None, wait_s: float | None = None,
                  count: int = 1) -> list[Claim]:
        """Up to `count` claimed tasks in one call (as many as the server gives at once: it answers
        as soon as one is there), or [] as `next` gives None. One at a time where the server does
        not offer `claim_many`."""
        ordered = self._ordered(only)
        if not ordered:
            self.stop.wait(min(self.poll_interval_s, wait_s or self.poll_interval_s))
            return []
        if not self.long_poll:
            return self._polled(ordered, wait_s)
        if self._pending is None:
            self._pending = _in_daemon_thread(self._long_poll_once, ordered,
                                              self.long_poll_s if wait_s is None else wait_s,
                                              max(1, min(count, self.max_count)))
        while not self._pending.done():
            # Woken by the answer at once (not up to 50 ms later: issue 24's pickup), by a stop within 50 ms.
            futures_wait([self._pending], timeout=0.05)
            if self.stop.is_set():
                return []  # the abandoned request is closed with the session; the server sees the disconnect
        future, self._pending = self._pending, None
        claims = future.result()
        for claim in claims[:1]:
            self._picked(claim.queue)
        return claims

    def _polled(self, ordered: list[Queue], wait_s: float | None) -> list[Claim]:
        claim = self._poll_once(ordered)
        if claim is None:
            self.stop.wait(min(self.poll_interval_s, wait_s or self.poll_interval_s))
            return []
        self._picked(claim.queue)
        return [claim]

    def close(self) -> None:
        """An in-flight long-poll is abandoned: its daemon thread does not hold up the exit, and
        the server sees the connection close (the API session is closed by the caller)."""
        self._pending = None


def _in_daemon_thread(fn, *args) -> Future:
    """Run `fn` on a daemon thread (a ThreadPoolExecutor's workers are joined at interpreter
    exit, which kept a stopping daemon alive for up to a whole long-poll)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            future.set_exception(exc)

    threading.Thread(target=run, name="claim", daemon=True).start()
    return future

"""An in-memory task server: the stub beside the HTTP one, for running the daemon and a task
run in-process.

It answers the endpoints in `port.AGENT_ENDPOINTS`, plus the few a user makes (queues.create,
tasks.create, tasks.enqueue, tasks.stop), with the rules the agent relies on:
    - the ClearML status machine (`shipyard.protocol.TRANSITIONS`); a refused change is ServerError 400/110;
    - a claim with `lease_s` grants an attempt number (the fencing token); a status change,
      ping, renewal, exit record or log event naming an older attempt is 400/150 (stale);
    - a lease that expires (the patchable `shipyard.clock`), a `tasks.release` with retry and a
      `workers.reconcile` put the task back at the front of its queue, at most `max_attempts`
      times, then fail it; a release without retry fails it;
    - `tasks.stop` on a running task whose worker is known asks for an abort (status_message
      "stopping"); on a queued task it stops it at once.
Everything lives in plain dicts (`queues`, `tasks`, `workers`, `keys`, `events`), and `calls`
records every call for assertions. The dicts and the rules every endpoint shares (status
changes, fencing, leases, the reaper) are `InMemoryState` (memory_state.py); this module answers
the endpoints. It imports nothing from server/.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from agent.taskserver.memory_state import InMemoryState, _error, _public
from shipyard import clock
from shipyard.errors import ServerError
from shipyard.protocol import (
    CLAIM_COUNT,
    CLAIMS,
    MAX_CLAIM_COUNT,
    RENEW_LEASES,
    SET_MESSAGES,
    START_RUN,
    START_RUNS,
    STOP_REQUEST,
    LeaseOutcome,
    Subcode,
    TaskStatus,
)

EXTENSIONS = {"long_poll": {"endpoint": "queues.get_next_task", "field": "wait_s", "max_s": 60},
              "leases": {"request_field": "lease_s", "fence_field": "attempt", "renew_many": RENEW_LEASES},
              "claim_many": {"endpoint": "queues.get_next_task", "field": CLAIM_COUNT, "reply_field": CLAIMS,
                             "max": MAX_CLAIM_COUNT},
              "task_keys": {"mint": "auth.create_credentials", "role": "task", "start": START_RUN,
                            "start_many": START_RUNS},
              "status_messages": {"endpoint": SET_MESSAGES, "compare_field": "expect", "fence_field": "attempt"}}


class InMemoryTaskServer(InMemoryState):
    """A TaskServer (agent/taskserver/port.py) held in dicts; safe to share between threads."""

    def __init__(self, *, max_attempts: int = 3, extensions: Mapping[str, Any] | None = None):
        super().__init__(max_attempts=max_attempts)
        self.extensions = dict(EXTENSIONS if extensions is None else extensions)

    # -- the protocol ----------------------------------------------------------------------------

    def call(self, endpoint: str, data: Mapping[str, Any] | None = None, *, version: str | None = None,
             timeout: float | None = None, deadline_s: float | None = None) -> dict[str, Any]:
        body = dict(data or {})
        handler = getattr(self, "_" + endpoint.replace(".", "_"), None)
        if handler is None:
            raise _error(endpoint, 404, 0, f"unknown endpoint {endpoint}")
        if endpoint in ("queues.get_next_task", "tasks.wait_status"):
            return handler(endpoint, body)  # waits without holding the lock
        with self._changed:
            self.calls.append((endpoint, body))
            self.reap_expired()
            answer = handler(endpoint, body)
            self._changed.notify_all()
            return answer

    def add_events(self, events: Iterable[Mapping[str, Any]], *, deadline_s: float = 10.0) -> dict[str, Any]:
        with self._changed:
            batch = [dict(event) for event in events]
            self.calls.append(("events.add_batch", {"events": batch}))
            added = [e for e in batch if self._fresh(e.get("task"), e.get("attempt"))]
            self.events.extend(added)
            return {"added": len(added), "errors": len(batch) - len(added)}

    def server_info(self) -> dict[str, Any]:
        return {"shipyard": {"version": "in-memory", "extensions": dict(self.extensions)}}

    # -- conveniences for tests ------------------------------------------------------------------

    def status(self, task_id: str) -> str:
        return str(self.tasks[task_id]["status"])

    def endpoints(self) -> list[str]:
        return [endpoint for endpoint, _body in self.calls]

    # -- queues ------------------------------------------------------------------------------------

    def _queues_create(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        queue_id = f"queue{next(self._ids):030d}"
        self.queues[queue_id] = {"id": queue_id, "name": body["name"], "entries": []}
        return {"id": queue_id}

    def _queues_get_default(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        if not self.queues:
            raise _error(endpoint, 400, 707, "no default queue")
        queue = next(iter(self.queues.values()))
        return {"id": queue["id"], "name": queue["name"]}

    def _queues_get_by_id(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"queue": self._queue(endpoint, body["queue"])}

    def _queues_get_all(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        pattern = re.compile(body.get("name") or "", re.IGNORECASE)
        return {"queues": [{"id": q["id"], "name": q["name"]} for q in self.queues.values()
                           if pattern.search(q["name"])]}

    def _queue(self, endpoint: str, queue_id: str) -> dict[str, Any]:
        if queue_id not in self.queues:
            raise _error(endpoint, 400, 701, f"invalid queue id {queue_id}")
        return self.queues[queue_id]

    def _queues_get_next_task(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """The claim: pop the first entry of the first non-empty queue, waiting up to `wait_s`;
        with `count`, up to that many entries at once ({"claims": [...]})."""
        queue_ids = body.get("queues") or [body["queue"]]
        deadline = clock.monotonic() + min(float(body.get("wait_s") or 0.0), 60.0)
        count = body.get(CLAIM_COUNT)
        with self._changed:
            self.calls.append((endpoint, body))
            while True:
                self.reap_expired()
                answers = self._pop(endpoint, queue_ids, body, count or 1)
                remaining = deadline - clock.monotonic()
                if answers or remaining <= 0:
                    break
                self._changed.wait(min(remaining, 0.05))
            if count is not None:
                return {CLAIMS: answers}
            if answers and not body.get("queues"):
                answers[0].pop("queue", None)
            return answers[0] if answers else {}

    def _pop(self, endpoint: str, queue_ids: list[str], body: dict[str, Any], count: int) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        for queue_id in queue_ids:
            entries = self._queue(endpoint, queue_id)["entries"]
            while entries and len(answers) < count:
                doc = self.tasks.get(entries.pop(0))
                if doc is None:
                    continue
                if doc["status"] == TaskStatus.STOPPED:
                    doc["status"] = TaskStatus.QUEUED
                answer: dict[str, Any] = {"entry": {"task": doc["id"]}, "queue": queue_id}
                if body.get("lease_s"):
                    answer["lease"] = self._grant(doc, body["worker"], queue_id, float(body["lease_s"]))
                if body.get("with_task"):
                    answer["task"] = _public(doc)
                answers.append(answer)
        return answers

    # -- tasks: what users do --------------------------------------------------------------------

    def _tasks_create(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        task_id = f"{next(self._ids):032x}"
        self.tasks[task_id] = {**body, "id": task_id, "status": TaskStatus.CREATED, "status_message": "",
                               "status_reason": ""}
        return {"id": task_id}

    def _tasks_enqueue(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._task(endpoint, body["task"])
        queue = self._queue(endpoint, body["queue"])
        self._change(endpoint, doc, TaskStatus.QUEUED, force=bool(body.get("force")), reason=body.get("status_reason"))
        doc.setdefault("execution", {})["queue"] = queue["id"]
        doc["_run"] = 0  # a person's enqueue counts runs afresh, as the real server does
        queue["entries"].append(doc["id"])
        return {"queued": 1}

    def _tasks_stop(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._task(endpoint, body["task"])
        reason = body.get("status_reason") or "abort request"
        if doc["status"] == TaskStatus.QUEUED:
            self._dequeue(doc["id"])
            self._change(endpoint, doc, TaskStatus.STOPPED, force=True, reason=reason)
        elif doc["status"] == TaskStatus.IN_PROGRESS and doc.get("last_worker") and not body.get("force"):
            doc.update(status_message=STOP_REQUEST, status_reason=reason)
        else:
            self._change(endpoint, doc, TaskStatus.STOPPED, force=bool(body.get("force")), reason=reason)
        return {"updated": 1}

    # -- tasks: what a run does ------------------------------------------------------------------

    def _tasks_get_by_id(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"task": _public(self._task(endpoint, body["task"]))}

    def _tasks_get_all(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("id") or list(self.tasks)
        fields = body.get("only_fields")
        rows = [_public(self.tasks[i]) for i in ids if i in self.tasks]
        if fields:
            rows = [{k: v for k, v in row.items() if k in fields or k == "id"} for row in rows]
        return {"tasks": rows}

    def _tasks_wait_status(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """The `task_watch` extension (offered only when a test passes it in `extensions`): the
        task's status and status_message as soon as either differs from the caller's."""
        deadline = clock.monotonic() + min(float(body.get("wait_s") or 0.0), 60.0)
        with self._changed:
            self.calls.append((endpoint, body))
            while True:
                doc = self.tasks.get(body["task"])
                row = None if doc is None else {"id": doc["id"], "status": doc["status"],
                                                "status_message": doc.get("status_message") or ""}
                changed = row is None or any(key in body and body[key] != row[key]
                                             for key in ("status", "status_message"))
                if changed or clock.monotonic() >= deadline:
                    return {"task": row, "changed": changed}
                self._changed.wait(min(deadline - clock.monotonic(), 0.05))

    def _tasks_started(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._status_call(endpoint, body, TaskStatus.IN_PROGRESS)

    def _tasks_completed(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._status_call(endpoint, body, TaskStatus.COMPLETED)

    def _tasks_failed(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._status_call(endpoint, body, TaskStatus.FAILED)

    def _tasks_stopped(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._status_call(endpoint, body, TaskStatus.STOPPED)

    def _status_call(self, endpoint: str, body: dict[str, Any], new: str) -> dict[str, Any]:
        doc = self._task(endpoint, body["task"])
        if doc["status"] == TaskStatus.QUEUED or new == TaskStatus.IN_PROGRESS:
            self._held(endpoint, body)   # handed back or reaped (waiting in its queue), or a start
        else:
            self._fenced(endpoint, body)
        self._change(endpoint, doc, new, force=bool(body.get("force")), reason=body.get("status_reason"),
                     message=body.get("status_message"))
        return {"updated": 1}

    def _tasks_set_messages(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """SET_MESSAGES: each message written where the claim still holds the task and its message
        is still the one expected."""
        updated = []
        for item in body["tasks"]:
            doc = self.tasks.get(item["task"])
            if (doc is None or doc["status"] != TaskStatus.IN_PROGRESS or doc.get("_attempt") != item["attempt"]
                    or not doc.get("_lease") or (doc.get("status_message") or "") != item["expect"]):
                continue
            doc["status_message"] = item["status_message"]
            updated.append(doc["id"])
        return {"updated": updated}

    def _tasks_ping(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        self._fenced(endpoint, body)["last_update"] = clock.now()
        return {}

    def _tasks_renew_lease(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._fenced(endpoint, body)
        lease = doc.get("_lease")
        if not lease:
            raise _error(endpoint, 400, Subcode.STALE_CLAIM, "the task is no longer leased")
        lease_s = float(body.get("lease_s") or lease["lease_s"])
        doc["_lease"] = {**lease, "expires": clock.now() + lease_s, "lease_s": lease_s}
        return {"expires_in_s": lease_s, "status": doc["status"]}

    def _tasks_renew_leases(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        renewed, stale = [], []
        for item in body.get("tasks") or []:
            try:
                self._tasks_renew_lease(endpoint, {**item, "lease_s": body.get("lease_s")})
                renewed.append(item["task"])
            except ServerError as exc:
                if exc.subcode == Subcode.STALE_CLAIM:
                    stale.append(item["task"])
        return {"renewed": renewed, "stale": stale}

    def _tasks_release(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._held(endpoint, body)
        reason = body.get("reason") or "released by its agent"
        if body.get("retry", True):
            return {"outcome": self._requeue_or_fail(doc, reason)}
        self._change(endpoint, doc, TaskStatus.FAILED, force=True, reason=reason)
        return {"outcome": LeaseOutcome.FAILED}

    def _tasks_record_exit(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._fenced(endpoint, body)
        doc["_exit"] = {"attempt": body["attempt"], "code": int(body["exit_code"])}
        return {"recorded": True}

    def _held(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """The task of an agent's edit: with `attempt`, only while that claim holds its lease."""
        doc = self._fenced(endpoint, body)
        if body.get("attempt") is not None and not doc.get("_lease"):
            raise _error(endpoint, 400, Subcode.STALE_CLAIM, "the task is no longer leased")
        return doc

    def _tasks_set_requirements(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        self._held(endpoint, body).setdefault("script", {})["requirements"] = body["requirements"]
        return {"updated": 1}

    def _tasks_edit(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._held(endpoint, body)
        for key, value in body.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            elif key not in ("task", "force", "attempt"):
                doc[key] = value
        return {"updated": 1}

    # -- workers and keys --------------------------------------------------------------------------

    def _workers_register(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        self.workers[body["worker"]] = {"id": body["worker"], "queues": body.get("queues") or [],
                                        "last_seen": clock.now(), "task": None}
        return {}

    def _workers_status_report(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        worker = self.workers.setdefault(body["worker"], {"id": body["worker"], "queues": []})
        worker.update(last_seen=clock.now(), task=body.get("task"), stats=body.get("machine_stats"))
        if body.get("task") in self.tasks:
            self.tasks[body["task"]]["last_worker"] = body["worker"]
        return {}

    def _workers_unregister(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.workers.pop(body["worker"], None) is None:
            raise _error(endpoint, 400, Subcode.WORKER_NOT_REGISTERED, "Worker is not registered")
        return {}

    def _workers_reconcile(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        held = [doc for doc in self.tasks.values() if (doc.get("_lease") or {}).get("worker") == body["worker"]]
        return {"released": [{"task": doc["id"], "outcome": self._requeue_or_fail(
            doc, f"worker {body['worker']} restarted while holding it")} for doc in held]}

    def _auth_create_credentials(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        access = f"TASKKEY{next(self._ids):016d}"
        self.keys[access] = {"label": body.get("label"), "role": body.get("role"), "revoked": False}
        return {"access_key": access, "secret_key": f"secret-{access}"}

    def _tasks_start_run(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """`tasks.started` of a leased claim plus its run's key (shipyard.protocol.START_RUN); with
        `runs`, several claims, each refused alone."""
        if body.get(START_RUNS) is not None:
            answers = []
            for run in body[START_RUNS]:
                try:
                    answers.append({"task": run["task"], **self._tasks_start_run(endpoint, {**body, **run,
                                                                                             START_RUNS: None})})
                except ServerError as exc:
                    answers.append({"task": run["task"], "error": {"code": exc.code, "subcode": exc.subcode,
                                                                   "msg": str(exc)}})
            return {START_RUNS: answers}
        if not body.get("attempt") or not self._fenced(endpoint, body).get("_lease"):
            raise _error(endpoint, 400, Subcode.STALE_CLAIM, "only a leased claim is started with a key")
        self._status_call(endpoint, body, TaskStatus.IN_PROGRESS)
        return {"started": 1, **self._auth_create_credentials(endpoint, {"label": body["task"], "role": "task"})}

    def _auth_extend_credentials(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"access_key": body["access_key"]}

    def _auth_revoke_credentials(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        self.keys.get(body["access_key"], {})["revoked"] = True
        return {}

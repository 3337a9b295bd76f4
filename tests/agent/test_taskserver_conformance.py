"""The in-memory task server against a real one: one scenario table, run on both.

`InMemoryTaskServer` stands in for Shipyard's server in the agent's in-process tests; each
scenario here drives the calls the agent makes (agent/taskserver/port.py AGENT_ENDPOINTS, the
claim as agent/daemon/poller.py sends it) on both and expects the same observations, so the fake
cannot drift from the server it models.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.taskserver.memory import InMemoryTaskServer
from agent.taskserver.port import TaskServer
from shipyard.client.api import ApiClient
from shipyard.errors import ServerError
from tests.helpers import ACCESS_KEY, SECRET_KEY, start_server

LEASE_S = 60.0


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("conformance"))
    yield srv
    srv.stop()


@pytest.fixture(params=["memory", "http"])
def ts(request) -> Iterator[TaskServer]:
    if request.param == "memory":
        yield InMemoryTaskServer()
        return
    with ApiClient(request.getfixturevalue("http_server").api_url, ACCESS_KEY, SECRET_KEY, "conformance:0",
                   timeout=10, retry_deadline_s=5) as api:
        yield api


# -- the agent's calls ----------------------------------------------------------------------------

def _name(what: str) -> str:
    return f"conf-{what}-{uuid.uuid4().hex[:8]}"


def _queued_task(ts: TaskServer) -> tuple[str, str]:
    """A user's part: a queue, and a task created and enqueued on it."""
    queue = ts.call("queues.create", {"name": _name("q")})["id"]
    task = ts.call("tasks.create", {"name": _name("t"), "type": "training"})["id"]
    ts.call("tasks.enqueue", {"task": task, "queue": queue})
    return queue, task


def _claim(ts: TaskServer, queue: str, worker: str) -> dict[str, Any]:
    """The claim as the poller sends it against a server with long poll and leases."""
    return ts.call("queues.get_next_task", {"queue": queue, "queues": [queue], "wait_s": 0,
                                            "lease_s": LEASE_S, "worker": worker})


def _task(ts: TaskServer, task: str) -> dict[str, Any]:
    return ts.call("tasks.get_all", {"id": [task], "only_fields": ["status", "status_message"]})["tasks"][0]


def _subcode(call: Callable[[], object]) -> tuple[int | None, int | None]:
    with pytest.raises(ServerError) as refused:
        call()
    return refused.value.code, refused.value.subcode


# -- the scenarios: each returns what it saw --------------------------------------------------------

def claim_run_complete(ts: TaskServer) -> dict[str, Any]:
    queue, task = _queued_task(ts)
    worker = _name("w")
    claim = _claim(ts, queue, worker)
    attempt = claim["lease"]["attempt"]
    ts.call("tasks.started", {"task": task, "attempt": attempt})
    running = _task(ts, task)["status"]
    ts.call("tasks.ping", {"task": task, "attempt": attempt})
    ts.call("tasks.completed", {"task": task, "attempt": attempt, "status_reason": "done"})
    return {"claimed": claim["entry"]["task"] == task, "queue": claim.get("queue") == queue,
            "attempt": attempt, "running": running, "final": _task(ts, task)["status"],
            "empty_after": _claim(ts, queue, worker).get("entry")}


def stale_attempt_refused(ts: TaskServer) -> dict[str, Any]:
    queue, task = _queued_task(ts)
    worker = _name("w")
    attempt = _claim(ts, queue, worker)["lease"]["attempt"]
    ts.call("tasks.started", {"task": task, "attempt": attempt})
    return {"ping": _subcode(lambda: ts.call("tasks.ping", {"task": task, "attempt": attempt + 1})),
            "renew": _subcode(lambda: ts.call("tasks.renew_lease", {"task": task, "attempt": attempt + 1})),
            "completed": _subcode(lambda: ts.call("tasks.completed", {"task": task, "attempt": attempt + 1})),
            "still": _task(ts, task)["status"]}


def release_and_reclaim(ts: TaskServer) -> dict[str, Any]:
    queue, task = _queued_task(ts)
    worker = _name("w")
    first = _claim(ts, queue, worker)["lease"]["attempt"]
    ts.call("tasks.started", {"task": task, "attempt": first})
    outcome = ts.call("tasks.release", {"task": task, "attempt": first, "retry": True, "reason": "test"})
    requeued = _task(ts, task)["status"]
    twice = _subcode(lambda: ts.call("tasks.release", {"task": task, "attempt": first, "retry": True, "reason": "again"}))
    late = _subcode(lambda: ts.call("tasks.stopped", {"task": task, "attempt": first}))
    edit = _subcode(lambda: ts.call("tasks.edit", {"task": task, "attempt": first, "force": True,
                                                   "runtime": {"from": "the old claim"}}))
    second = _claim(ts, queue, worker)["lease"]["attempt"]
    old = _subcode(lambda: ts.call("tasks.started", {"task": task, "attempt": first}))
    ts.call("tasks.started", {"task": task, "attempt": second})
    ts.call("tasks.completed", {"task": task, "attempt": second})
    return {"outcome": outcome.get("outcome"), "requeued": requeued, "twice": twice, "late": late, "edit": edit, "attempts": (first, second),
            "old_refused": old, "final": _task(ts, task)["status"]}


def stop_running_task(ts: TaskServer) -> dict[str, Any]:
    queue, task = _queued_task(ts)
    worker = _name("w")
    ts.call("workers.register", {"worker": worker, "queues": [queue]})
    attempt = _claim(ts, queue, worker)["lease"]["attempt"]
    ts.call("tasks.started", {"task": task, "attempt": attempt})
    ts.call("workers.status_report", {"worker": worker, "task": task, "timestamp": 0})
    ts.call("tasks.stop", {"task": task})
    asked = _task(ts, task)   # what the run's abort check reads
    ts.call("tasks.stopped", {"task": task, "attempt": attempt, "status_reason": "aborted"})
    ts.call("workers.unregister", {"worker": worker})
    return {"asked": (asked["status"], asked["status_message"]), "final": _task(ts, task)["status"]}


def stop_queued_task(ts: TaskServer) -> dict[str, Any]:
    queue, task = _queued_task(ts)
    ts.call("tasks.stop", {"task": task})
    return {"final": _task(ts, task)["status"], "claimable": bool(_claim(ts, queue, _name("w")).get("entry"))}


def register_unregister(ts: TaskServer) -> dict[str, Any]:
    worker = _name("w")
    answers = [ts.call("workers.register", {"worker": worker}),
               ts.call("workers.status_report", {"worker": worker, "timestamp": 0}),
               ts.call("workers.unregister", {"worker": worker})]
    with pytest.raises(ServerError) as again:
        ts.call("workers.unregister", {"worker": worker})
    return {"answers": [type(a).__name__ for a in answers], "again": (again.value.code, again.value.subcode)}


SCENARIOS: dict[str, tuple[Callable[[TaskServer], dict[str, Any]], dict[str, Any]]] = {
    "claim, start, ping, complete": (claim_run_complete, {
        "claimed": True, "queue": True, "attempt": 1, "running": "in_progress", "final": "completed",
        "empty_after": None}),
    "a stale attempt is refused": (stale_attempt_refused, {
        "ping": (400, 150), "renew": (400, 150), "completed": (400, 150), "still": "in_progress"}),
    "a released task is claimed again with a new attempt": (release_and_reclaim, {
        "outcome": "requeued", "requeued": "queued", "twice": (400, 150), "late": (400, 150), "edit": (400, 150), "attempts": (1, 2), "old_refused": (400, 150),
        "final": "completed"}),
    "stop a running task asks its run to abort": (stop_running_task, {
        "asked": ("in_progress", "stopping"), "final": "stopped"}),
    "stop a queued task stops it at once": (stop_queued_task, {"final": "stopped", "claimable": False}),
    "workers register and unregister": (register_unregister, {"answers": ["dict"] * 3, "again": (400, 1004)}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario(ts: TaskServer, scenario: str) -> None:
    run, expected = SCENARIOS[scenario]
    assert run(ts) == expected

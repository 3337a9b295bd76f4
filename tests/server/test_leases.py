"""Claims as leases: fencing, renewal, expiry → re-queue at the front, give-up, opt-out, reconcile."""
from __future__ import annotations

import time

import pytest

from shipyard.protocol import RENEW_LEASES
from tests.helpers import ApiFailure, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("leases"), env={"SHIPYARD_REAPER_INTERVAL_S": "0.2"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv):
    return srv.api()


def _queued(api, queue_name: str, n: int = 1, **fields) -> tuple[str, list[str]]:
    ids = []
    for i in range(n):
        task = api.call("tasks.create", {"name": f"l{i}", "type": "training", **fields})["id"]
        api.call("tasks.enqueue", {"task": task, "queue_name": queue_name})
        ids.append(task)
    queue = api.call("queues.get_all", {"name": f"^{queue_name}$"})["queues"][0]["id"]
    return queue, ids


def _claim(api, queue, lease_s=30, worker="w1"):
    return api.call("queues.get_next_task", {"queue": queue, "lease_s": lease_s, "worker": worker})


def _wait(api, task, pred, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = api.call("tasks.get_by_id", {"task": task})["task"]
        if pred(doc):
            return doc
        time.sleep(0.1)
    raise AssertionError(doc)


def test_claim_carries_attempt_and_fences_writes(api):
    queue, (task,) = _queued(api, "fence")
    got = _claim(api, queue)
    assert got["lease"]["attempt"] == 1
    api.call("tasks.started", {"task": task, "attempt": 1, "force": True})
    api.call("tasks.renew_lease", {"task": task, "attempt": 1})
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.completed", {"task": task, "attempt": 7})
    assert err.value.subcode == 150 and "Stale claim" in err.value.msg
    with pytest.raises(ApiFailure):
        api.events([{"type": "log", "task": task, "msg": "late", "attempt": 7}])
    api.events([{"type": "log", "task": task, "msg": "mine", "attempt": 1}])
    api.call("tasks.edit", {"task": task, "attempt": 1, "force": True, "runtime": {"environment_source": "task"}})
    api.call("tasks.set_requirements", {"task": task, "attempt": 1, "requirements": {"pip": "a==1"}})
    for endpoint, body in [("tasks.edit", {"force": True, "runtime": {}}), ("tasks.set_requirements",
                                                                           {"requirements": {"pip": ""}})]:
        with pytest.raises(ApiFailure) as err:
            api.call(endpoint, {"task": task, "attempt": 7, **body})
        assert err.value.subcode == 150, endpoint
    api.call("tasks.completed", {"task": task, "attempt": 1})
    doc = api.call("tasks.get_by_id", {"task": task})["task"]
    assert doc["status"] == "completed" and doc["shipyard_attempts"][0]["end"].startswith("completed")
    assert doc["runtime"] == {"environment_source": "task"} and doc["script"]["requirements"]["pip"] == "a==1"
    assert "_lease" not in doc


def test_expired_lease_requeues_at_front_then_gives_up(api):
    queue, (task, other) = _queued(api, "expiry", 2)
    for attempt in (1, 2, 3):
        got = _claim(api, queue, lease_s=0.5)
        assert got["entry"]["task"] == task and got["lease"]["attempt"] == attempt
        api.call("tasks.started", {"task": task, "attempt": attempt, "force": True})
        if attempt < 3:
            doc = _wait(api, task, lambda d: d["status"] == "queued")
            assert "lease of worker w1 expired" in doc["status_reason"]
            # Runs are numbered from 1: after the first run was lost, the next one is run 2.
            assert doc["status_reason"].endswith(f"re-queued for run {attempt + 1} of 3"), doc["status_reason"]
            assert doc["shipyard_attempts"][-1]["max_runs"] == 3
            entries = api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"]
            assert [e["task"] for e in entries] == [task, other]  # back at the front
    doc = _wait(api, task, lambda d: d["status"] == "failed")
    assert doc["status_reason"].startswith("infrastructure: agent lost 3 time(s)")
    assert [a["attempt"] for a in doc["shipyard_attempts"]] == [1, 2, 3]
    # The server ended it, not an agent: its console's last line says why, as an agent's would.
    lines = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc"})["events"]
    assert lines and lines[-1]["msg"] == f"shipyard server: task {task} ended failed: {doc['status_reason']}"
    with pytest.raises(ApiFailure):  # the lost agent comes back: its writes are refused
        api.call("tasks.completed", {"task": task, "attempt": 2})


def test_a_person_enqueueing_again_counts_runs_afresh(api):
    """Runs are counted since a person last enqueued the task: a task stopped and enqueued again
    (no reset) gets its full number of runs, while the claim fence keeps growing."""
    queue, (task,) = _queued(api, "afresh")
    for _ in range(2):  # two runs lost to the lease, then a person stops it
        attempt = _claim(api, queue, lease_s=0.5)["lease"]["attempt"]
        api.call("tasks.started", {"task": task, "attempt": attempt, "force": True})
        _wait(api, task, lambda d: d["status"] == "queued")
    api.call("tasks.stop", {"task": task, "force": True})
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    got = _claim(api, queue, lease_s=0.5)
    assert got["lease"]["attempt"] == 3  # the fence: a write from attempt 1 or 2 is still refused
    api.call("tasks.started", {"task": task, "attempt": 3, "force": True})
    doc = _wait(api, task, lambda d: d["status"] == "queued")
    assert doc["status_reason"].endswith("re-queued for run 2 of 3"), doc["status_reason"]
    assert [a["run"] for a in doc["shipyard_attempts"]] == [1, 2, 1]
    with pytest.raises(ApiFailure):
        api.call("tasks.completed", {"task": task, "attempt": 2})


def test_no_retry_tag_fails_at_once(api):
    queue, (task,) = _queued(api, "noretry", system_tags=["shipyard:no-retry"])
    _claim(api, queue, lease_s=0.3)
    doc = _wait(api, task, lambda d: d["status"] == "failed")
    assert "opted out of retries" in doc["status_reason"]


def test_release_with_retry_and_reconcile(api):
    queue, (a, b) = _queued(api, "release", 2)
    _claim(api, queue, worker="w-rel")
    assert api.call("tasks.release", {"task": a, "attempt": 1, "reason": "pip index unreachable"})["outcome"] == "requeued"
    doc = api.call("tasks.get_by_id", {"task": a})["task"]
    assert doc["status"] == "queued" and "pip index unreachable" in doc["status_reason"]
    # the old holder's late writes are stale: a second hand-back, a start, an end
    for endpoint, body in [("tasks.release", {"reason": "again"}), ("tasks.started", {"force": True}),
                           ("tasks.stopped", {}), ("tasks.failed", {"force": True}),
                           ("tasks.edit", {"force": True, "runtime": {"from": "the old claim"}}),
                           ("tasks.set_requirements", {"requirements": {"pip": "old==1"}})]:
        with pytest.raises(ApiFailure) as late:
            api.call(endpoint, {"task": a, "attempt": 1, **body})
        assert late.value.subcode == 150 and "no longer leased" in late.value.msg, endpoint
    doc = api.call("tasks.get_by_id", {"task": a})["task"]
    assert doc["status"] == "queued" and "from" not in (doc.get("runtime") or {})
    got = _claim(api, queue, worker="w-rel")
    assert got["entry"]["task"] == a and got["lease"]["attempt"] == 2
    released = api.call("workers.reconcile", {"worker": "w-rel"})["released"]
    assert released == [{"task": a, "outcome": "requeued"}]


def test_external_stop_ends_the_lease(api):
    queue, (task,) = _queued(api, "ext-stop")
    _claim(api, queue, lease_s=0.5)
    api.call("tasks.started", {"task": task, "attempt": 1, "force": True})
    api.call("tasks.stopped", {"task": task})
    time.sleep(1.2)
    assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "stopped"  # not re-queued
    with pytest.raises(ApiFailure):
        api.call("tasks.renew_lease", {"task": task, "attempt": 1})


def test_reference_clients_are_not_leased(api):
    queue, (task,) = _queued(api, "plain")
    got = api.call("queues.get_next_task", {"queue": queue})
    assert "lease" not in got
    time.sleep(0.5)
    assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "queued"


def test_resent_log_batches_are_stored_once(api):
    queue, (task,) = _queued(api, "dedup")
    _claim(api, queue)
    batch = [{"type": "log", "task": task, "msg": f"line {i}", "timestamp": 1000 + i, "attempt": 1} for i in range(3)]
    api.events(batch)
    api.events(batch)               # the answer was lost; the agent sends the batch again
    api.events(batch[1:] + [{"type": "log", "task": task, "msg": "line 3", "timestamp": 1003, "attempt": 1}])
    events = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc"})["events"]
    assert [e["msg"] for e in events] == ["line 0", "line 1", "line 2", "line 3"]


def test_a_refused_log_batch_does_not_raise_the_mark_and_mixed_batches_are_fenced_too(api):
    """The agent's log batch is one transaction (fence, dedup, store, mark): when nothing of it
    is stored, the mark stays, so the corrected re-send is not taken for a duplicate."""
    queue, (task,) = _queued(api, "one-tx")
    _claim(api, queue)
    bad = [{"type": "log", "task": task, "msg": f"line {i}", "timestamp": 2000 + i, "level": "loud", "attempt": 1}
           for i in range(2)]
    with pytest.raises(ApiFailure):
        api.events(bad)
    api.events([{**event, "level": "info"} for event in bad])
    mixed = [{"type": "log", "task": task, "msg": "line 2", "timestamp": 2002, "attempt": 1},
             {"type": "training_stats_scalar", "task": task, "metric": "m", "variant": "v", "iter": 1, "value": 1.0,
              "timestamp": 2002, "attempt": 1}]
    api.events(mixed)
    api.events(mixed)   # re-sent: the log line is dropped, the scalar replaces itself
    with pytest.raises(ApiFailure):
        api.events([{**mixed[0], "attempt": 9}])
    events = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc"})["events"]
    assert [e["msg"] for e in events] == ["line 0", "line 1", "line 2"]
    doc = api.call("tasks.get_by_id", {"task": task})["task"]
    assert doc["last_iteration"] == 1 and doc["last_update"]


def test_exit_recorded_before_the_agent_is_lost_ends_the_task(api):
    queue, (ok, bad) = _queued(api, "exits", 2)
    for task, code in ((ok, 0), (bad, 3)):
        got = _claim(api, queue, lease_s=0.5)
        assert got["entry"]["task"] == task
        api.call("tasks.started", {"task": task, "attempt": 1, "force": True})
        api.call("tasks.record_exit", {"task": task, "attempt": 1, "exit_code": code})
    done = _wait(api, ok, lambda d: d["status"] != "in_progress")
    assert done["status"] == "completed" and "was lost before it reported" in done["status_reason"]
    failed = _wait(api, bad, lambda d: d["status"] != "in_progress")
    assert failed["status"] == "failed" and "exited with code 3" in failed["status_reason"]
    assert len(done["shipyard_attempts"]) == 1   # not run a second time
    last = api.call("events.get_task_events", {"task": bad, "event_type": "log", "order": "asc"})["events"][-1]
    assert last["msg"].endswith(failed["status_reason"]) and "exited with code 3" in last["msg"]


def test_many_leases_are_renewed_in_one_call_and_a_superseded_claim_is_named(api):
    queue, (a, b, c) = _queued(api, "renew-many", 3)
    for task in (a, b, c):
        assert _claim(api, queue, lease_s=0.5)["entry"]["task"] == task
        api.call("tasks.started", {"task": task, "attempt": 1, "force": True})
    api.call("tasks.completed", {"task": c, "attempt": 1})     # ended: no lease left to renew
    body = {"tasks": [{"task": a, "attempt": 1}, {"task": b, "attempt": 2}, {"task": c, "attempt": 1},
                      {"task": "no-such-task", "attempt": 1}], "lease_s": 30}
    answer = api.call(RENEW_LEASES, body)
    assert answer == {"renewed": [a], "stale": sorted([b, c])}
    time.sleep(1.0)   # past the claims' own 0.5 s: the reaper (every 0.2 s) requeues b, never a
    assert api.call("tasks.get_by_id", {"task": a})["task"]["status"] == "in_progress"
    _wait(api, b, lambda d: d["status"] == "queued")
    assert api.call("server.info")["shipyard"]["extensions"]["leases"]["renew_many"] == RENEW_LEASES
    with pytest.raises(ApiFailure) as refused:
        api.call(RENEW_LEASES, {"tasks": [{"task": a}]})
    assert refused.value.code == 400 and "attempt" in str(refused.value)

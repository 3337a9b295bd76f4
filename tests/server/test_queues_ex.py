"""queues.*: metrics over time, get_all_ex's workers, hidden queues, entries limits, the task's
execution.queue, forced delete and metadata (issue 19)."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.helpers import ApiFailure


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _task(api) -> str:
    return api.call("tasks.create", {"name": _name("q-task"), "type": "training"})["id"]


def _bad(api, endpoint, body):
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    assert err.value.code == 400
    return err.value.msg


def test_queue_metrics_follow_adds_and_removes(api):
    queue = api.call("queues.create", {"name": _name("metrics")})["id"]
    first, second = _task(api), _task(api)
    api.call("tasks.enqueue", {"task": first, "queue": queue})
    time.sleep(1.1)
    api.call("tasks.enqueue", {"task": second, "queue": queue})
    # The server samples changed queues once a second, and a second's row keeps its last state:
    # a state that lasts two seconds has a second of its own. The pop falls in an interval of its
    # own: each answers its longest wait.
    time.sleep(2.1)
    api.call("queues.get_next_task", {"queue": queue})
    now = time.time()
    res = api.call("queues.get_queue_metrics", {"queue_ids": [queue], "from_date": now - 3600, "to_date": now + 1,
                                                "interval": 1})
    [series] = res["queues"]
    assert series["queue"] == queue
    assert len(series["dates"]) == len(series["avg_waiting_times"]) == len(series["queue_lengths"]) >= 2
    assert series["dates"] == sorted(series["dates"]) and series["dates"][0] > 1e12  # epoch ms
    assert max(series["queue_lengths"]) == 2 and series["queue_lengths"][-1] == 1
    assert max(series["avg_waiting_times"]) > 0.5  # the first task waited over a second

    total = api.call("queues.get_queue_metrics", {"from_date": now - 3600, "to_date": now + 1, "interval": 60})
    assert [q["queue"] for q in total["queues"]] == ["total"]
    assert "from_date" in _bad(api, "queues.get_queue_metrics", {"to_date": now, "interval": 5})
    assert "queue_ids" in _bad(api, "queues.get_queue_metrics", {"from_date": now - 5, "to_date": now,
                                                                  "interval": 5, "queue_ids": "q"})


def test_get_all_ex_lists_the_workers_serving_each_queue(api):
    queue = api.call("queues.create", {"name": _name("served")})["id"]
    worker = _name("server-w")
    api.call("workers.register", {"worker": worker, "queues": [queue]})
    task = _task(api)
    api.call("workers.status_report", {"worker": worker, "task": task, "timestamp": int(time.time() * 1000)})
    [doc] = api.call("queues.get_all_ex", {"id": [queue]})["queues"]
    assert [w["name"] for w in doc["workers"]] == [worker]
    assert doc["workers"][0]["task"]["id"] == task and "ip" in doc["workers"][0]
    api.call("workers.unregister", {"worker": worker})
    assert api.call("queues.get_all_ex", {"id": [queue]})["queues"][0]["workers"] == []


def test_hidden_queues_need_search_hidden(api):
    hidden = api.call("queues.create", {"name": _name("glue"), "system_tags": ["k8s-glue"]})["id"]
    for endpoint in ("queues.get_all_ex", "queues.get_all"):
        assert hidden not in {q["id"] for q in api.call(endpoint, {})["queues"]}
        assert hidden in {q["id"] for q in api.call(endpoint, {"search_hidden": True})["queues"]}
        assert hidden in {q["id"] for q in api.call(endpoint, {"id": [hidden]})["queues"]}
    assert "search_hidden" in _bad(api, "queues.get_all_ex", {"search_hidden": [1]})


def test_max_task_entries_limits_the_entries(api):
    queue = api.call("queues.create", {"name": _name("long")})["id"]
    tasks = [_task(api) for _ in range(3)]
    for task in tasks:
        api.call("tasks.enqueue", {"task": task, "queue": queue})
    [doc] = api.call("queues.get_all", {"id": [queue], "max_task_entries": 1})["queues"]
    assert [e["task"] for e in doc["entries"]] == tasks[:1]
    [doc] = api.call("queues.get_all_ex", {"id": [queue], "max_task_entries": 2, "count_task_entries": True})["queues"]
    assert len(doc["entries"]) == 2 and doc["count"] == 3
    first = api.call("tasks.get_by_id", {"task": tasks[0]})["task"]["name"]
    assert doc["entries"][0]["task"] == {"id": tasks[0], "name": first}  # joined, as the UI reads it
    assert len(api.call("queues.get_by_id", {"queue": queue, "max_task_entries": 2})["queue"]["entries"]) == 2
    assert "max_task_entries" in _bad(api, "queues.get_all", {"max_task_entries": "one"})
    assert "max_task_entries" in _bad(api, "queues.get_by_id", {"queue": queue, "max_task_entries": -1})


def test_add_task_sets_the_execution_queue(api):
    queue = api.call("queues.create", {"name": _name("add")})["id"]
    task = _task(api)
    assert api.call("queues.add_task", {"queue": queue, "task": task}) == {"added": 1}
    assert api.call("tasks.get_by_id", {"task": task})["task"]["execution"]["queue"] == queue
    other = _task(api)
    api.call("queues.add_task", {"queue": queue, "task": other, "update_execution_queue": False})
    assert api.call("tasks.get_by_id", {"task": other})["task"].get("execution", {}).get("queue") != queue
    assert "update_execution_queue" in _bad(api, "queues.add_task", {"queue": queue, "task": _task(api),
                                                                     "update_execution_queue": [True]})


def test_forced_delete_sends_queued_tasks_back_to_created(api):
    queue = api.call("queues.create", {"name": _name("doomed")})["id"]
    task = _task(api)
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    with pytest.raises(ApiFailure) as err:
        api.call("queues.delete", {"queue": queue})
    assert err.value.code == 400
    assert api.call("queues.delete", {"queue": queue, "force": True}) == {"deleted": 1}
    doc = api.call("tasks.get_by_id", {"task": task})["task"]
    assert doc["status"] == "created" and not (doc.get("execution") or {}).get("queue")


def test_queue_metadata(api):
    queue = api.call("queues.create", {"name": _name("meta")})["id"]
    items = [{"key": "gpu", "type": "str", "value": "a100"}, {"key": "zone", "type": "str", "value": "eu"}]
    assert api.call("queues.add_or_update_metadata", {"queue": queue, "metadata": items}) == {"updated": 1}
    assert set(api.call("queues.get_by_id", {"queue": queue})["queue"]["metadata"]) == {"gpu", "zone"}
    assert api.call("queues.delete_metadata", {"queue": queue, "keys": ["zone"]}) == {"updated": 1}
    assert set(api.call("queues.get_by_id", {"queue": queue})["queue"]["metadata"]) == {"gpu"}
    assert "metadata[0].key" in _bad(api, "queues.add_or_update_metadata", {"queue": queue, "metadata": [{"v": 1}]})
    assert "keys" in _bad(api, "queues.delete_metadata", {"queue": queue})


def test_get_next_task_for_a_named_task_takes_it_only_at_the_head(api):
    queue = api.call("queues.create", {"name": _name("named")})["id"]
    first, second = _task(api), _task(api)
    for task in (first, second):
        api.call("tasks.enqueue", {"task": task, "queue": queue})
    assert api.call("queues.get_next_task", {"queue": queue, "task": second}) == {}
    assert api.call("queues.get_num_entries", {"queue": queue})["num"] == 2
    assert api.call("queues.get_next_task", {"queue": queue, "task": first})["entry"]["task"] == first
    assert api.call("queues.peek_task", {"queue": queue})["task"] == second
    assert "task" in _bad(api, "queues.get_next_task", {"queue": queue, "task": 7})

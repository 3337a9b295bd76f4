"""What the web page's compare view and bulk actions ask of the server: the *_many endpoints
(succeeded/failed lists, as the reference server answers), the multi-task scalar histogram, and
get_all ordering by a metric or a hyperparameter."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.helpers import ApiFailure

MISSING = "0" * 32


def make_task(api, name, **fields):
    return api.call("tasks.create", {"name": name, "type": "training", **fields})["id"]


def status(api, task):
    return api.call("tasks.get_by_id", {"task": task})["task"]["status"]


def failed_ids(result):
    return {f["id"]: f["error"]["codes"] for f in result["failed"]}


def test_stop_many_stops_each_and_reports_the_unknown_id(api):
    queue = api.call("queues.create", {"name": f"q-{uuid.uuid4().hex[:6]}"})["id"]
    queued = make_task(api, "stop-a")
    api.call("tasks.enqueue", {"task": queued, "queue": queue})
    running = make_task(api, "stop-b")
    api.call("tasks.started", {"task": running})
    result = api.call("tasks.stop_many", {"ids": [queued, running, MISSING], "force": True})
    assert [s["id"] for s in result["succeeded"]] == [queued, running]
    assert all(s["updated"] == 1 for s in result["succeeded"])
    assert failed_ids(result) == {MISSING: [400, 101]}
    assert status(api, queued) == status(api, running) == "stopped"


def test_enqueue_many_enqueues_drafts_and_refuses_a_completed_task(api):
    queue = api.call("queues.create", {"name": f"q-{uuid.uuid4().hex[:6]}"})["id"]
    drafts = [make_task(api, f"enq-{i}") for i in range(2)]
    done = make_task(api, "enq-done")
    api.call("tasks.started", {"task": done})
    api.call("tasks.completed", {"task": done})
    result = api.call("tasks.enqueue_many", {"ids": [*drafts, done], "queue": queue})
    assert [(s["id"], s["queued"]) for s in result["succeeded"]] == [(d, True) for d in drafts]
    assert failed_ids(result) == {done: [400, 110]}
    assert "Cannot enqueue" in result["failed"][0]["error"]["msg"]
    assert [status(api, d) for d in drafts] == ["queued", "queued"]
    entries = api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"]
    assert [e["task"] for e in entries] == drafts


def test_delete_many_deletes_and_keeps_a_running_task_without_force(api):
    gone = make_task(api, "del-a")
    running = make_task(api, "del-b")
    api.call("tasks.started", {"task": running})
    result = api.call("tasks.delete_many", {"ids": [gone, running]})
    assert result["succeeded"] == [{"id": gone, "deleted": True, "updated_children": 0, "updated_models": 0,
                                    "deleted_models": 0}]
    assert list(failed_ids(result)) == [running]
    with pytest.raises(ApiFailure):
        api.call("tasks.get_by_id", {"task": gone})
    assert status(api, running) == "in_progress"


def test_archive_many_and_unarchive_many_answer_per_id(api):
    a, b = make_task(api, "arch-a"), make_task(api, "arch-b")
    result = api.call("tasks.archive_many", {"ids": [a, b, MISSING]})
    assert result["succeeded"] == [{"id": a, "archived": True}, {"id": b, "archived": True}]
    assert failed_ids(result) == {MISSING: [400, 101]}
    tags = api.call("tasks.get_all", {"id": [a, b], "only_fields": ["system_tags"]})["tasks"]
    assert all("archived" in t["system_tags"] for t in tags)
    again = api.call("tasks.archive_many", {"ids": [a]})
    assert again["succeeded"] == [{"id": a, "archived": False}]  # already archived: nothing changed
    assert api.call("tasks.unarchive_many", {"ids": [a]})["succeeded"] == [{"id": a, "unarchived": True}]


def test_archiving_a_queued_task_takes_it_out_of_its_queue(api):
    queue = api.call("queues.create", {"name": f"q-{uuid.uuid4().hex[:6]}"})["id"]
    a, b = make_task(api, "arch-q1"), make_task(api, "arch-q2")
    for task in (a, b):
        api.call("tasks.enqueue", {"task": task, "queue": queue})
    assert api.call("tasks.archive_many", {"ids": [a]})["succeeded"] == [{"id": a, "archived": True}]
    api.call("tasks.archive", {"tasks": [b]})
    assert status(api, a) == status(api, b) == "created"
    assert api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"] == []


@pytest.mark.parametrize("endpoint", ["tasks.stop_many", "tasks.enqueue_many", "tasks.delete_many",
                                      "tasks.archive_many"])
def test_many_without_ids_is_a_400_naming_the_field(api, endpoint):
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, {})
    assert err.value.code == 400 and "ids" in err.value.msg


def _report(api, task, values, start_ms):
    api.events([{"type": "training_stats_scalar", "task": task, "iter": i, "metric": "loss", "variant": "train",
                 "value": v, "timestamp": start_ms + 1000 * i} for i, v in enumerate(values)])


def test_multi_task_histogram_has_the_reference_shape_with_task_names(api):
    now = int(time.time() * 1000)
    a, b = make_task(api, "cmp-a"), make_task(api, "cmp-b")
    _report(api, a, [3.0, 2.0, 1.0], now)
    _report(api, b, [4.0, 1.0], now + 60_000)
    data = api.call("events.multi_task_scalar_metrics_iter_histogram", {"tasks": [a, b], "key": "iter"})
    series = data["metrics"]["loss"]["train"]
    assert series[a] == {"name": "cmp-a", "x": [0, 1, 2], "y": [3.0, 2.0, 1.0]}
    assert series[b] == {"name": "cmp-b", "x": [0, 1], "y": [4.0, 1.0]}
    by_time = api.call("events.multi_task_scalar_metrics_iter_histogram", {"tasks": [a, b], "key": "timestamp"})
    assert by_time["metrics"]["loss"]["train"][b]["x"] == [now + 60_000, now + 61_000]


def test_multi_task_histogram_refuses_bad_task_lists(api):
    with pytest.raises(ApiFailure) as err:
        api.call("events.multi_task_scalar_metrics_iter_histogram", {"tasks": []})
    assert err.value.code == 400 and "tasks" in err.value.msg
    with pytest.raises(ApiFailure) as err:
        api.call("events.multi_task_scalar_metrics_iter_histogram", {"tasks": [MISSING]})
    assert err.value.code == 400
    with pytest.raises(ApiFailure) as err:
        api.call("events.multi_task_scalar_metrics_iter_histogram", {"tasks": [f"{i:032x}" for i in range(101)]})
    assert err.value.code == 400 and "at most 100" in err.value.msg


def test_get_all_orders_by_a_metric_and_by_a_numeric_hyperparameter(api):
    project = api.call("projects.create", {"name": f"order-{uuid.uuid4().hex[:6]}"})["id"]
    now = int(time.time() * 1000)
    made = {}
    for name, lr, final in (("o1", "0.01", 0.5), ("o2", "1e-4", 0.2), ("o3", "0.1", 0.9)):
        made[name] = make_task(api, name, project=project, hyperparams={
            "Args": {"lr": {"section": "Args", "name": "lr", "value": lr, "type": "float"}}})
        _report(api, made[name], [1.0, final], now)
    doc = api.call("tasks.get_by_id", {"task": made["o1"]})["task"]
    (mkey, variants), = doc["last_metrics"].items()
    (vkey, entry), = variants.items()
    assert (entry["metric"], entry["variant"], entry["min_value"]) == ("loss", "train", 0.5)

    def names(order):
        tasks = api.call("tasks.get_all", {"project": [project], "order_by": [order], "only_fields": ["name"]})
        return [t["name"] for t in tasks["tasks"]]

    assert names(f"last_metrics.{mkey}.{vkey}.value") == ["o2", "o1", "o3"]
    assert names(f"-last_metrics.{mkey}.{vkey}.value") == ["o3", "o1", "o2"]
    # Stored as text; ordered as numbers (text order would put "1e-4" last).
    assert names("hyperparams.Args.lr.value") == ["o2", "o1", "o3"]
    assert names("-hyperparams.Args.lr.value") == ["o3", "o1", "o2"]

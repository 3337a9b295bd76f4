"""Regressions found by running the real clearml SDK / clearml-agent against the server
(tests/compat). Each test pins the server behaviour the real client depends on, so it runs
without the peers installed."""
from __future__ import annotations

import pytest

from tests.helpers import ApiFailure


def make_task(api, name="t", **fields):
    return api.call("tasks.create", {"name": name, "type": "training", **fields})["id"]


def test_only_fields_keeps_embedded_parent_when_leaf_is_missing(api):
    # Dataset.create() queries tasks.get_all(only_fields=["id", "runtime.version"]) and then reads
    # `task.runtime.get("version")`: like a MongoDB projection, an existing embedded object stays
    # (empty) even when the projected leaf is missing.
    task = make_task(api, "ds-regression", system_tags=["dataset"])
    got = api.call("tasks.get_all", {"id": [task], "only_fields": ["id", "runtime.version"]})["tasks"][0]
    assert got == {"id": task, "runtime": {}}
    api.call("tasks.edit", {"task": task, "runtime": {"version": "1.0.0", "other": "x"}})
    got = api.call("tasks.get_all", {"id": [task], "only_fields": ["runtime.version"]})["tasks"][0]
    assert got == {"id": task, "runtime": {"version": "1.0.0"}}
    # a missing parent, or a parent that is not an object, is still left out
    got = api.call("tasks.get_all", {"id": [task], "only_fields": ["container.image.x", "name.x"]})["tasks"][0]
    assert got == {"id": task, "container": {}}


def test_user_properties_editable_in_any_status(api):
    # Task.set_user_properties() sends tasks.edit_hyper_params(section "properties") without
    # force on a running task; the reference server allows property-only edits in any status.
    task = make_task(api)
    api.call("tasks.started", {"task": task})
    api.call("tasks.edit_hyper_params", {"task": task, "replace_hyperparams": "none", "hyperparams": [
        {"section": "Properties", "name": "owner", "value": "me"}]})
    params = api.call("tasks.get_hyper_params", {"tasks": [task]})["params"][0]["hyperparams"]
    assert [(p["section"], p["name"], p["value"]) for p in params] == [("properties", "owner", "me")]
    api.call("tasks.delete_hyper_params", {"task": task, "hyperparams": [{"section": "properties", "name": "owner"}]})
    assert api.call("tasks.get_hyper_params", {"tasks": [task]})["params"][0]["hyperparams"] == []
    # any other section still needs a task in 'created' (or force)
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.edit_hyper_params", {"task": task, "hyperparams": [
            {"section": "properties", "name": "a", "value": "1"}, {"section": "Args", "name": "lr", "value": "1"}]})
    assert (err.value.code, err.value.subcode) == (400, 110)


def test_execution_always_lists_artifacts(api):
    # Task.delete() in the SDK reads task.execution["artifacts"] of a task made by Task.create(),
    # which never had artifacts ("Task deletion failed: 'artifacts'").
    task = make_task(api, "no-artifacts")
    assert api.call("tasks.get_by_id", {"task": task})["task"]["execution"]["artifacts"] == []
    got = api.call("tasks.get_all", {"id": [task], "only_fields": ["execution.artifacts"]})["tasks"][0]
    assert got["execution"] == {"artifacts": []}
    api.call("tasks.delete", {"task": task, "force": True})


def test_nested_project_creates_its_parents(api):
    # The SDK creates "p/.datasets/ds" and "p/.pipelines/x" directly; the reference server creates
    # "p" and "p/.datasets" on the way (Dataset.list_datasets(dataset_project="p") looks "p" up).
    child = api.call("projects.create", {"name": "nest-a/ .datasets//ds ", "system_tags": ["hidden"]})["id"]

    def by_name(name):
        found = api.call("projects.get_all", {"name": f"^{name}$", "search_hidden": True})["projects"]
        assert len(found) == 1, (name, found)
        return found[0]

    top, mid, leaf = by_name("nest-a"), by_name("nest-a/\\.datasets"), by_name("nest-a/\\.datasets/ds")
    assert leaf["id"] == child and leaf["basename"] == "ds"
    assert (top["path"], mid["path"], leaf["path"]) == ([], [top["id"]], [top["id"], mid["id"]])
    assert (mid["parent"], leaf["parent"]) == (top["id"], mid["id"]) and not top.get("parent")
    assert "hidden" not in top["system_tags"]
    with pytest.raises(ApiFailure):  # the same (normalized) name twice
        api.call("projects.create", {"name": "nest-a/.datasets/ds"})
    # a second child reuses the existing parents
    other = api.call("projects.create", {"name": "nest-a/other"})["id"]
    children = api.call("projects.get_all", {"parent": [top["id"]], "search_hidden": True})["projects"]
    assert {p["id"] for p in children} == {mid["id"], child, other}
    direct = api.call("projects.get_all", {"parent": [top["id"]], "shallow_search": True,
                                           "search_hidden": True})["projects"]
    assert {p["id"] for p in direct} == {mid["id"], other}
    top_level = api.call("projects.get_all", {"shallow_search": True, "search_hidden": True})["projects"]
    assert top["id"] in {p["id"] for p in top_level} and child not in {p["id"] for p in top_level}


@pytest.mark.parametrize("how", ["publish", "completed"])
def test_publishing_a_task_publishes_its_last_output_model(api, how):
    # Task.publish() from the SDK: the reference server sets the last output model ready too.
    task = make_task(api, f"pub-{how}")
    older = api.call("models.create", {"name": "m-old", "uri": "file:///a", "task": task})["id"]
    newer = api.call("models.create", {"name": "m-new", "uri": "file:///b", "task": task})["id"]
    for name, model in (("old", older), ("new", newer)):
        api.call("tasks.add_or_update_model", {"task": task, "name": name, "model": model, "type": "output"})
    api.call("tasks.started", {"task": task})
    if how == "publish":
        api.call("tasks.stopped", {"task": task})
        api.call("tasks.publish", {"task": task})
    else:
        api.call("tasks.completed", {"task": task, "publish": True})
    assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "published"
    ready = {m: api.call("models.get_by_id", {"model": m})["model"]["ready"] for m in (older, newer)}
    assert ready == {older: False, newer: True}
    # publish_model=false leaves the models alone
    other = make_task(api, "pub-nomodel")
    model = api.call("models.create", {"name": "m", "uri": "file:///c", "task": other})["id"]
    api.call("tasks.add_or_update_model", {"task": other, "name": "m", "model": model, "type": "output"})
    api.call("tasks.publish", {"task": other, "force": True, "publish_model": False})
    assert api.call("models.get_by_id", {"model": model})["model"]["ready"] is False


def test_worker_current_queue_is_a_queue_entry(api):
    # HyperParameterOptimizer reports resources with workers.get_all; the SDK parses a worker's
    # `queue` as a QueueEntry object ({id, name, ...}) and logs "Failed parsing response" for a
    # bare id string.
    queue = api.call("queues.create", {"name": "worker-entry-q"})["id"]
    api.call("workers.register", {"worker": "entry-worker", "queues": [queue]})
    api.call("workers.status_report", {"worker": "entry-worker", "queue": queue, "timestamp": 0})
    worker = next(w for w in api.call("workers.get_all", {})["workers"] if w["id"] == "entry-worker")
    assert worker["queue"]["id"] == queue and worker["queue"]["name"] == "worker-entry-q"
    assert [q["id"] for q in worker["queues"]] == [queue]
    api.call("workers.unregister", {"worker": "entry-worker"})

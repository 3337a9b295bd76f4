"""models.*: the registry as the clearml SDK's OutputModel / InputModel / Model drive it."""
from __future__ import annotations

from datetime import datetime

import pytest

from tests.helpers import ApiFailure


def make_task(api, name="model-task", **fields):
    return api.call("tasks.create", {"name": name, "type": "training", **fields})["id"]


def get(api, model):
    return api.call("models.get_by_id", {"model": model})["model"]


def test_output_model_flow_as_the_sdk_does_it(api):
    project = api.call("projects.create", {"name": "models-sdk-flow"})["id"]
    task = make_task(api, project=project)
    created = api.call("models.create", {"uri": "file:///uploading_file", "name": "Anonymous model", "labels": {},
                                         "ready": False, "public": False, "project": project, "method": "get"})
    assert created["created"] is True and len(created["id"]) == 32
    model = created["id"]
    doc = get(api, model)
    assert doc["name"] == "Anonymous model" and doc["ready"] is False and doc["project"] == project
    datetime.fromisoformat(doc["created"])
    datetime.fromisoformat(doc["last_update"])
    for key in ("user", "company", "uri", "framework", "design", "labels", "tags", "system_tags", "comment",
                "metadata"):
        assert key in doc
    edit = api.call("models.edit", {"model": model, "uri": "file:///uploading_file", "name": "model-task",
                                    "comment": "Created by task", "framework": "PyTorch", "design": {"design": ""},
                                    "labels": {}, "project": project, "task": task})
    assert edit["updated"] == 1 and edit["fields"]["framework"] == "PyTorch"
    api.call("tasks.add_or_update_model", {"task": task, "name": "w", "model": model, "type": "output"})
    api.call("models.edit", {"model": model, "uri": "file:///tmp/w.bin"})
    doc = get(api, model)
    assert (doc["uri"], doc["task"], doc["framework"], doc["design"]) == ("file:///tmp/w.bin", task, "PyTorch",
                                                                          {"design": ""})


def test_edit_replaces_design_and_labels_and_merges_metadata(api):
    model = api.call("models.create", {"name": "m", "uri": "s3://b/m", "labels": {"cat": 1, "dog": 2},
                                       "design": "layers: 3",
                                       "metadata": [{"key": "a", "type": "int", "value": "1"}]})["id"]
    assert get(api, model)["design"] == {"design": "layers: 3"}
    api.call("models.edit", {"model": model, "labels": {"bird": 0}, "design": {"x": 1},
                             "metadata": [{"key": "b", "type": "str", "value": "x"}]})
    doc = get(api, model)
    assert doc["labels"] == {"bird": 0} and doc["design"] == {"x": 1}
    assert set(doc["metadata"]) == {"a", "b"}
    assert api.call("models.update", {"model": model, "comment": "c"})["fields"] == {"comment": "c"}
    assert api.call("models.edit", {"model": model, "comment": "c"}) == {"updated": 0, "fields": {}}


def test_metadata_endpoints(api):
    model = api.call("models.create", {"name": "meta", "uri": "file:///x"})["id"]
    api.call("models.add_or_update_metadata", {"model": model, "metadata": [
        {"key": "epochs", "type": "int", "value": "10"}, {"key": "opt", "type": "str", "value": "adam"}]})
    api.call("models.add_or_update_metadata", {"model": model, "metadata": [{"key": "epochs", "type": "int",
                                                                             "value": "12"}]})
    meta = get(api, model)["metadata"]
    assert meta == {"epochs": {"key": "epochs", "type": "int", "value": "12"},
                    "opt": {"key": "opt", "type": "str", "value": "adam"}}
    assert api.call("models.delete_metadata", {"model": model, "keys": ["opt"]}) == {"updated": 1}
    assert set(get(api, model)["metadata"]) == {"epochs"}
    with pytest.raises(ApiFailure):
        api.call("models.add_or_update_metadata", {"model": model, "metadata": [{"type": "int"}]})


def test_unknown_model_is_400_201(api):
    for endpoint, body in (("models.get_by_id", {}), ("models.edit", {"name": "x"}), ("models.delete", {}),
                           ("models.set_ready", {}), ("models.add_or_update_metadata",
                                                      {"metadata": [{"key": "k", "value": 1}]})):
        with pytest.raises(ApiFailure) as err:
            api.call(endpoint, {"model": "0" * 32, **body})
        assert (err.value.code, err.value.subcode) == (400, 201), endpoint


def test_create_validates(api):
    with pytest.raises(ApiFailure) as err:
        api.call("models.create", {"uri": "file:///x"})
    assert (err.value.code, err.value.subcode) == (400, 11)
    with pytest.raises(ApiFailure) as err:
        api.call("models.create", {"name": "x", "labels": ["a"]})
    assert (err.value.code, err.value.subcode) == (400, 12)
    with pytest.raises(ApiFailure) as err:
        api.call("models.create", {"name": "x", "project": "0" * 32})
    assert (err.value.code, err.value.subcode) == (400, 401)
    with pytest.raises(ApiFailure) as err:
        api.call("models.create", {"name": "x", "task": "0" * 32})
    assert (err.value.code, err.value.subcode) == (400, 101)


def test_get_all_filters(api):
    project = api.call("projects.create", {"name": "models-get-all"})["id"]
    task = make_task(api)
    a = api.call("models.create", {"name": "resnet-a", "project": project, "framework": "PyTorch",
                                   "tags": ["best"], "task": task})["id"]
    b = api.call("models.create", {"name": "resnet-b", "project": project, "framework": "TensorFlow"})["id"]
    c = api.call("models.create", {"name": "other", "project": project, "framework": "PyTorch",
                                   "system_tags": ["hidden"]})["id"]
    api.call("models.set_ready", {"model": b, "publish_task": False})

    def ids(**body):
        return {m["id"] for m in api.call("models.get_all", {"project": [project], **body})["models"]}

    assert ids() == {a, b}
    assert ids(search_hidden=True) == {a, b, c}
    assert ids(name="^resnet") == {a, b}
    assert ids(ready=True) == {b}
    assert ids(ready=False) == {a}
    assert ids(framework=["PyTorch"]) == {a}
    assert ids(tags=["best"]) == {a}
    assert ids(task=[task]) == {a}
    assert ids(id=[c]) == {c}
    page = api.call("models.get_all", {"project": [project], "order_by": ["-name"], "page": 0, "page_size": 1,
                                       "only_fields": ["name"]})["models"]
    assert page == [{"id": b, "name": "resnet-b"}]
    frameworks = api.call("models.get_frameworks", {"projects": [project]})["frameworks"]
    assert frameworks == ["PyTorch", "TensorFlow"]


def test_update_for_task_creates_then_updates_and_registers(api):
    project = api.call("projects.create", {"name": "models-update-for-task"})["id"]
    task = make_task(api, "trainer", project=project, execution={"framework": "Keras"})
    first = api.call("models.update_for_task", {"task": task, "uri": "file:///w1", "name": "best",
                                                "comment": "c1", "iteration": 5})
    assert first["created"] is True and first["updated"] == 0
    doc = get(api, first["id"])
    assert (doc["task"], doc["project"], doc["uri"], doc["framework"], doc["ready"]) == (
        task, project, "file:///w1", "Keras", False)
    outputs = api.call("tasks.get_by_id", {"task": task})["task"]["models"]["output"]
    assert [(m["name"], m["model"]) for m in outputs] == [("best", first["id"])]

    second = api.call("models.update_for_task", {"task": task, "uri": "file:///w2", "name": "best"})
    assert second == {"id": first["id"], "created": False, "updated": 1}
    assert get(api, first["id"])["uri"] == "file:///w2"

    # a published output model is never changed: a new one is made
    api.call("models.set_ready", {"model": first["id"], "publish_task": False})
    third = api.call("models.update_for_task", {"task": task, "uri": "file:///w3", "name": "best"})
    assert third["created"] is True and third["id"] != first["id"]
    assert get(api, first["id"])["uri"] == "file:///w2"
    outputs = api.call("tasks.get_by_id", {"task": task})["task"]["models"]["output"]
    assert [m["model"] for m in outputs] == [third["id"]]

    other = api.call("models.create", {"name": "external", "uri": "file:///ext"})["id"]
    override = api.call("models.update_for_task", {"task": task, "override_model_id": other})
    assert override == {"id": other, "created": False, "updated": 0}
    outputs = api.call("tasks.get_by_id", {"task": task})["task"]["models"]["output"]
    assert outputs[-1]["model"] == other
    assert api.call("models.get_by_task_id", {"task": task})["model"]["id"] == other

    with pytest.raises(ApiFailure) as err:
        api.call("models.update_for_task", {"task": make_task(api)})
    assert (err.value.code, err.value.subcode) == (400, 11)


def test_set_ready_publishes_the_task(api):
    task = make_task(api)
    model = api.call("models.create", {"name": "pub", "uri": "file:///p", "task": task})["id"]
    with pytest.raises(ApiFailure) as err:  # a created task cannot be published without force
        api.call("models.set_ready", {"model": model})
    assert (err.value.code, err.value.subcode) == (400, 110)
    assert get(api, model)["ready"] is False  # nothing half-done
    api.call("tasks.started", {"task": task})
    api.call("tasks.stopped", {"task": task})
    result = api.call("models.set_ready", {"model": model})
    assert result["updated"] == 1 and result["published_task"]["id"] == task
    assert result["published_task"]["data"]["fields"]["status"] == "published"
    assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "published"
    assert get(api, model)["ready"] is True
    assert api.call("models.publish", {"model": model}) == {"updated": 0, "published_task": None}

    forced_task = make_task(api)
    forced = api.call("models.create", {"name": "pub2", "uri": "file:///p", "task": forced_task})["id"]
    result = api.call("models.set_ready", {"model": forced, "force_publish_task": True})
    assert result["published_task"]["id"] == forced_task


def test_delete_and_archive(api):
    task = make_task(api)
    made = api.call("models.update_for_task", {"task": task, "uri": "file:///d", "name": "gone"})["id"]
    assert api.call("models.delete", {"model": made}) == {"deleted": True, "url": "file:///d"}
    assert api.call("tasks.get_by_id", {"task": task})["task"]["models"]["output"] == []
    with pytest.raises(ApiFailure) as err:
        get(api, made)
    assert (err.value.code, err.value.subcode) == (400, 201)

    # a published model without a published creating task goes without force, as on the reference server
    ready = api.call("models.create", {"name": "ready", "uri": "file:///r", "ready": True})["id"]
    assert api.call("models.delete", {"model": ready})["deleted"] is True

    keep = api.call("models.create", {"name": "arch", "uri": "file:///a"})["id"]
    result = api.call("models.archive_many", {"ids": [keep, "0" * 32]})
    assert result["succeeded"] == [{"id": keep, "archived": True}]
    assert result["failed"][0]["id"] == "0" * 32 and result["failed"][0]["error"]["codes"] == [400, 201]
    assert "archived" in get(api, keep)["system_tags"]
    assert api.call("models.unarchive_many", {"ids": [keep]})["succeeded"] == [{"id": keep, "unarchived": True}]
    assert "archived" not in get(api, keep)["system_tags"]

"""models.*: batch operations, the delete rules, move, tags, public flag and stats (issue 19)."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers import ApiFailure

MISSING = "0" * 32


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _model(api, **fields) -> str:
    return api.call("models.create", {"name": _name("m"), "uri": "file:///m.bin", **fields})["id"]


def _task(api, **fields) -> str:
    return api.call("tasks.create", {"name": _name("t"), "type": "training", **fields})["id"]


def _fails(api, endpoint, body) -> ApiFailure:
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    assert err.value.code == 400
    return err.value


def _published_task_with_model(api):
    task = _task(api)
    model = api.call("models.update_for_task", {"task": task, "uri": "file:///out.bin", "name": _name("out")})["id"]
    api.call("tasks.started", {"task": task})
    api.call("tasks.stopped", {"task": task, "force": True})
    api.call("tasks.publish", {"task": task, "force": True})
    assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "published"
    return task, model


def test_delete_a_model_of_a_published_task_needs_force(api):
    task, model = _published_task_with_model(api)
    assert _fails(api, "models.delete", {"model": model}).subcode == 206
    assert api.call("models.delete", {"model": model, "force": True}) == {"deleted": True, "url": "file:///out.bin"}
    doc = api.call("tasks.get_by_id", {"task": task})["task"]
    assert doc["models"]["output"][0]["model"] == f"__DELETED__{model}"


def test_delete_a_model_of_an_unpublished_task_forgets_it(api):
    task = _task(api)
    model = api.call("models.update_for_task", {"task": task, "uri": "file:///o", "name": "o"})["id"]
    assert api.call("models.delete", {"model": model})["deleted"] is True
    assert api.call("tasks.get_by_id", {"task": task})["task"]["models"]["output"] == []


def test_delete_a_model_used_as_input_needs_force(api):
    model = _model(api)
    user = _task(api)
    api.call("tasks.add_or_update_model", {"task": user, "name": "in", "model": model, "type": "input"})
    assert _fails(api, "models.delete", {"model": model}).subcode == 205
    assert api.call("models.delete", {"model": model, "force": True})["deleted"] is True
    inputs = api.call("tasks.get_by_id", {"task": user})["task"]["models"]["input"]
    assert inputs[0]["model"] == f"__DELETED__{model}"
    assert "force" in _fails(api, "models.delete", {"model": _model(api), "force": [1]}).msg


def test_delete_many_answers_per_item(api):
    _, guarded = _published_task_with_model(api)
    free = _model(api, uri="file:///free")
    result = api.call("models.delete_many", {"ids": [free, guarded, MISSING]})
    assert result["succeeded"] == [{"id": free, "deleted": True, "url": "file:///free"}]
    failed = {f["id"]: f["error"]["codes"] for f in result["failed"]}
    assert failed == {guarded: [400, 206], MISSING: [400, 201]}
    forced = api.call("models.delete_many", {"ids": [guarded], "force": True})
    assert forced["succeeded"][0]["deleted"] is True and forced["failed"] == []
    assert "ids" in _fails(api, "models.delete_many", {"ids": "x"}).msg
    assert _fails(api, "models.delete_many", {}).code == 400


def test_publish_many_publishes_models_and_their_tasks(api):
    task = _task(api)
    with_task = api.call("models.update_for_task", {"task": task, "uri": "file:///p", "name": "p"})["id"]
    api.call("tasks.started", {"task": task})
    api.call("tasks.stopped", {"task": task, "force": True})
    alone = _model(api)
    result = api.call("models.publish_many", {"ids": [with_task, alone, MISSING], "force_publish_task": True})
    by_id = {s["id"]: s for s in result["succeeded"]}
    assert by_id[alone] == {"id": alone, "updated": True, "published_task": None}
    assert by_id[with_task]["updated"] is True and by_id[with_task]["published_task"]["id"] == task
    assert [f["id"] for f in result["failed"]] == [MISSING]
    assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "published"
    again = api.call("models.publish_many", {"ids": [alone]})
    assert again["succeeded"] == [{"id": alone, "updated": False, "published_task": None}]
    assert "publish_task" in _fails(api, "models.publish_many", {"ids": [alone], "publish_task": [1]}).msg


def test_archive_and_unarchive_many(api):
    model = _model(api)
    result = api.call("models.archive_many", {"ids": [model, MISSING]})
    assert result["succeeded"] == [{"id": model, "archived": True}]
    assert result["failed"][0]["error"]["codes"] == [400, 201]
    assert api.call("models.unarchive_many", {"ids": [model]})["succeeded"] == [{"id": model, "unarchived": True}]
    assert "ids" in _fails(api, "models.archive_many", {"ids": [1]}).msg


def test_move_to_a_project_by_id_or_name(api):
    project = api.call("projects.create", {"name": _name("dest")})["id"]
    first, second = _model(api), _model(api)
    assert api.call("models.move", {"ids": [first, second], "project": project}) == {"project_id": project}
    assert api.call("models.get_by_id", {"model": first})["model"]["project"] == project
    name = _name("made-by-move")
    moved = api.call("models.move", {"ids": [first], "project_name": name})["project_id"]
    assert api.call("projects.get_by_id", {"project": moved})["project"]["name"] == name
    assert api.call("models.get_by_id", {"model": first})["model"]["project"] == moved
    assert _fails(api, "models.move", {"ids": [first]}).subcode == 11
    assert _fails(api, "models.move", {"ids": [MISSING], "project": project}).subcode == 201
    assert "project" in _fails(api, "models.move", {"ids": [first], "project": 5}).msg


def test_update_tags_adds_and_removes(api):
    first, second = _model(api, tags=["old", "keep"]), _model(api, tags=["keep"])
    result = api.call("models.update_tags", {"ids": [first, second], "add_tags": ["new"], "remove_tags": ["old"]})
    assert result == {"updated": 2}
    assert api.call("models.get_by_id", {"model": first})["model"]["tags"] == ["keep", "new"]
    assert api.call("models.update_tags", {"ids": [second], "add_tags": ["new"]}) == {"updated": 0}
    assert "add_tags" in _fails(api, "models.update_tags", {"ids": [first], "add_tags": "x"}).msg


def test_make_public_and_private_single_tenant(api):
    model = _model(api)
    assert api.call("models.make_public", {"ids": [model]}) == {"updated": 1}
    assert api.call("models.make_private", {"ids": [model]}) == {"updated": 1}
    assert _fails(api, "models.make_public", {"ids": [model, MISSING]}).subcode == 201
    assert "ids" in _fails(api, "models.make_private", {"ids": "x"}).msg


def test_get_all_ex_with_stats(api):
    model = _model(api, labels={"cat": 1, "dog": 2})
    [doc] = api.call("models.get_all_ex", {"id": [model], "include_stats": True})["models"]
    assert doc["stats"] == {"labels_count": 2}
    [plain] = api.call("models.get_all_ex", {"id": [model]})["models"]
    assert "stats" not in plain
    assert [m["id"] for m in api.call("models.get_by_id_ex", {"id": [model]})["models"]] == [model]
    assert "include_stats" in _fails(api, "models.get_all_ex", {"include_stats": [True]}).msg

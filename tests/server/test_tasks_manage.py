"""tasks.get_types / move / validate / update_tags / make_public / make_private and the batch
operations reset_many / publish_many / dequeue_many, against a running server."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers import ApiFailure

MISSING = "0" * 32


def make_task(api, name="t", **fields):
    return api.call("tasks.create", {"name": name, "type": "training", **fields})["id"]


def get(api, task):
    return api.call("tasks.get_by_id", {"task": task})["task"]


def fails(api, endpoint, body):
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    assert err.value.code == 400, err.value.msg
    return err.value


def new_project(api):
    return api.call("projects.create", {"name": f"m-{uuid.uuid4().hex[:8]}"})["id"]


def test_get_types_lists_the_types_used_in_the_projects(api):
    project = new_project(api)
    make_task(api, project=project)
    make_task(api, project=project, type="testing")
    make_task(api, project=project, type="testing")
    assert api.call("tasks.get_types", {"projects": [project]}) == {"types": ["testing", "training"]}
    assert "training" in api.call("tasks.get_types", {})["types"]
    assert "projects" in fails(api, "tasks.get_types", {"projects": [1]}).msg


def test_move_to_a_project_by_id_by_name_and_to_the_root(api):
    source, target = new_project(api), new_project(api)
    a, b = make_task(api, project=source), make_task(api, project=source)
    assert api.call("tasks.move", {"ids": [a, b], "project": target}) == {"project_id": target}
    assert get(api, a)["project"] == get(api, b)["project"] == target
    name = f"moved-{uuid.uuid4().hex[:6]}"
    created = api.call("tasks.move", {"ids": [a], "project_name": name})["project_id"]
    assert api.call("projects.get_by_id", {"project": created})["project"]["name"] == name
    assert api.call("tasks.move", {"ids": [a], "project": None})["project_id"] is None
    assert get(api, a).get("project") is None
    assert "project" in fails(api, "tasks.move", {"ids": [a]}).msg
    assert "ids" in fails(api, "tasks.move", {"project": target}).msg
    assert fails(api, "tasks.move", {"ids": [MISSING], "project": target}).subcode == 101


def test_validate_checks_like_create_and_stores_nothing(api):
    project = new_project(api)
    before = len(api.call("tasks.get_all", {"project": [project]})["tasks"])
    assert api.call("tasks.validate", {"name": "ok", "type": "training", "project": project}) == {}
    assert len(api.call("tasks.get_all", {"project": [project]})["tasks"]) == before
    assert "type" in fails(api, "tasks.validate", {"name": "x", "type": "nonsense"}).msg
    assert "name" in fails(api, "tasks.validate", {"type": "training"}).msg
    assert "hyperparams" in fails(api, "tasks.validate", {"name": "x", "type": "training", "hyperparams": 3}).msg
    assert fails(api, "tasks.validate", {"name": "x", "type": "training", "project": MISSING}).subcode == 401


def test_update_tags_adds_and_removes(api):
    a, b = make_task(api, tags=["keep", "old"]), make_task(api, tags=["new"])
    assert api.call("tasks.update_tags", {"ids": [a, b], "add_tags": ["new"], "remove_tags": ["old"]}) \
        == {"updated": 1}
    assert get(api, a)["tags"] == ["keep", "new"] and get(api, b)["tags"] == ["new"]
    assert "add_tags" in fails(api, "tasks.update_tags", {"ids": [a], "add_tags": 5}).msg


def test_make_public_and_private_change_nothing_on_one_tenant(api):
    task = make_task(api)
    assert api.call("tasks.make_public", {"ids": [task]}) == {"updated": 0}
    assert api.call("tasks.make_private", {"ids": [task]}) == {"updated": 0}
    assert fails(api, "tasks.make_public", {"ids": [MISSING]}).subcode == 101


def test_reset_many_publish_many_dequeue_many_answer_per_id(api):
    queue = api.call("queues.create", {"name": f"bq-{uuid.uuid4().hex[:6]}"})["id"]
    queued, done = make_task(api, "bq"), make_task(api, "bd")
    api.call("tasks.enqueue", {"task": queued, "queue": queue})
    api.call("tasks.started", {"task": done})
    api.call("tasks.stopped", {"task": done})

    deq = api.call("tasks.dequeue_many", {"ids": [queued, MISSING]})
    assert deq["succeeded"][0]["id"] == queued and deq["succeeded"][0]["dequeued"] is True
    assert deq["succeeded"][0]["fields"]["status"] == "created"
    assert [f["id"] for f in deq["failed"]] == [MISSING]

    pub = api.call("tasks.publish_many", {"ids": [done, queued]})
    assert [s["id"] for s in pub["succeeded"]] == [done] and pub["succeeded"][0]["updated"] == 1
    assert pub["failed"][0]["id"] == queued and pub["failed"][0]["error"]["codes"][0] == 400

    res = api.call("tasks.reset_many", {"ids": [done, MISSING], "force": True, "return_file_urls": True})
    [item] = res["succeeded"]
    assert item["id"] == done and item["fields"]["status"] == "created" and item["dequeued"] is False
    assert set(item["urls"]) == {"model_urls", "event_urls", "artifact_urls"}
    assert res["failed"][0]["error"]["codes"] == [400, 101]
    assert "ids" in fails(api, "tasks.reset_many", {}).msg

"""Task rules that must match the reference server: deleting published tasks, what reset and
delete remove and report (`urls`), artifacts on running tasks, the completed/stop answers and
models.update_for_task's iteration."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers import ApiFailure


def make_task(api, name="t", **fields):
    return api.call("tasks.create", {"name": name, "type": "training", **fields})["id"]


def get(api, task):
    return api.call("tasks.get_by_id", {"task": task})["task"]


def published_task(api):
    task = make_task(api, "pub")
    api.call("tasks.started", {"task": task})
    api.call("tasks.completed", {"task": task})
    api.call("tasks.publish", {"task": task})
    return task


def model_exists(api, model):
    try:
        api.call("models.get_by_id", {"model": model})
    except ApiFailure as err:
        assert err.subcode == 201
        return False
    return True


def test_deleting_a_published_task_needs_force(api):
    task = published_task(api)
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.delete", {"task": task})
    assert (err.value.code, err.value.subcode) == (400, 123)
    assert api.call("tasks.delete", {"task": task, "force": True})["deleted"] is True
    archived = published_task(api)
    api.call("tasks.archive", {"tasks": [archived]})
    assert api.call("tasks.delete", {"task": archived})["deleted"] is True


def _task_with_outputs(api):
    task = make_task(api, "outputs")
    api.call("tasks.started", {"task": task})
    draft = api.call("models.update_for_task", {"task": task, "uri": "file:///tmp/draft.pt", "name": "d"})["id"]
    api.call("tasks.add_or_update_artifacts", {"task": task, "artifacts": [
        {"key": "a", "type": "custom", "uri": "file:///tmp/a.bin", "mode": "output"}]})
    api.events([{"type": "training_debug_image", "task": task, "metric": "m", "variant": "v", "iter": 1,
                 "timestamp": 1, "url": "http://files/img.png"}])
    return task, draft


def test_reset_deletes_draft_output_models_and_reports_urls(api):
    task, draft = _task_with_outputs(api)
    result = api.call("tasks.reset", {"task": task, "force": True, "return_file_urls": True})
    assert result["deleted_models"] == 1 and result["fields"]["status"] == "created"
    assert result["urls"] == {"model_urls": ["file:///tmp/draft.pt"], "event_urls": ["http://files/img.png"],
                              "artifact_urls": ["file:///tmp/a.bin"]}
    assert not model_exists(api, draft)
    assert "urls" not in api.call("tasks.reset", {"task": task})


def test_reset_keeps_published_models_detached(api):
    task = make_task(api, "keeps")
    api.call("tasks.started", {"task": task})
    model = api.call("models.update_for_task", {"task": task, "uri": "file:///tmp/p.pt"})["id"]
    api.call("models.set_ready", {"model": model, "publish_task": False})
    result = api.call("tasks.reset", {"task": task, "force": True})
    assert result["deleted_models"] == 0
    assert model_exists(api, model)
    assert not api.call("models.get_by_id", {"model": model})["model"].get("task")


def test_delete_reports_the_urls_it_orphans(api):
    task, draft = _task_with_outputs(api)
    result = api.call("tasks.delete", {"task": task, "force": True, "return_file_urls": True})
    assert result["urls"]["model_urls"] == ["file:///tmp/draft.pt"]
    assert result["urls"]["event_urls"] == ["http://files/img.png"]
    assert result["urls"]["artifact_urls"] == ["file:///tmp/a.bin"]
    assert result["deleted_models"] == 1 and not model_exists(api, draft)
    many = api.call("tasks.delete_many", {"ids": [_task_with_outputs(api)[0]], "force": True,
                                          "return_file_urls": True})
    assert many["succeeded"][0]["urls"]["model_urls"] == ["file:///tmp/draft.pt"]
    assert "urls" in api.call("tasks.delete", {"task": make_task(api), "return_file_urls": True})
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.delete", {"task": make_task(api), "return_file_urls": "maybe"})
    assert "return_file_urls" in err.value.msg


def test_artifacts_may_be_added_to_a_running_task_but_not_a_completed_one(api):
    task = make_task(api)
    api.call("tasks.started", {"task": task})
    art = [{"key": "k", "type": "custom", "uri": "u"}]
    assert api.call("tasks.add_or_update_artifacts", {"task": task, "artifacts": art})["updated"] == 1
    api.call("tasks.completed", {"task": task})
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.add_or_update_artifacts", {"task": task, "artifacts": art})
    assert (err.value.code, err.value.subcode) == (400, 110)


def test_completed_with_publish_answers_published(api):
    task = make_task(api)
    api.call("tasks.started", {"task": task})
    result = api.call("tasks.completed", {"task": task, "publish": True})
    assert result["published"] == 1 and result["fields"]["status"] == "published"
    other = make_task(api)
    api.call("tasks.started", {"task": other})
    plain = api.call("tasks.completed", {"task": other})
    assert plain["published"] == 0 and plain["fields"]["status"] == "completed"


def test_stop_answers_the_status(api):
    queue = api.call("queues.create", {"name": f"sq-{uuid.uuid4().hex[:6]}"})["id"]
    queued = make_task(api)
    api.call("tasks.enqueue", {"task": queued, "queue": queue})
    assert api.call("tasks.stop", {"task": queued})["fields"]["status"] == "stopped"
    running = make_task(api)
    api.call("tasks.started", {"task": running})
    api.call("workers.status_report", {"worker": "w-stop", "task": running, "timestamp": 1})
    result = api.call("tasks.stop", {"task": running})
    assert result["fields"]["status"] == "in_progress" and result["fields"]["status_message"]


def test_update_for_task_iteration_sets_the_tasks_last_iteration(api):
    task = make_task(api)
    api.call("tasks.started", {"task": task})
    api.call("models.update_for_task", {"task": task, "uri": "file:///tmp/i.pt", "iteration": 42})
    assert get(api, task)["last_iteration"] == 42
    api.call("models.update_for_task", {"task": task, "uri": "file:///tmp/i.pt", "iteration": 7})
    assert get(api, task)["last_iteration"] == 42

"""Task endpoints: create/edit rules, get_all filters, clone, status side effects."""
from __future__ import annotations

import pytest

from tests.helpers import ApiFailure


def make_task(api, name="t", **fields):
    return api.call("tasks.create", {"name": name, "type": "training", **fields})["id"]


def get(api, task):
    return api.call("tasks.get_by_id", {"task": task})["task"]


def test_edit_merges_embedded_and_replaces_dicts(api):
    task = make_task(api, script={"repository": "r", "branch": "main", "entry_point": "a.py"},
                     hyperparams={"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1"}}})
    api.call("tasks.edit", {"task": task, "script": {"version_num": "abc"},
                            "hyperparams": {"General": {"b": {"section": "General", "name": "b", "value": "1"}}}})
    doc = get(api, task)
    assert doc["script"] == {"repository": "r", "branch": "main", "entry_point": "a.py", "version_num": "abc"}
    assert list(doc["hyperparams"]) == ["General"]


def test_edit_requires_created_unless_forced(api):
    task = make_task(api)
    api.call("tasks.started", {"task": task})
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.edit", {"task": task, "comment": "x"})
    assert (err.value.code, err.value.subcode) == (400, 110)
    api.call("tasks.edit", {"task": task, "comment": "x", "force": True})
    assert get(api, task)["comment"] == "x"


def test_output_dest_alias_and_docker_cmd_for_old_versions(api):
    task = make_task(api, output_dest="s3://bucket/x", container={"image": "py:3.11", "arguments": "--ipc=host"})
    assert get(api, task)["output"]["destination"] == "s3://bucket/x"
    old = api.call("v2.5/tasks.get_by_id", {"task": task})["task"]
    assert old["execution"]["docker_cmd"] == "py:3.11 --ipc=host"
    assert "docker_cmd" not in get(api, task).get("execution", {})


def test_get_all_filters(api):
    project = api.call("projects.create", {"name": "filters-proj"})["id"]
    a = make_task(api, "alpha-1", project=project, tags=["x", "y"])
    b = make_task(api, "alpha-2", project=project, tags=["y"], system_tags=["hidden"])
    c = make_task(api, "beta", project=project, type="testing")
    api.call("tasks.started", {"task": c})

    def ids(**body):
        return {t["id"] for t in api.call("tasks.get_all", {"project": [project], **body})["tasks"]}

    assert ids() == {a, c}
    assert ids(search_hidden=True) == {a, b, c}
    assert ids(name="^alpha", search_hidden=True) == {a, b}
    assert ids(status=["in_progress"]) == {c}
    assert ids(type=["testing"]) == {c}
    assert ids(tags=["x"]) == {a}
    assert ids(tags=["-x"], search_hidden=True) == {b, c}
    assert ids(tags=["__$all", "x", "y"]) == {a}
    assert ids(id=[b]) == {b}
    rows = api.call("tasks.get_all", {"project": [project], "only_fields": ["name", "script.branch"],
                                      "order_by": ["-name"], "search_hidden": True})["tasks"]
    assert [r["name"] for r in rows] == ["beta", "alpha-2", "alpha-1"]
    # a Mongo-style projection keeps the (empty) embedded `script` even without a branch
    assert rows[0] == {"id": c, "name": "beta", "script": {}}
    page = api.call("tasks.get_all", {"project": [project], "order_by": ["name"], "page": 1, "page_size": 1,
                                      "search_hidden": True})["tasks"]
    assert [r["name"] for r in page] == ["alpha-2"]


def test_clone_copies_and_overrides(api):
    src = make_task(api, "src", script={"repository": "r", "diff": "d"}, system_tags=["development"],
                    hyperparams={"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1"}}},
                    execution={"queue": "q", "artifacts": [{"key": "o", "mode": "output"},
                                                           {"key": "i", "mode": "input"}]})
    new = api.call("tasks.clone", {"task": src, "new_task_name": "copy"})["id"]
    doc = get(api, new)
    assert doc["name"] == "copy" and doc["status"] == "created" and doc["parent"] == src
    assert doc["script"]["diff"] == "d" and doc["hyperparams"]["Args"]["lr"]["value"] == "0.1"
    assert "development" not in doc["system_tags"] and "queue" not in doc["execution"]
    assert [a["key"] for a in doc["execution"]["artifacts"]] == ["i"]


def test_enqueue_dequeue_and_side_effects(api):
    queue = api.call("queues.create", {"name": "side-effects"})["id"]
    task = make_task(api, system_tags=["development"])
    out = api.call("tasks.enqueue", {"task": task, "queue": queue})
    assert out["queued"] == 1 and out["fields"]["status"] == "queued"
    doc = get(api, task)
    assert doc["execution"]["queue"] == queue and "development" not in doc["system_tags"]
    assert [e["task"] for e in api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"]] == [task]
    with pytest.raises(ApiFailure):
        api.call("tasks.enqueue", {"task": task, "queue": queue})
    out = api.call("tasks.dequeue", {"task": task})
    assert out["updated"] == 1 and get(api, task)["status"] == "created"
    assert api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"] == []
    assert api.call("tasks.dequeue", {"task": task})["updated"] == 0


def test_enqueue_by_name_creates_queue_and_default_queue(api):
    task = make_task(api)
    api.call("tasks.enqueue", {"task": task, "queue_name": "auto-created"})
    queues = api.call("queues.get_all", {"name": "^auto-created$"})["queues"]
    assert len(queues) == 1 and queues[0]["entries"][0]["task"] == task
    default = api.call("queues.get_default")
    other = make_task(api)
    api.call("tasks.enqueue", {"task": other})
    assert get(api, other)["execution"]["queue"] == default["id"]
    api.call("tasks.dequeue", {"task": other})


def test_agent_style_dequeue_with_new_status(api):
    task = make_task(api)
    api.call("tasks.enqueue", {"task": task, "queue_name": "agent-q"})
    queue = get(api, task)["execution"]["queue"]
    entry = api.call("queues.get_next_task", {"queue": queue})["entry"]
    assert entry["task"] == task
    api.call("tasks.started", {"task": task, "force": True, "status_message": "pulled by agent"})
    assert api.call("tasks.dequeue", {"task": task, "new_status": "in_progress"})["updated"] == 1
    assert get(api, task)["status"] == "in_progress"


def test_illegal_transition_changes_nothing(api):
    task = make_task(api)
    before = get(api, task)
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.completed", {"task": task})
    assert err.value.subcode == 110 and "created" in err.value.msg
    assert get(api, task)["status"] == "created" and get(api, task)["last_change"] == before["last_change"]
    api.call("tasks.completed", {"task": task, "force": True})
    assert get(api, task)["status"] == "completed"


def test_lifecycle_times_and_reset(api):
    task = make_task(api)
    api.call("tasks.started", {"task": task})
    started = get(api, task)["started"]
    api.call("tasks.started", {"task": task})
    assert get(api, task)["started"] == started
    api.call("tasks.completed", {"task": task, "status_reason": "done"})
    doc = get(api, task)
    assert doc["status"] == "completed" and doc["completed"] and doc["status_reason"] == "done"
    api.call("tasks.reset", {"task": task})
    doc = get(api, task)
    assert doc["status"] == "created" and "started" not in doc and doc["last_metrics"] == {}


def test_stop_semantics(api):
    queued = make_task(api)
    api.call("tasks.enqueue", {"task": queued, "queue_name": "stop-q"})
    api.call("tasks.stop", {"task": queued})
    assert get(api, queued)["status"] == "stopped"
    # Running with a live worker: only a "stopping" request.
    running = make_task(api)
    api.call("tasks.started", {"task": running})
    api.call("workers.register", {"worker": "w-stop:0"})
    api.call("workers.status_report", {"worker": "w-stop:0", "task": running, "timestamp": 0})
    api.call("tasks.stop", {"task": running})
    doc = get(api, running)
    assert doc["status"] == "in_progress" and doc["status_message"] == "stopping"
    api.call("tasks.stopped", {"task": running, "status_reason": "aborted"})
    assert get(api, running)["status"] == "stopped"
    # Running without a worker: stopped at once.
    orphan = make_task(api)
    api.call("tasks.started", {"task": orphan})
    api.call("tasks.stop", {"task": orphan})
    assert get(api, orphan)["status"] == "stopped"


def test_params_endpoints(api):
    task = make_task(api)
    api.call("tasks.edit_hyper_params", {"task": task, "hyperparams": [
        {"section": "Args", "name": "lr", "value": 0.5, "type": "float"}, {"section": "General", "name": "b", "value": "2"}]})
    params = api.call("tasks.get_hyper_params", {"tasks": [task]})["params"][0]["hyperparams"]
    assert {(p["section"], p["name"], p["value"]) for p in params} == {("Args", "lr", "0.5"), ("General", "b", "2")}
    api.call("tasks.delete_hyper_params", {"task": task, "hyperparams": [{"section": "General", "name": "b"}]})
    assert list(get(api, task)["hyperparams"]["General"]) == []
    api.call("tasks.edit_configuration", {"task": task, "configuration": [{"name": "cfg", "value": "a=1", "type": "hocon"}]})
    conf = api.call("tasks.get_configurations", {"tasks": [task]})["configurations"][0]["configuration"]
    assert conf == [{"name": "cfg", "value": "a=1", "type": "hocon"}]


def test_artifacts_models_requirements(api):
    task = make_task(api)
    api.call("tasks.add_or_update_artifacts", {"task": task, "artifacts": [{"key": "a", "type": "dict", "uri": "u1"}]})
    api.call("tasks.add_or_update_artifacts", {"task": task, "artifacts": [{"key": "a", "type": "dict", "uri": "u2"}]})
    arts = get(api, task)["execution"]["artifacts"]
    assert [(a["key"], a["uri"]) for a in arts] == [("a", "u2")]
    assert api.call("tasks.delete_artifacts", {"task": task, "artifacts": [{"key": "a"}]})["deleted"] == 1
    api.call("tasks.add_or_update_model", {"task": task, "name": "w", "model": "m" * 32, "type": "output"})
    assert get(api, task)["models"]["output"] == [{"name": "w", "model": "m" * 32}]
    api.call("tasks.set_requirements", {"task": task, "requirements": {"pip": ["six==1.16.0"], "conda": ""}})
    assert get(api, task)["script"]["requirements"]["pip"] == ["six==1.16.0"]


def test_delete_and_archive(api):
    task = make_task(api)
    assert api.call("tasks.archive", {"tasks": [task]})["archived"] == 1
    assert "archived" in get(api, task)["system_tags"]
    api.call("tasks.delete", {"task": task})
    with pytest.raises(ApiFailure):
        get(api, task)

"""projects.* distinct-value queries against a running server: task/model/project tags, task
parents, hyperparameters and their values, metric/variant pairs, model metadata, user names
(issue 19)."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers import ApiFailure


@pytest.fixture(scope="module")
def query_tree(api):
    top = f"q-{uuid.uuid4().hex[:8]}"
    kid = api.call("projects.create", {"name": f"{top}/kid", "tags": ["ptag"], "system_tags": ["psys"]})["id"]
    root = api.call("projects.get_all", {"name": f"^{top}$"})["projects"][0]["id"]
    parent = api.call("tasks.create", {"name": "the-parent", "type": "training", "project": root,
                                       "tags": ["t-root"]})["id"]
    params = {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1"},
                       "epochs": {"section": "Args", "name": "epochs", "value": "3"}}}
    child = api.call("tasks.create", {"name": "c", "type": "training", "project": kid, "parent": parent,
                                      "tags": ["t-kid"], "system_tags": ["s-kid"], "hyperparams": params})["id"]
    api.call("tasks.create", {"name": "c2", "type": "training", "project": kid, "hyperparams": {
        "Args": {"lr": {"section": "Args", "name": "lr", "value": "0.01"}}}})
    api.events([{"type": "training_stats_scalar", "task": child, "metric": "loss", "variant": "train",
                 "value": 1.0, "iter": 1}])
    api.call("models.create", {"name": "m", "uri": "file:///m", "project": kid, "tags": ["m-tag"],
                               "metadata": [{"key": "arch", "type": "str", "value": "resnet"}]})
    return {"top": top, "root": root, "kid": kid, "parent": parent, "child": child}


def _fails(api, endpoint: str, body: dict) -> ApiFailure:
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    return err.value


def test_task_model_and_project_tags(api, query_tree):
    got = api.call("projects.get_task_tags", {"projects": [query_tree["root"]], "include_system": True})
    assert got == {"tags": ["t-kid", "t-root"], "system_tags": ["s-kid"]}
    filtered = api.call("projects.get_task_tags", {"projects": [query_tree["root"]], "filter": {"tags": ["-t-kid"]}})
    assert filtered == {"tags": ["t-root"]}
    assert api.call("projects.get_model_tags", {"projects": [query_tree["root"]]}) == {"tags": ["m-tag"]}
    got = api.call("projects.get_project_tags", {"projects": [query_tree["root"]], "include_system": True})
    assert got == {"tags": ["ptag"], "system_tags": ["psys"]}
    err = _fails(api, "projects.get_task_tags", {"projects": query_tree["root"], "filter": {"tags": [3]}})
    assert err.code == 400 and "filter.tags" in err.msg
    err = _fails(api, "projects.get_project_tags", {"include_system": "perhaps"})
    assert err.code == 400 and "include_system" in err.msg


def test_task_parents(api, query_tree):
    got = api.call("projects.get_task_parents", {"projects": [query_tree["root"]]})
    assert got == {"parents": [{"id": query_tree["parent"], "name": "the-parent",
                                "project": {"id": query_tree["root"], "name": query_tree["top"]}}]}
    assert api.call("projects.get_task_parents", {"projects": [query_tree["root"]], "tasks_state": "archived"}) == {
        "parents": []}
    assert api.call("projects.get_task_parents", {"projects": [query_tree["root"]], "task_name": "^nope"}) == {
        "parents": []}
    err = _fails(api, "projects.get_task_parents", {"tasks_state": "gone"})
    assert err.code == 400 and "tasks_state" in err.msg


def test_hyper_parameters_and_values(api, query_tree):
    got = api.call("projects.get_hyper_parameters", {"project": query_tree["root"]})
    assert got == {"parameters": [{"section": "Args", "name": "epochs"}, {"section": "Args", "name": "lr"}],
                   "remaining": 0, "total": 2}
    paged = api.call("projects.get_hyper_parameters", {"project": query_tree["root"], "page": 0, "page_size": 1})
    assert (len(paged["parameters"]), paged["remaining"], paged["total"]) == (1, 1, 2)
    assert api.call("projects.get_hyper_parameters", {"project": query_tree["root"], "include_subprojects": False}) == {
        "parameters": [], "remaining": 0, "total": 0}
    values = api.call("projects.get_hyperparam_values", {"projects": [query_tree["root"]], "section": "Args", "name": "lr"})
    assert values == {"total": 2, "values": ["0.01", "0.1"]}
    err = _fails(api, "projects.get_hyper_parameters", {})
    assert err.code == 400 and "project" in err.msg
    err = _fails(api, "projects.get_hyperparam_values", {"section": "Args"})
    assert err.code == 400 and "name" in err.msg


def test_unique_metric_variants(api, query_tree):
    got = api.call("projects.get_unique_metric_variants", {"project": query_tree["root"]})["metrics"]
    assert [(m["metric"], m["variant"]) for m in got] == [("loss", "train")]
    assert len(got[0]["metric_hash"]) == 32 and len(got[0]["variant_hash"]) == 32
    err = _fails(api, "projects.get_unique_metric_variants", {"project": 7})
    assert err.code == 400 and "project" in err.msg


def test_model_metadata_keys_and_values(api, query_tree):
    got = api.call("projects.get_model_metadata_keys", {"project": query_tree["root"]})
    assert got == {"keys": ["arch"], "remaining": 0, "total": 1}
    got = api.call("projects.get_model_metadata_values", {"projects": [query_tree["root"]], "key": "arch"})
    assert got == {"total": 1, "values": ["resnet"]}
    err = _fails(api, "projects.get_model_metadata_keys", {"project": query_tree["root"], "page_size": "many"})
    assert err.code == 400 and "page_size" in err.msg
    err = _fails(api, "projects.get_model_metadata_values", {"projects": [query_tree["root"]]})
    assert err.code == 400 and "key" in err.msg


def test_user_names(api, query_tree):
    me = api.call("users.get_current_user")["user"]["id"]
    for entity in ("task", "model"):
        got = api.call("projects.get_user_names", {"projects": [query_tree["root"]], "entity": entity})["users"]
        assert [u["id"] for u in got] == [me] and got[0]["name"]
    err = _fails(api, "projects.get_user_names", {"entity": "queue"})
    assert err.code == 400 and "entity" in err.msg

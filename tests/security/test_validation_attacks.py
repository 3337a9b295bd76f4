"""Attacks 6, 7 and 10 of issue 17, each performed against a real server.

6. Wrong types stored, then breaking everyone's reads: `tags=[1, {"a": []}]` made every
   tag-filtered tasks.get_all a 500; `execution.artifacts="str"` broke tasks.clone and reset.
   Every document write is now checked against server/schema.py: 400 naming the field.
7. The 500s a random fuzz found, one by one (deep nesting, a 5,000-digit integer, lone
   surrogates, wrong types in get_all's query fields), the envelope kept even when the error
   message cannot be encoded, and /openapi.json. The fuzz itself is test_fuzz.py.
10. A git token inside script.repository was readable by every key: stripped on write, with a
   warning in the response.

Each test writes data first and checks it is intact after the attack.
"""
from __future__ import annotations

import json

import pytest
import requests

from server.rpc import api as api_module
from server.rpc import registry
from server.services import load_all
from tests.helpers import Api, ApiFailure

TOKEN = "ghp_" + "S3cr3tT0ken" * 3


@pytest.fixture(scope="module")
def user(server, api) -> Api:
    created = api.call("auth.create_credentials", {"label": "validation-attacks"})
    return Api(server.api_url, created["access_key"], created["secret_key"])


@pytest.fixture()
def good_task(api) -> dict:
    task_id = api.call("tasks.create", {
        "name": "good", "type": "training", "tags": ["good-tag"],
        "script": {"repository": "https://example.com/org/repo.git", "entry_point": "train.py"},
        "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1"}}}})["id"]
    api.call("tasks.add_or_update_artifacts", {"task": task_id, "artifacts": [
        {"key": "data", "type": "custom", "uri": "https://files/data.bin", "mode": "input"}]})
    return api.call("tasks.get_by_id", {"task": task_id})["task"]


def refused(api: Api, endpoint: str, body, *, subcode: int = 12, **kw) -> ApiFailure:
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body, **kw)
    assert (err.value.code, err.value.subcode) == (400, subcode), err.value.msg
    return err.value


def unchanged(api: Api, task: dict) -> None:
    now = api.call("tasks.get_by_id", {"task": task["id"]})["task"]
    assert now == task


# -- attack 6: wrong types are refused on write, reads keep working ------------------------------


def test_non_string_tags_are_refused_and_tag_filters_keep_working(api, user, good_task):
    err = refused(user, "tasks.create", {"name": "x", "type": "training", "tags": [1, {"a": []}]})
    assert "tags[0]" in err.msg
    refused(user, "tasks.edit", {"task": good_task["id"], "system_tags": [{"a": []}]})
    for who in (api, user):
        found = who.call("tasks.get_all", {"tags": ["good-tag"], "only_fields": ["id"]})["tasks"]
        assert good_task["id"] in {t["id"] for t in found}
    unchanged(api, good_task)


@pytest.mark.parametrize("endpoint, extra, field", [
    ("tasks.create", {"execution": {"artifacts": "str"}}, "execution.artifacts"),
    ("tasks.create", {"execution": {"artifacts": [{"key": 5}]}}, "execution.artifacts[0].key"),
    ("tasks.create", {"hyperparams": {"Args": {"lr": 5}}}, "hyperparams.Args.lr"),
    ("tasks.create", {"configuration": {"c": {"value": ["x"]}}}, "configuration.c.value"),
    ("tasks.create", {"container": {"image": 5}}, "container.image"),
    ("tasks.create", {"script": {"repository": ["x"]}}, "script.repository"),
    ("tasks.create", {"models": {"input": [{"model": {}}]}}, "models.input[0].model"),
    ("tasks.create", {"runtime": "x"}, "runtime"),
    ("tasks.create", {"output": {"destination": 1}}, "output.destination"),
])
def test_wrong_task_fields_are_refused_naming_the_field(api, user, good_task, endpoint, extra, field):
    err = refused(user, endpoint, {"name": "bad", "type": "training", **extra})
    assert f"'{field}'" in err.msg
    refused(user, "tasks.edit", {"task": good_task["id"], **extra})
    unchanged(api, good_task)


def test_wrong_artifacts_do_not_break_clone_and_reset(api, user, good_task):
    refused(user, "tasks.add_or_update_artifacts", {"task": good_task["id"], "artifacts": "str"})
    refused(user, "tasks.add_or_update_artifacts", {"task": good_task["id"], "artifacts": [{"key": "k", "mode": 3}]})
    refused(user, "tasks.clone", {"task": good_task["id"], "execution_overrides": {"artifacts": "str"}})
    unchanged(api, good_task)
    clone = user.call("tasks.clone", {"task": good_task["id"]})["id"]
    assert user.call("tasks.get_by_id", {"task": clone})["task"]["execution"]["artifacts"][0]["key"] == "data"
    user.call("tasks.reset", {"task": clone, "force": True})


@pytest.mark.parametrize("endpoint, body, field", [
    ("tasks.edit_hyper_params", {"hyperparams": [{"section": "A", "name": {"x": 1}, "value": "1"}]},
     "hyperparams[0].name"),
    ("tasks.delete_hyper_params", {"hyperparams": [{"section": ["A"]}]}, "hyperparams[0].section"),
    ("tasks.edit_configuration", {"configuration": [{"name": ["c"], "value": "x"}]}, "configuration[0].name"),
    ("tasks.delete_artifacts", {"artifacts": [7]}, "artifacts[0]"),
    ("tasks.delete_models", {"models": ["m"]}, "models[0]"),
    ("tasks.set_requirements", {"requirements": {"pip": {"six": 1}}}, "requirements.pip"),
])
def test_wrong_task_part_items_are_refused(api, user, good_task, endpoint, body, field):
    err = refused(user, endpoint, {"task": good_task["id"], "force": True, **body})
    assert f"'{field}'" in err.msg
    unchanged(api, good_task)


def test_wrong_model_project_queue_worker_fields_are_refused(api, user):
    project = api.call("projects.create", {"name": "validation-project", "tags": ["p"]})["id"]
    model = api.call("models.create", {"name": "m", "labels": {"cat": 1}})["id"]
    queue = api.call("queues.create", {"name": "validation-queue", "tags": ["q"]})["id"]
    cases = [
        ("models.create", {"name": "m2", "labels": {"cat": "one"}}, "labels.cat"),
        ("models.edit", {"model": model, "tags": [None]}, "tags[0]"),
        ("models.add_or_update_metadata", {"model": model, "metadata": [{"key": "k", "value": {"x": 1}}]},
         "metadata[0].value"),
        ("projects.create", {"name": "p2", "system_tags": [1]}, "system_tags"),
        ("projects.update", {"project": project, "tags": [{"a": 1}]}, "tags"),
        ("queues.update", {"queue": queue, "tags": [{"a": 1}]}, "tags[0]"),
        ("queues.update", {"queue": queue, "display_name": ["x"]}, "display_name"),
        ("workers.register", {"worker": "w", "queues": [1]}, "queues"),
        ("workers.status_report", {"worker": "w", "machine_stats": {"cpu_usage": "high"}}, "machine_stats.cpu_usage"),
    ]
    for endpoint, body, field in cases:
        err = refused(user, endpoint, body)
        assert field in err.msg, (endpoint, err.msg)
    assert api.call("models.get_by_id", {"model": model})["model"]["labels"] == {"cat": 1}
    assert api.call("queues.get_by_id", {"queue": queue})["queue"]["tags"] == ["q"]
    assert api.call("projects.get_by_id", {"project": project})["project"]["tags"] == ["p"]
    for endpoint in ("tasks.get_all", "models.get_all", "projects.get_all", "queues.get_all", "workers.get_all"):
        user.call(endpoint, {"tags": ["p", "q"]} if endpoint != "workers.get_all" else {})


def test_wrong_event_fields_are_refused_per_event(api, good_task):
    task = good_task["id"]
    result = api.events([
        {"type": "training_stats_scalar", "task": task, "metric": 5, "variant": "v", "value": 1.0, "iter": 1},
        {"type": "training_stats_vector", "task": task, "metric": "m", "variant": "v", "values": ["a"], "iter": 1},
        {"type": "plot", "task": task, "metric": "m", "variant": "v", "plot_str": {"data": []}, "iter": 1},
        {"type": "log", "task": task, "level": "info", "msg": "ok", "worker": {"nested": [1]}, "timestamp": 1},
        {"type": "log", "task": task, "level": "info", "msg": "kept", "timestamp": 2},
    ])
    assert result["added"] == 1 and result["errors"] == 4
    assert {"event.metric", "event.values[0]", "event.plot_str", "event.worker"} <= {
        key.split("'")[1] for key in result["errors_info"] if "'" in key}
    log = api.call("events.get_task_log", {"task": task})["events"]
    assert [e["msg"] for e in log] == ["kept"]


def test_unknown_fields_still_pass_through(api):
    task = api.call("tasks.create", {"name": "extra", "type": "training", "script": {"x_new_field": [1, {"a": 2}]},
                                     "execution": {"x_other": {"b": None}}})["id"]
    doc = api.call("tasks.get_by_id", {"task": task})["task"]
    assert doc["script"]["x_new_field"] == [1, {"a": 2}] and doc["execution"]["x_other"] == {"b": None}


# -- attack 7: the fuzz's 500s, one by one ---------------------------------------------------


def envelope_400(resp: requests.Response, needle: str = "") -> dict:
    meta = resp.json()["meta"]
    assert resp.status_code == 400 == meta["result_code"], resp.text[:300]
    assert needle in meta["result_msg"]
    return meta


@pytest.mark.parametrize("body, ctype, needle", [
    (b"[" * 100_000, "application/json", "Malformed JSON"),
    (b'{"a":' * 2000 + b"1" + b"}" * 2000, "application/json", "Malformed JSON"),
    (json.dumps({"runtime": json.loads("[" * 150 + "]" * 150)}).encode(), "application/json", "nested deeper"),
    (b'{"page": 1, "page_size": 1' + b"0" * 5000 + b"}", "application/json", "number out of range"),
    (b'{"page": 1, "page_size": NaN}', "application/json", "page_size"),
    (b'{"__lines__": 5}', "application/json", "__lines__"),
    (b"\xff\xfe", "application/json", "Malformed JSON"),
])
def test_hostile_bodies_are_400_in_the_envelope(api, good_task, body, ctype, needle):
    envelope_400(api.raw("tasks.get_all", body=body, headers={"Content-Type": ctype}), needle)
    unchanged(api, good_task)


def test_hostile_json_lines_are_400_in_the_envelope(api, good_task):
    task = good_task["id"]
    cases = [b"[" * 100_000, b'{"type": "log", "task": "%s", "timestamp": 1%s}' % (task.encode(), b"0" * 5000)]
    for body in cases:
        envelope_400(api.raw("events.add_batch", body=body, headers={"Content-Type": "application/json-lines"}))
    deep = {"type": "log", "task": task, "msg": "x", "extra": json.loads("[" * 500 + "]" * 500)}
    huge_ts = {"type": "log", "task": task, "msg": "x", "level": "info", "timestamp": 2 ** 63 + 5}
    with pytest.raises(ApiFailure) as err:
        api.events([deep, huge_ts])
    assert (err.value.code, err.value.subcode) == (400, 131)
    assert "nested deeper" in err.value.msg and "64-bit" in err.value.msg
    assert api.call("events.get_task_log", {"task": task})["total"] == 0


def test_huge_integers_in_query_strings_and_fields_are_400(api, good_task):
    digits = "1" + "0" * 5000
    resp = api.raw(f"events.get_task_log?task={good_task['id']}&from_timestamp={digits}", method="GET")
    envelope_400(resp)
    envelope_400(api.raw("events.get_task_log", {"task": good_task["id"], "from_timestamp": 2 ** 63}), "64-bit")
    envelope_400(api.raw("events.clear_task_log", {"task": good_task["id"], "threshold_sec": 2 ** 63 - 1}))
    unchanged(api, good_task)


def test_lone_surrogates_are_stored_as_replacement_characters(api, user):
    body = b'{"name": "bad \\ud800 name", "type": "training", "tags": ["\\udfff"]}'
    resp = user.raw("tasks.create", body=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    task = resp.json()["data"]["id"]
    doc = user.call("tasks.get_by_id", {"task": task})["task"]
    assert doc["name"] == "bad \ufffd name" and doc["tags"] == ["\ufffd"]
    resp = user.raw("projects.create", body=b'{"name": "\\udc80 proj"}', headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    line = b'{"type": "training_stats_scalar", "task": "%s", "metric": "m\\ud800", "variant": "v", "value": 1, "iter": 1}'
    resp = user.raw("events.add_batch", body=line % task.encode(), headers={"Content-Type": "application/json-lines"})
    assert resp.status_code == 200, resp.text
    metrics = user.call("events.get_scalar_metrics_and_variants", {"task": task})["metrics"]
    assert "m\ufffd" in metrics
    resp = user.raw("tasks.get_by_id", body=b'{"task": "\\ud800"}', headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["meta"]["result_subcode"] == 101
    resp.content.decode("utf-8")  # valid UTF-8: no surrogate escaped into the answer


@pytest.mark.parametrize("field, value", [
    ("_any_", 5), ("_any_", {"pattern": 5, "fields": ["name"]}), ("_any_", {"pattern": "x", "fields": 5}),
    ("_all_", [1]), ("_all_", {"pattern": "x", "fields": [{}]}),
    ("tags", 5), ("tags", [1]), ("tags", [{"a": []}]), ("system_tags", {"a": 1}), ("system_tags", [None]),
    ("only_fields", 5), ("only_fields", [1, {}]), ("order_by", [[]]), ("page", "x"), ("name", ["x"]),
])
@pytest.mark.parametrize("endpoint", ["tasks.get_all", "models.get_all", "projects.get_all", "queues.get_all"])
def test_wrong_types_in_get_all_query_fields_are_400(user, endpoint, field, value):
    if endpoint == "tasks.get_all" and value == [None]:  # tasks: null asks for "no tags", as on the reference
        assert user.raw(endpoint, {field: value}).json()["meta"]["result_code"] == 200
        return
    meta = envelope_400(user.raw(endpoint, {field: value}))
    assert field in meta["result_msg"]


def test_an_unencodable_error_message_still_answers_in_the_envelope():
    """The dispatcher's last resort: a message orjson refuses (a lone surrogate) is escaped."""
    body = json.loads(api_module._error_envelope("tasks.get_by_id", "2.31", 500, 0, "bad \ud800 text", {"x": "\udfff"}))
    assert body["meta"]["result_code"] == 500 and "\\ud800" in body["meta"]["result_msg"]


def test_openapi_lists_every_endpoint_with_its_request_schema(server):
    resp = requests.get(f"{server.api_url}/openapi.json", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    load_all()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {f"/{name}" for name in registry.names() if name != "openapi.json"}
    create = doc["paths"]["/tasks.create"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert set(create["required"]) == {"name", "type"}
    assert doc["paths"]["/debug.ping"]["post"]["security"] == []


# -- attack 10: git tokens in repository URLs ------------------------------------------------


@pytest.mark.parametrize("endpoint", ["tasks.create", "tasks.edit", "tasks.update"])
def test_repository_credentials_are_stripped_and_the_caller_warned(api, user, endpoint):
    url = f"https://someone:{TOKEN}@git.example.com/org/private.git"
    body = {"name": "repo", "type": "training", "script": {"repository": url, "branch": "main"}}
    if endpoint != "tasks.create":
        body["task"] = user.call("tasks.create", {"name": "repo", "type": "training"})["id"]
    data = user.call(endpoint, body)
    task = data.get("id") or body["task"]
    assert data["warnings"] and "credentials were removed" in data["warnings"][0]
    for reader in (api, user):
        doc = reader.call("tasks.get_by_id", {"task": task})["task"]
        assert doc["script"]["repository"] == "https://git.example.com/org/private.git"
        assert doc["script"]["branch"] == "main"
        listed = reader.call("tasks.get_all", {"id": [task]})
        assert TOKEN not in json.dumps(listed)


def test_ssh_repository_urls_keep_their_user_and_get_no_warning(user):
    for url in ("git@github.com:org/repo.git", "ssh://git@github.com/org/repo.git"):
        data = user.call("tasks.create", {"name": "ssh", "type": "training", "script": {"repository": url}})
        assert "warnings" not in data
        assert user.call("tasks.get_by_id", {"task": data["id"]})["task"]["script"]["repository"] == url

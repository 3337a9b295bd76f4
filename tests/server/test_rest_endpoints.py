"""Issue 19, the rest of the schema: pipelines.start_pipeline / delete_runs, the caller's own
credentials and user record, server.endpoints, storage.get_settings, tasks.update_batch, the CSV
export of a table, and projects.get_all_ex scroll paging with `user` as {id, name}; against a
running server."""
from __future__ import annotations

import csv
import io
import json
import uuid

import pytest
import requests

from tests.helpers import ACCESS_KEY, Api, ApiFailure, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("rest"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv):
    return srv.api()


@pytest.fixture(scope="module")
def bob(srv, api):
    key = api.call("auth.create_credentials", {"label": "Bob Jones", "role": "user"})
    return Api(srv.api_url, key["access_key"], key["secret_key"])


def refused(api, endpoint: str, body: dict | None = None) -> ApiFailure:
    with pytest.raises(ApiFailure) as failure:
        api.call(endpoint, body or {})
    return failure.value


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# -- pipelines ---------------------------------------------------------------------------------

def _pipeline(api) -> tuple[str, str]:
    project = api.call("projects.create", {"name": unique("pipe") + "/.pipelines/flow",
                                           "system_tags": ["hidden", "pipeline"]})["id"]
    run = api.call("tasks.create", {"name": "flow", "type": "controller", "project": project,
                                    "system_tags": ["pipeline"],
                                    "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": "1"}}}})
    return project, run["id"]


def test_start_pipeline_clones_the_controller_with_its_args_and_enqueues_it(api):
    project, run = _pipeline(api)
    queue = api.call("queues.create", {"name": unique("pq")})["id"]
    started = api.call("pipelines.start_pipeline", {"task": run, "queue": queue, "verify_watched_queue": True,
                                                    "args": [{"name": "lr", "value": "0.5"}, {"name": "steps",
                                                                                              "value": "3"}]})
    assert started["enqueued"] is True and started["queue_watched"] is False
    clone = api.call("tasks.get_by_id", {"task": started["pipeline"]})["task"]
    assert clone["status"] == "queued" and clone["execution"]["queue"] == queue and clone["parent"] == run
    # named as the reference server names runs: the project's basename and the count of runs so named
    assert clone["name"] == "flow #2" and clone["project"] == project
    assert {k: v["value"] for k, v in clone["hyperparams"]["Args"].items()} == {"lr": "0.5", "steps": "3"}
    assert api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"][0]["task"] == started["pipeline"]
    api.call("workers.register", {"worker": unique("w"), "queues": [queue]})
    watched = api.call("pipelines.start_pipeline", {"task": run, "queue": queue, "verify_watched_queue": True})
    assert watched["queue_watched"] is True
    assert api.call("tasks.get_by_id", {"task": watched["pipeline"]})["task"]["name"] == "flow #3"
    assert "'task'" in refused(api, "pipelines.start_pipeline", {"queue": queue}).msg
    assert "'args'" in refused(api, "pipelines.start_pipeline", {"task": run, "args": "lr=1"}).msg


def test_delete_runs_deletes_runs_with_their_steps_and_never_the_last(api):
    project, first = _pipeline(api)
    second = api.call("tasks.create", {"name": "flow #1", "type": "controller", "project": project})["id"]
    step = api.call("tasks.create", {"name": "step", "type": "training", "project": project, "parent": second})["id"]
    other = api.call("tasks.create", {"name": "not a run", "type": "training", "project": project})["id"]
    done = api.call("pipelines.delete_runs", {"project": project, "ids": [second, other]})
    assert done["failed"] == [] and [s["id"] for s in done["succeeded"]] == [second]
    assert done["succeeded"][0]["deleted"] is True
    for gone in (second, step):
        assert refused(api, "tasks.get_by_id", {"task": gone}).code == 400
    assert api.call("tasks.get_by_id", {"task": other})["task"]["id"] == other
    last = refused(api, "pipelines.delete_runs", {"project": project, "ids": [first]})
    assert last.code == 400 and "all the runs" in last.msg
    assert "'project'" in refused(api, "pipelines.delete_runs", {"ids": [first]}).msg


# -- the caller's account --------------------------------------------------------------------------

def test_get_credentials_lists_the_callers_keys_never_secrets(api, bob):
    bob_key = bob.call("users.get_current_user")["user"]["id"]
    own = bob.call("auth.get_credentials")["credentials"]
    assert own == [{"access_key": bob_key, "label": "Bob Jones"}]
    admin_keys = {c["access_key"] for c in api.call("auth.get_credentials")["credentials"]}
    assert ACCESS_KEY in admin_keys and bob_key in admin_keys  # the admin minted bob's key
    assert "secret" not in json.dumps(api.call("auth.get_credentials"))


def test_edit_credentials_relabels_own_or_minted_keys_only(api, bob):
    bob_key = bob.call("users.get_current_user")["user"]["id"]
    assert bob.call("auth.edit_credentials", {"access_key": bob_key, "label": "Bob J."}) == {"updated": 1}
    assert bob.call("auth.get_credentials")["credentials"][0]["label"] == "Bob J."
    assert refused(bob, "auth.edit_credentials", {"access_key": ACCESS_KEY, "label": "mine"}).code == 403
    assert "'access_key'" in refused(bob, "auth.edit_credentials", {"label": "x"}).msg
    assert refused(api, "auth.edit_credentials", {"access_key": "NOPE", "label": "x"}).code == 400
    api.call("auth.edit_credentials", {"access_key": bob_key, "label": "Bob Jones"})


def test_users_update_renames_only_oneself_unless_admin(api, bob):
    bob_key = bob.call("users.get_current_user")["user"]["id"]
    assert bob.call("users.update", {"user": bob_key, "given_name": "Robert", "family_name": "Jones"}) == {
        "updated": 1, "fields": {"name": "Robert Jones"}}
    assert api.call("users.get_by_id", {"user": bob_key})["user"]["name"] == "Robert Jones"
    assert refused(bob, "users.update", {"user": ACCESS_KEY, "name": "admin?"}).code == 403
    assert api.call("users.update", {"user": bob_key, "name": "Bob Jones"})["updated"] == 1
    assert "'user'" in refused(bob, "users.update", {"name": "x"}).msg
    assert "'name'" in refused(bob, "users.update", {"user": bob_key, "name": 3}).msg


def test_fixed_users_mode_answers_without_credentials(srv):
    answer = requests.post(f"{srv.api_url}/auth.fixed_users_mode", json={}, timeout=10).json()
    assert answer["meta"]["result_code"] == 200 and answer["data"]["enabled"] is True


def test_server_endpoints_for_admins_and_storage_without_settings(api, bob):
    listed = api.call("server.endpoints")["endpoints"]
    assert "reports.create" in listed and listed["reports.create"][0]["min_version"] == "2.23"
    assert refused(bob, "server.endpoints").code == 403
    settings = bob.call("storage.get_settings")["settings"]
    assert settings == {"aws": {"buckets": []}, "google": {"buckets": []}, "azure": {"containers": []}}


# -- tasks.update_batch --------------------------------------------------------------------------

def _lines(api, lines: list) -> dict:
    return api.call("tasks.update_batch", body="\n".join(json.dumps(x) for x in lines).encode(),
                    headers={"Content-Type": "application/json-lines"})


def test_update_batch_applies_one_update_per_line(api):
    a, b = (api.call("tasks.create", {"name": n, "type": "training"})["id"] for n in ("a", "b"))
    assert _lines(api, [{"task": a, "comment": "one"}, {"task": b, "name": "bee"}]) == {"updated": 2}
    assert api.call("tasks.get_by_id", {"task": a})["task"]["comment"] == "one"
    assert api.call("tasks.get_by_id", {"task": b})["task"]["name"] == "bee"
    with pytest.raises(ApiFailure) as bad:
        _lines(api, [{"task": a, "comment": "two"}, {"comment": "no task"}])
    assert bad.value.code == 400 and "line 2" in bad.value.msg and "'task'" in bad.value.msg
    assert api.call("tasks.get_by_id", {"task": a})["task"]["comment"] == "one"  # nothing applied
    with pytest.raises(ApiFailure) as unknown:
        _lines(api, [{"task": a, "comment": "three"}, {"task": "f" * 32, "comment": "x"}])
    assert unknown.value.code == 400 and api.call("tasks.get_by_id", {"task": a})["task"]["comment"] == "one"
    with pytest.raises(ApiFailure) as typed:
        _lines(api, [{"task": a, "tags": "x"}])
    assert "'tags'" in typed.value.msg
    assert refused(api, "tasks.update_batch").code == 400


# -- the CSV export --------------------------------------------------------------------------------

def test_prepare_and_download_a_task_table_as_csv(api, bob):
    project = api.call("projects.create", {"name": unique("export"), "description": ""})["id"]
    for name in ("=cmd()", "plain"):
        api.call("tasks.create", {"name": name, "type": "training", "project": project})
    prepared = api.call("organization.prepare_download_for_get_all", {
        "entity_type": "task", "project": [project], "only_fields": ["name", "status", "project.name"],
        "order_by": ["name"], "field_mappings": [
            {"field": "name", "name": "Name"},
            {"field": "status", "name": "Status", "values": [{"key": "created", "value": "Draft"}]},
            {"field": "project", "name": "Project"}]})
    response = api.raw(f"organization.download_for_get_all?prepare_id={prepared['prepare_id']}", method="GET",
                       body=b"")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows == [["Name", "Status", "Project"], ["'=cmd()", "Draft", project], ["plain", "Draft", project]]
    # another key may not fetch it; unknown ids and bad mappings are refused
    assert refused(bob, "organization.download_for_get_all", {"prepare_id": prepared["prepare_id"]}).code == 400
    assert refused(api, "organization.download_for_get_all", {"prepare_id": "nope"}).code == 400
    dup = {"entity_type": "task", "only_fields": ["name"], "field_mappings": [{"field": "name"}, {"field": "name"}]}
    assert "more than once" in refused(api, "organization.prepare_download_for_get_all", dup).msg
    assert "'entity_type'" in refused(api, "organization.prepare_download_for_get_all",
                                      {**dup, "entity_type": "queue"}).msg
    bad_query = {**dup, "field_mappings": [{"field": "name"}], "status": 5}
    assert refused(api, "organization.prepare_download_for_get_all", bad_query).code == 400


def test_export_of_models(api):
    name = unique("model")
    api.call("models.create", {"name": name, "uri": "file:///m.bin"})
    prepared = api.call("organization.prepare_download_for_get_all", {
        "entity_type": "model", "name": f"^{name}$", "only_fields": ["name", "uri"],
        "field_mappings": [{"field": "name"}, {"field": "uri", "name": "URI"}]})
    text = api.raw("organization.download_for_get_all", {"prepare_id": prepared["prepare_id"]}).text
    assert list(csv.reader(io.StringIO(text.lstrip("\ufeff")))) == [["name", "URI"], [name, "file:///m.bin"]]


# -- projects.get_all_ex -------------------------------------------------------------------------

def test_projects_get_all_ex_scrolls_and_answers_user_as_an_object(api, bob):
    top = unique("scroll")
    made = [bob.call("projects.create", {"name": f"{top}/p{i}", "description": ""})["id"] for i in range(5)]
    body = {"parent": [api.call("projects.get_all", {"name": f"^{top}$"})["projects"][0]["id"]], "size": 2,
            "only_fields": ["name", "user.name"], "include_stats": True}
    seen, scroll = [], None
    for _ in range(4):
        page = api.call("projects.get_all_ex", {**body, "scroll_id": scroll})
        seen += page["projects"]
        scroll = page["scroll_id"]
    assert sorted(p["id"] for p in seen) == sorted(made) and len(seen) == 5
    assert [p["name"] for p in seen] == [f"{top}/p{i}" for i in range(5)]
    bob_key = bob.call("users.get_current_user")["user"]["id"]
    assert seen[0]["user"] == {"id": bob_key, "name": "Bob Jones"}
    again = api.call("projects.get_all_ex", {**body, "scroll_id": scroll, "refresh_scroll": True})
    assert [p["id"] for p in again["projects"]] == [p["id"] for p in seen]
    plain = api.call("projects.get_all_ex", {"id": [made[0]]})
    assert "scroll_id" not in plain and plain["projects"][0]["user"]["name"] == "Bob Jones"
    assert "'size'" in refused(api, "projects.get_all_ex", {"size": "two"}).msg
    assert refused(api, "projects.get_all_ex", {"size": 2, "scroll_id": "garbage!"}).code == 400

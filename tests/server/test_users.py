"""Issue 19: users, preferences and organization endpoints of a single-tenant server (a key is
a user), against a running server."""
from __future__ import annotations

import pytest

from tests.helpers import ACCESS_KEY, Api, ApiFailure, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("users"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(srv):
    return srv.api()


@pytest.fixture(scope="module")
def alice(srv, admin):
    key = admin.call("auth.create_credentials", {"label": "Alice Smith", "role": "user"})
    return Api(srv.api_url, key["access_key"], key["secret_key"])


def whoami(api: Api) -> str:
    return api.call("users.get_current_user")["user"]["id"]


def test_current_user_has_the_schema_shape(alice):
    answer = alice.call("users.get_current_user")
    user = answer["user"]
    assert user["name"] == "Alice Smith" and user["given_name"] == "Alice" and user["family_name"] == "Smith"
    assert user["company"] == {"id": "shipyard", "name": "shipyard"} and user["role"] == "user"
    assert user["preferences"] == {} and user["created"] and user["created_in_version"]
    assert set(answer["getting_started"]) == {"install", "configure", "agentName"}
    assert answer["settings"] == {"max_download_items": "1000"}


def test_every_key_is_a_user_and_run_keys_are_not_listed(srv, admin, alice):
    run_key = admin.call("auth.create_credentials", {"label": "run-of-task", "role": "task"})["access_key"]
    users = {u["id"]: u for u in admin.call("users.get_all")["users"]}
    assert users[whoami(alice)]["name"] == "Alice Smith" and ACCESS_KEY in users
    assert run_key not in users
    assert admin.call("users.get_all", {"id": [whoami(alice)]})["users"][0]["role"] == "user"
    assert [u["id"] for u in admin.call("users.get_all_ex", {"name": "^Alice"})["users"]] == [whoami(alice)]
    assert admin.call("users.get_all", {"only_fields": ["name"], "id": [whoami(alice)]})["users"] == [
        {"id": whoami(alice), "name": "Alice Smith"}]
    assert admin.call("users.get_by_id", {"user": whoami(alice)})["user"]["name"] == "Alice Smith"
    with pytest.raises(ApiFailure) as missing:
        admin.call("users.get_by_id", {"user": "NOPE"})
    assert missing.value.code == 400 and "NOPE" in missing.value.msg


def test_get_all_ex_active_in_projects(admin, alice):
    project = alice.call("projects.create", {"name": "alice-only", "description": ""})["id"]
    alice.call("tasks.create", {"name": "t", "type": "training", "project": project})
    active = admin.call("users.get_all_ex", {"active_in_projects": [project]})["users"]
    assert [u["id"] for u in active] == [whoami(alice)]


def test_preferences_merge_dotted_keys_per_user(admin, alice):
    alice.call("users.set_preferences", {"preferences": {"experiments.cols": ["name", "status"], "theme": "dark"}})
    done = alice.call("users.set_preferences", {"preferences": {"experiments.sort": "-last_update"}})
    assert done == {"updated": 1, "fields": {"preferences": {"experiments.sort": "-last_update"}}}
    prefs = alice.call("users.get_preferences")["preferences"]
    assert prefs == {"experiments": {"cols": ["name", "status"], "sort": "-last_update"}, "theme": "dark"}
    assert alice.call("users.get_current_user")["user"]["preferences"] == prefs
    assert admin.call("users.get_preferences")["preferences"] == {}
    for bad in ({"preferences": "x"}, {}, {"preferences": {"a..b": 1}}):
        with pytest.raises(ApiFailure) as refused:
            alice.call("users.set_preferences", bad)
        assert refused.value.code == 400 and "preferences" in refused.value.msg


def test_server_and_organization_calls_the_ui_makes_at_start(admin, alice):
    assert admin.call("server.report_stats_option", {"enabled": True})["supported"] is False
    assert admin.call("login.supported_modes")["basic"]["enabled"] is True
    project = admin.call("projects.create", {"name": "tagged", "description": ""})["id"]
    admin.call("tasks.create", {"name": "a", "type": "training", "project": project, "tags": ["red", "blue"],
                                "system_tags": ["sys"]})
    admin.call("models.create", {"name": "m", "uri": "file:///m", "project": project, "tags": ["green"]})
    assert {"red", "blue", "green"} <= set(admin.call("organization.get_tags")["tags"])
    assert admin.call("organization.get_tags", {"filter": {"tags": ["green"]}})["tags"] == ["green"]
    assert "sys" in admin.call("organization.get_tags", {"include_system": True})["system_tags"]
    counts = admin.call("organization.get_entities_count", {"tasks": {"project": [project]},
                                                           "models": {"project": [project]}, "projects": {}})
    assert counts["tasks"] == 1 and counts["models"] == 1 and counts["projects"] >= 2 and "datasets" not in counts
    companies = alice.call("organization.get_user_companies")["companies"]
    assert companies[0]["id"] == "shipyard" and companies[0]["owners"][0]["id"] == whoami(alice)


def test_user_ref_names_a_run_key_after_the_key_that_minted_it(tmp_path):
    from server.auth.keys import KeyStore
    from server.services.users import user_names, user_ref
    from server.storage.store import Store

    keys = KeyStore(Store(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    agent, _ = keys.create(name="gpu-box", role="agent")
    run, _ = keys.create(name="3f2a", role="task", minted_by=agent)
    plain, _ = keys.create(role="user")
    names = user_names(keys.store)
    assert user_ref(run, names) == {"id": run, "name": "gpu-box"}
    assert user_ref(plain, names) == {"id": plain, "name": plain}
    assert user_ref("imported-user", names) == {"id": "imported-user", "name": "imported-user"}
    assert user_ref(None, names) == {"id": "", "name": ""}

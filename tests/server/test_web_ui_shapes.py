"""Answers the official ClearML web UI reads, found by walking it (tests/ui/test_official_ui.py),
checked here on the API alone so CI keeps them without the UI (issue 19)."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers import ACCESS_KEY, ApiFailure


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_star_in_only_fields_keeps_every_field(api):
    """The queues page asks `only_fields: ["*", "entries.task.name"]`; with the star dropped
    each queue came back as its id alone and the table stayed empty."""
    queue = api.call("queues.create", {"name": _name("q")})["id"]
    found = api.call("queues.get_all_ex", {"id": [queue], "only_fields": ["*", "entries.task.name"]})["queues"]
    assert found[0]["name"].startswith("q-") and found[0]["entries"] == [] and "created" in found[0]


def test_models_get_all_ex_joins_references_and_people(api):
    """The models table shows `task.name`, `project.name`, `user.name` and reads `company.id`
    (no company id: a read-only example model)."""
    project = api.call("projects.create", {"name": _name("p")})["id"]
    task = api.call("tasks.create", {"name": "maker", "type": "training", "project": project})["id"]
    model = api.call("models.create", {"name": _name("m"), "uri": "file:///m.bin", "task": task, "project": project})["id"]
    doc = api.call("models.get_all_ex", {"id": [model], "only_fields": [
        "name", "task.name", "project.name", "user.name", "company"]})["models"][0]
    assert doc["task"] == {"id": task, "name": "maker"}
    assert doc["project"]["id"] == project and doc["project"]["name"].startswith("p-")
    assert doc["user"]["id"] == ACCESS_KEY and doc["user"]["name"]
    assert doc["company"]["id"]
    assert api.call("models.get_by_id_ex", {"id": [model], "only_fields": ["task.name"]})["models"][0]["task"]["name"] == "maker"


def test_models_get_all_ex_scrolls_without_repeating(api):
    """The models table pages with `scroll_id`/`size`; without a scroll id in the answer it
    asked for the first page again and again."""
    project = api.call("projects.create", {"name": _name("p")})["id"]
    made = {api.call("models.create", {"name": f"m{i}", "uri": "file:///m.bin", "project": project})["id"]
            for i in range(5)}
    seen, scroll, ids = [], None, set()
    for _ in range(3):
        page = api.call("models.get_all_ex", {"project": [project], "size": 2, "scroll_id": scroll,
                                              "order_by": ["-created"], "only_fields": ["name"]})
        seen += [m["id"] for m in page["models"]]
        scroll = page["scroll_id"]
        ids.add(scroll)
    assert len(seen) == 5 and set(seen) == made
    assert len(ids) == 1  # one id for the whole scroll
    again = api.call("models.get_all_ex", {"project": [project], "size": 2, "scroll_id": scroll,
                                           "refresh_scroll": True, "only_fields": ["name"]})
    assert len(again["models"]) == 5


def test_projects_get_all_ex_people_are_objects(api):
    """The projects page reads `company.id` (without it every project card is marked EXAMPLE
    and read-only) and `user.name`."""
    project = api.call("projects.create", {"name": _name("p")})["id"]
    doc = api.call("projects.get_all_ex", {"id": [project], "only_fields": ["name", "company", "user"]})["projects"][0]
    assert doc["company"]["id"] and doc["user"]["id"] == ACCESS_KEY and doc["user"]["name"]


def test_a_scroll_keeps_one_id_on_every_page(api):
    """The UI holds the scroll id of the first page and takes any other id in a later answer
    for an expired session: it reloaded the table and never got past its first 30 tasks."""
    project = api.call("projects.create", {"name": _name("p")})["id"]
    made = {api.call("tasks.create", {"name": f"t{i}", "type": "training", "project": project})["id"]
            for i in range(7)}
    first = api.call("tasks.get_all_ex", {"project": [project], "size": 3, "scroll_id": None, "order_by": ["name"]})
    seen, scroll = [t["id"] for t in first["tasks"]], first["scroll_id"]
    for _ in range(3):
        page = api.call("tasks.get_all_ex", {"project": [project], "size": 3, "scroll_id": scroll, "order_by": ["name"]})
        assert page["scroll_id"] == scroll
        seen += [t["id"] for t in page["tasks"]]
    assert len(seen) == 7 and set(seen) == made
    refreshed = api.call("tasks.get_all_ex", {"project": [project], "size": 3, "scroll_id": scroll,
                                              "refresh_scroll": True, "order_by": ["name"]})
    assert [t["id"] for t in refreshed["tasks"]] == seen and refreshed["scroll_id"] == scroll


def test_an_unknown_scroll_id_is_a_400_naming_it(api):
    for bad in ("not-a-scroll", "ffffffffff-" + "0" * 32, "1-" + "0" * 32):  # never issued; expired
        with pytest.raises(ApiFailure) as err:
            api.call("tasks.get_all_ex", {"scroll_id": bad, "size": 2})
        assert err.value.code == 400 and "scroll_id" in err.value.msg

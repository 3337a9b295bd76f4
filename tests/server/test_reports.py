"""Issue 19: reports.* against a running server. A report is a task of type `report` in a hidden
`.reports` project under the project it belongs to; get_task_data answers the embedded tasks'
events through the events services."""
from __future__ import annotations

import pytest

from tests.helpers import ApiFailure, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("reports"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv):
    return srv.api()


def refused(api, endpoint: str, body: dict) -> ApiFailure:
    with pytest.raises(ApiFailure) as failure:
        api.call(endpoint, body)
    return failure.value


def test_create_puts_the_report_in_a_hidden_reports_project(api):
    project = api.call("projects.create", {"name": "team-a", "description": ""})["id"]
    made = api.call("reports.create", {"name": "weekly", "project": project, "tags": ["b", "a"],
                                       "comment": "c", "report": "# Results", "report_assets": ["http://x/a.png"]})
    reports_project = api.call("projects.get_by_id", {"project": made["project_id"]})["project"]
    assert reports_project["name"] == "team-a/.reports" and reports_project["parent"] == project
    assert set(reports_project["system_tags"]) == {"reports", "hidden"}
    task = api.call("tasks.get_by_id", {"task": made["id"]})["task"]
    assert task["type"] == "report" and task["report"] == "# Results" and task["report_assets"] == ["http://x/a.png"]
    assert task["status"] == "created" and set(task["system_tags"]) == {"reports", "hidden"}
    top = api.call("reports.create", {"name": "top-level"})
    assert api.call("projects.get_by_id", {"project": top["project_id"]})["project"]["name"] == ".reports"


def test_get_all_ex_lists_reports_of_a_project_with_people_and_scroll(api):
    project = api.call("projects.create", {"name": "team-b", "description": ""})["id"]
    ids = [api.call("reports.create", {"name": f"r{i}", "project": project})["id"] for i in range(3)]
    api.call("tasks.create", {"name": "not a report", "type": "training", "project": project})
    listed = api.call("reports.get_all_ex", {"project": [project], "only_fields": ["name", "user.name", "report"]})
    assert sorted(t["id"] for t in listed["tasks"]) == sorted(ids)
    assert set(listed["tasks"][0]["user"]) == {"id", "name"}
    first = api.call("reports.get_all_ex", {"project": [project], "size": 2, "order_by": ["name"]})
    second = api.call("reports.get_all_ex", {"project": [project], "size": 2, "scroll_id": first["scroll_id"],
                                             "order_by": ["name"]})
    assert [t["name"] for t in first["tasks"] + second["tasks"]] == ["r0", "r1", "r2"]
    child = api.call("projects.create", {"name": "team-b/child", "description": ""})["id"]
    deep = api.call("reports.create", {"name": "deeper", "project": child})["id"]
    assert deep not in [t["id"] for t in api.call("reports.get_all_ex", {"project": [project]})["tasks"]]
    everything = api.call("reports.get_all_ex", {"project": [project], "include_subprojects": True})["tasks"]
    assert sorted(t["id"] for t in everything) == sorted([*ids, deep])
    other = api.call("projects.create", {"name": "no-reports", "description": ""})["id"]
    assert api.call("reports.get_all_ex", {"project": [other]}) == {"tasks": []}
    assert refused(api, "reports.get_all_ex", {"status": ["in_progress"]}).code == 400


def test_update_publish_archive_and_delete_rules(api):
    report = api.call("reports.create", {"name": "draft"})["id"]
    long_text = "word " * 100
    done = api.call("reports.update", {"task": report, "report": long_text, "tags": ["z", "y"]})
    assert done["updated"] == 1 and done["fields"]["tags"] == ["y", "z"] and len(done["fields"]["report"]) <= 100
    assert api.call("reports.update", {"task": report}) == {"updated": 0}
    published = api.call("reports.publish", {"task": report, "comment": "ship it"})
    assert published["updated"] == 1 and published["fields"]["status"] == "published"
    assert api.call("reports.update", {"task": report, "name": "final"})["updated"] == 1
    assert refused(api, "reports.update", {"task": report, "report": "new"}).subcode == 110
    assert refused(api, "reports.delete", {"task": report}).subcode == 123
    assert api.call("reports.archive", {"task": report}) == {"archived": 1}
    assert api.call("reports.archive", {"task": report}) == {"archived": 0}
    assert "archived" in api.call("tasks.get_by_id", {"task": report})["task"]["system_tags"]
    assert api.call("reports.unarchive", {"task": report}) == {"unarchived": 1}
    assert api.call("reports.delete", {"task": report, "force": True}) == {"deleted": 1}


def test_endpoints_refuse_tasks_that_are_not_reports_and_bad_fields(api):
    task = api.call("tasks.create", {"name": "plain", "type": "training"})["id"]
    assert "not a report" in refused(api, "reports.publish", {"task": task}).msg
    assert "'name'" in refused(api, "reports.create", {}).msg
    assert "'tags'" in refused(api, "reports.create", {"name": "x", "tags": "a"}).msg
    assert "'task'" in refused(api, "reports.update", {"name": "x"}).msg
    assert "project" in refused(api, "reports.move", {"task": task}).msg


def test_move_goes_to_the_targets_reports_project_and_the_empty_one_goes(api):
    made = api.call("reports.create", {"name": "mover"})
    target = api.call("projects.create", {"name": "team-c", "description": ""})["id"]
    other = api.call("reports.create", {"name": "stays", "project": target})
    moved = api.call("reports.move", {"task": made["id"], "project": target})
    assert moved["project_id"] == other["project_id"]
    assert api.call("tasks.get_by_id", {"task": made["id"]})["task"]["project"] == other["project_id"]
    by_name = api.call("reports.move", {"task": made["id"], "project_name": "team-d"})
    assert api.call("projects.get_by_id", {"project": by_name["project_id"]})["project"]["name"] == "team-d/.reports"
    lone = api.call("reports.create", {"name": "lone", "project": target})
    api.call("reports.move", {"task": lone["id"], "project_name": "team-e"})
    api.call("reports.delete", {"task": other["id"]})
    assert refused(api, "projects.get_by_id", {"project": other["project_id"]}).code == 400


def test_get_tags_lists_the_reports_tags_only(api):
    api.call("reports.create", {"name": "tagged", "tags": ["quarterly"]})
    api.call("tasks.create", {"name": "t", "type": "training", "tags": ["task-only"]})
    tags = api.call("reports.get_tags")["tags"]
    assert "quarterly" in tags and "task-only" not in tags


def test_get_task_data_answers_the_embedded_tasks_events(api):
    task = api.call("tasks.create", {"name": "embedded", "type": "training"})["id"]
    api.events([{"type": "training_stats_scalar", "task": task, "metric": "loss", "variant": "train", "iter": i,
                 "value": 1.0 / (i + 1)} for i in range(3)]
               + [{"type": "plot", "task": task, "metric": "cm", "variant": "v", "iter": 2, "plot_str": "{\"data\": []}"},
                  {"type": "training_debug_image", "task": task, "metric": "img", "variant": "v", "iter": 2,
                   "url": "http://files/img.png"}])
    data = api.call("reports.get_task_data", {
        "id": [task], "only_fields": ["name"],
        "scalar_metrics_iter_histogram": {"metrics": [{"metric": "loss", "variants": ["train"]}]},
        "plots": {"iters": 1, "metrics": [{"metric": "cm"}]},
        "debug_images": {"iters": 1, "metrics": [{"metric": "img"}]},
        "single_value_metrics": {}})
    assert data["tasks"] == [{"id": task, "name": "embedded"}]
    assert data["scalar_metrics_iter_histogram"]["loss"]["train"][task]["y"] == [1.0, 0.5, 1.0 / 3]
    assert list(data["plots"]["cm"]["v"][task]) == ["2"]
    images = data["debug_images"][0]
    assert images["task"] == task and images["iterations"][0]["events"][0]["url"] == "http://files/img.png"
    assert data["single_value_metrics"] == [{"task": task, "task_name": "embedded", "values": []}]
    model = api.call("models.create", {"name": "embedded-model", "uri": "file:///m.bin"})["id"]
    api.events([{"type": "training_stats_scalar", "task": model, "metric": "acc", "variant": "val", "iter": 1,
                 "value": 0.9, "model_event": True}])
    of_model = api.call("reports.get_task_data", {
        "id": [model], "model_events": True, "only_fields": ["name"],
        "scalar_metrics_iter_histogram": {"metrics": [{"metric": "acc"}]}})
    assert [m["name"] for m in of_model["tasks"]] == ["embedded-model"]
    assert of_model["scalar_metrics_iter_histogram"]["acc"]["val"][model]["y"] == [0.9]
    plain = api.call("reports.get_task_data", {"id": [task]})
    assert set(plain) == {"tasks"}
    assert "'plots.iters'" in refused(api, "reports.get_task_data", {"id": [task], "plots": {"iters": "x"}}).msg

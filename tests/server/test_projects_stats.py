"""projects.get_all_ex against a running server: stats per status for a project and its
subprojects, stats_for_state, stats_with_children, own_tasks/own_models, parent as {id, name},
shallow_search; and the grouped stats query on a real store, old data dirs included (issue 19)."""
from __future__ import annotations

import json
import sqlite3
import time
import uuid

import pytest

from server.services.projects.stats import grouped_stats
from server.storage import tables as t
from server.storage.store import Store, sqlite_url
from tests.helpers import ApiFailure


def _task(api, project: str, *steps: str) -> str:
    task = api.call("tasks.create", {"name": "t", "type": "training", "project": project})["id"]
    for step in steps:
        api.call(step, {"task": task, "force": True})
    return task


@pytest.fixture(scope="module")
def stats_tree(api):
    top = f"stats-{uuid.uuid4().hex[:8]}"
    leaf = api.call("projects.create", {"name": f"{top}/a/b"})["id"]
    projects = {p["name"]: p["id"] for p in api.call("projects.get_all", {"name": f"^{top}"})["projects"]}
    root, mid = projects[top], projects[f"{top}/a"]
    _task(api, root)
    _task(api, root, "tasks.started", "tasks.completed")
    _task(api, mid, "tasks.started")
    _task(api, leaf, "tasks.started", "tasks.failed")
    api.call("tasks.archive", {"tasks": [_task(api, leaf, "tasks.started", "tasks.stopped")]})
    api.call("models.create", {"name": "m", "uri": "file:///m", "project": root})
    return {"top": top, "root": root, "mid": mid, "leaf": leaf}


def _get(api, body: dict) -> dict:
    projects = api.call("projects.get_all_ex", body)["projects"]
    assert len(projects) == 1, projects
    return projects[0]


def test_stats_cover_the_project_and_its_subprojects(api, stats_tree):
    got = _get(api, {"id": [stats_tree["root"]], "include_stats": True})
    active = got["stats"]["active"]
    assert set(got["stats"]) == {"active"}
    counts = active["status_count"]
    assert (counts["created"], counts["completed"], counts["in_progress"], counts["failed"]) == (1, 1, 1, 1)
    assert counts["stopped"] == 0 and active["total_tasks"] == 4
    assert active["completed_tasks_24h"] == 1 and active["last_task_run"]
    assert isinstance(active["total_runtime"], int)
    assert [s["name"] for s in got["sub_projects"]] == [f"{stats_tree['top']}/a", f"{stats_tree['top']}/a/b"]


def test_stats_for_state_and_without_children(api, stats_tree):
    archived = _get(api, {"id": [stats_tree["root"]], "include_stats": True, "stats_for_state": "archived"})["stats"]
    assert set(archived) == {"archived"} and archived["archived"]["status_count"]["stopped"] == 1
    both = _get(api, {"id": [stats_tree["root"]], "include_stats": True, "stats_for_state": None})["stats"]
    assert (both["active"]["total_tasks"], both["archived"]["total_tasks"]) == (4, 1)
    own = _get(api, {"id": [stats_tree["root"]], "include_stats": True, "stats_with_children": False})["stats"]
    assert own["active"]["total_tasks"] == 2
    err = pytest.raises(ApiFailure, api.call, "projects.get_all_ex",
                        {"id": [stats_tree["root"]], "include_stats": True, "stats_for_state": "gone"}).value
    assert err.code == 400 and "stats_for_state" in err.msg


def test_stats_filter_on_status(api, stats_tree):
    got = _get(api, {"id": [stats_tree["root"]], "include_stats": True, "include_stats_filter": {"status": ["-created"]}})
    assert got["stats"]["active"]["total_tasks"] == 3


def test_own_contents_parent_object_and_shallow_search(api, stats_tree):
    got = _get(api, {"id": [stats_tree["root"]], "check_own_contents": True})
    assert (got["own_tasks"], got["own_models"]) == (2, 1)
    mid = _get(api, {"id": [stats_tree["mid"]]})
    assert mid["parent"] == {"id": stats_tree["root"], "name": stats_tree["top"]}
    projected = _get(api, {"id": [stats_tree["leaf"]], "only_fields": ["id", "parent.name"]})
    assert projected == {"id": stats_tree["leaf"], "parent": {"name": f"{stats_tree['top']}/a"}}
    direct = api.call("projects.get_all_ex", {"parent": [stats_tree["root"]], "shallow_search": True})["projects"]
    assert [p["id"] for p in direct] == [stats_tree["mid"]]
    anywhere = api.call("projects.get_all_ex", {"parent": [stats_tree["root"]]})["projects"]
    assert {p["id"] for p in anywhere} == {stats_tree["mid"], stats_tree["leaf"]}
    err = pytest.raises(ApiFailure, api.call, "projects.get_all_ex", {"include_stats": "maybe"}).value
    assert err.code == 400 and "include_stats" in err.msg


def _doc(task_id: str, project: str, status: str, **extra) -> dict:
    return {"id": task_id, "name": "t", "project": project, "status": status, "type": "training",
            "created": "2024-01-01T00:00:00+00:00", "last_update": "2024-01-01T00:00:00+00:00",
            "last_change": "2024-01-01T00:00:00+00:00", **extra}


def test_grouped_stats_sums_run_time_in_one_query(tmp_path):
    store = Store(sqlite_url(tmp_path))
    with store.tx() as conn:
        store.insert(conn, t.tasks, _doc("a" * 32, "p", "completed", started="2024-01-01T00:00:00+00:00",
                                         completed="2024-01-01T00:01:30+00:00"))
        store.insert(conn, t.tasks, _doc("b" * 32, "p", "stopped", started="2024-01-01T00:00:00+00:00",
                                         completed="2024-01-01T00:00:10+00:00", system_tags=["archived"]))
        store.insert(conn, t.tasks, _doc("c" * 32, "q", "created"))
        found = grouped_stats(conn, ["p", "q"], {})
    store.close()
    assert found["p"].sections["active"].total_runtime == 90.0
    assert found["p"].sections["archived"].status_count["stopped"] == 1
    assert found["q"].sections["active"].status_count["created"] == 1


def test_old_data_dir_gets_the_stats_columns_from_its_documents(tmp_path):
    # A data dir created before the stats columns existed: the upgrade adds them and fills them in.
    con = sqlite3.connect(tmp_path / "shipyard.db")
    con.execute("create table tasks (id varchar(32) primary key, name text not null, project varchar(32), "
                "status varchar(32) not null, type varchar(32) not null, parent varchar(32), created float not null, "
                "last_update float not null, last_change float not null, lease_expires float, doc json not null)")
    docs = [_doc(f"{n:032x}", "p", "completed", system_tags=["archived"], started="2024-01-01T00:00:00+00:00",
                 completed="2024-01-01T00:01:00+00:00") for n in range(1001)]  # more than one upgrade batch
    con.executemany("insert into tasks values (?,?,?,?,?,?,?,?,?,?,?)",
                    [(d["id"], "t", "p", "completed", "training", None, 1, 1, 1, None, json.dumps(d)) for d in docs])
    con.commit()
    con.close()
    store = Store(sqlite_url(tmp_path), upgrade=True)
    with store.tx() as conn:
        found = grouped_stats(conn, ["p"], {})
    store.close()
    archived = found["p"].sections["archived"]
    assert (archived.total_runtime, archived.status_count["completed"]) == (60.0 * 1001, 1001)


def test_children_type_lists_only_projects_holding_pipelines(api, stats_tree):
    top = f"pipes-{uuid.uuid4().hex[:8]}"
    pipe = api.call("projects.create", {"name": f"{top}/.pipelines/p", "system_tags": ["hidden", "pipeline"]})["id"]
    api.call("tasks.create", {"name": "ctl", "type": "controller", "project": pipe})
    api.call("tasks.create", {"name": "step", "type": "training", "project": pipe})
    body = {"children_type": "pipeline", "include_stats": True, "search_hidden": True, "name": f"^({top}|stats-)"}
    got = {p["name"]: p for p in api.call("projects.get_all_ex", body)["projects"]}
    assert set(got) == {top, f"{top}/.pipelines", f"{top}/.pipelines/p"}
    assert got[top]["stats"]["active"]["total_tasks"] == 1  # the controller only
    assert api.call("projects.get_all_ex", {"children_type": "dataset", "id": [pipe]}) == {"projects": []}
    err = pytest.raises(ApiFailure, api.call, "projects.get_all_ex", {"children_type": "queue"}).value
    assert err.code == 400 and "children_type" in err.msg


def test_stats_filter_of_the_wrong_type_is_a_400_naming_it(api, stats_tree):
    for bad in ({"status": 5}, {"status": [{"x": 1}]}, "created"):
        err = pytest.raises(ApiFailure, api.call, "projects.get_all_ex", {
            "id": [stats_tree["root"]], "include_stats": True, "include_stats_filter": bad}).value
        assert err.code == 400 and "include_stats_filter" in err.msg, bad
    one = _get(api, {"id": [stats_tree["root"]], "include_stats": True, "include_stats_filter": {"status": "created"}})
    assert one["stats"]["active"]["total_tasks"] == 1


def test_active_users_lists_projects_with_their_tasks(api, stats_tree):
    me = api.call("users.get_current_user")["user"]["id"]
    body = {"id": [stats_tree["root"], stats_tree["leaf"]], "include_stats": True, "active_users": [me]}
    got = {p["id"]: p for p in api.call("projects.get_all_ex", body)["projects"]}
    assert set(got) == {stats_tree["root"], stats_tree["leaf"]}
    assert got[stats_tree["root"]]["stats"]["active"]["total_tasks"] == 4
    nobody = api.call("projects.get_all_ex", {**body, "active_users": ["nobody"]})
    assert nobody == {"projects": []}


def test_dataset_stats_come_from_the_latest_version(api):
    project = api.call("projects.create", {"name": f"ds-{uuid.uuid4().hex[:8]}", "system_tags": ["dataset"]})["id"]
    for count, size in ((3, 300), (5, 500)):
        api.call("tasks.create", {"name": "v", "type": "data_processing", "project": project,
                                  "system_tags": ["dataset"], "runtime": {"ds_file_count": count, "ds_total_size": size}})
        time.sleep(0.01)  # last_update has millisecond resolution: the second version is the later one
    got = _get(api, {"id": [project], "include_dataset_stats": True})
    assert got["dataset_stats"] == {"file_count": 5, "total_size": 500}
    empty = api.call("projects.create", {"name": f"ds-{uuid.uuid4().hex[:8]}"})["id"]
    assert _get(api, {"id": [empty], "include_dataset_stats": True})["dataset_stats"] is None

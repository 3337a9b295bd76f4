"""projects.* naming rules and subtree operations against a running server: create, update,
validate_delete, delete, move, merge, make_public/make_private (issue 19)."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers import ApiFailure


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _by_name(api, name: str) -> dict:
    found = [p for p in api.call("projects.get_all", {"search_hidden": True})["projects"] if p["name"] == name]
    assert len(found) == 1, (name, found)
    return found[0]


def _task(api, project: str, name: str = "t", **fields) -> str:
    return api.call("tasks.create", {"name": name, "type": "training", "project": project, **fields})["id"]


def _fails(api, endpoint: str, body: dict) -> ApiFailure:
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    return err.value


def test_create_existing_name_is_801_and_root_name_is_407(api):
    name = _name("dup")
    api.call("projects.create", {"name": name})
    err = _fails(api, "projects.create", {"name": f" {name}/ "})
    assert (err.code, err.subcode) == (400, 801)
    for bad in ("/", " / ", "//"):
        err = _fails(api, "projects.create", {"name": bad})
        assert (err.code, err.subcode) == (400, 407), bad
    err = _fails(api, "projects.create", {"name": ["x"]})
    assert (err.code, err.subcode) == (400, 12) and "'name'" in err.msg
    err = _fails(api, "projects.create", {"name": "/".join(["d"] * 11)})
    assert (err.code, err.subcode) == (400, 409)


def test_create_path_links_parents_and_basename(api):
    top = _name("tree")
    leaf = api.call("projects.create", {"name": f"{top}/b/c"})["id"]
    a, b, c = _by_name(api, top), _by_name(api, f"{top}/b"), _by_name(api, f"{top}/b/c")
    assert c["id"] == leaf and (a["basename"], b["basename"], c["basename"]) == (top, "b", "c")
    assert (b["parent"], c["parent"], c["path"]) == (a["id"], b["id"], [a["id"], b["id"]])


def test_update_renames_subprojects_and_refuses_a_new_location(api):
    top = _name("ren")
    api.call("projects.create", {"name": f"{top}/b/c"})
    b = _by_name(api, f"{top}/b")
    got = api.call("projects.update", {"project": b["id"], "name": f"{top}/bb"})
    assert got == {"updated": 1, "fields": {"name": f"{top}/bb"}}
    assert _by_name(api, f"{top}/bb/c")["basename"] == "c" and _by_name(api, f"{top}/bb")["basename"] == "bb"
    err = _fails(api, "projects.update", {"project": b["id"], "name": "elsewhere/bb"})
    assert (err.code, err.subcode) == (400, 408)
    err = _fails(api, "projects.update", {"project": b["id"], "name": "/"})
    assert (err.code, err.subcode) == (400, 407)
    err = _fails(api, "projects.update", {"project": b["id"], "name": 5})
    assert err.code == 400 and "'name'" in err.msg


def test_validate_delete_counts_the_subtree(api):
    top = _name("vd")
    child = api.call("projects.create", {"name": f"{top}/kid"})["id"]
    root = _by_name(api, top)["id"]
    _task(api, root)
    archived = _task(api, child)
    api.call("tasks.archive", {"tasks": [archived]})
    api.call("models.create", {"name": "m", "uri": "file:///m", "project": child})
    got = api.call("projects.validate_delete", {"project": root})
    assert got["tasks"] == 2 and got["non_archived_tasks"] == 1
    assert got["models"] == 1 and got["non_archived_models"] == 1
    assert {"reports", "non_archived_reports", "pipelines", "datasets"} <= set(got)
    err = _fails(api, "projects.validate_delete", {})
    assert err.code == 400 and "project" in err.msg


def test_delete_needs_force_for_active_tasks_and_models(api):
    root = api.call("projects.create", {"name": _name("del")})["id"]
    task = _task(api, root)
    err = _fails(api, "projects.delete", {"project": root})
    assert (err.code, err.subcode) == (400, 402)
    api.call("tasks.archive", {"tasks": [task]})
    model = api.call("models.create", {"name": "m", "uri": "file:///m", "project": root})["id"]
    err = _fails(api, "projects.delete", {"project": root})
    assert (err.code, err.subcode) == (400, 405)
    err = _fails(api, "projects.delete", {"project": root, "force": "maybe"})
    assert err.code == 400 and "'force'" in err.msg
    got = api.call("projects.delete", {"project": root, "force": True})
    assert got == {"deleted": 1, "disassociated_tasks": 1, "deleted_tasks": 0, "deleted_models": 0}
    assert not api.call("tasks.get_by_id", {"task": task})["task"].get("project")
    assert not api.call("models.get_by_id", {"model": model})["model"].get("project")


def test_delete_archived_only_project_without_force(api):
    root = api.call("projects.create", {"name": _name("del-arch")})["id"]
    api.call("tasks.archive", {"tasks": [_task(api, root)]})
    assert api.call("projects.delete", {"project": root})["deleted"] == 1


def test_delete_contents_deletes_the_subtree_and_answers_urls(api):
    top = _name("delc")
    kid = api.call("projects.create", {"name": f"{top}/kid"})["id"]
    root = _by_name(api, top)["id"]
    task = _task(api, kid)
    api.call("tasks.add_or_update_artifacts", {"task": task, "artifacts": [
        {"key": "a", "type": "custom", "mode": "output", "uri": "file:///art/a.bin"}]})
    model = api.call("models.create", {"name": "m", "uri": "file:///models/m.pt", "project": root})["id"]
    elsewhere = api.call("projects.create", {"name": _name("delc-other")})["id"]
    child = _task(api, elsewhere, "child", parent=task)
    kept_model = api.call("models.create", {"name": "k", "uri": "file:///k", "project": elsewhere, "task": task})["id"]
    api.events([{"type": "training_debug_image", "task": task, "metric": "m", "variant": "v", "iter": 1,
                 "url": "file:///events/img.png"}])
    got = api.call("projects.delete", {"project": root, "force": True, "delete_contents": True})
    assert (got["deleted"], got["deleted_tasks"], got["deleted_models"]) == (2, 1, 1)
    assert got["urls"]["model_urls"] == ["file:///models/m.pt"]
    assert got["urls"]["artifact_urls"] == ["file:///art/a.bin"]
    assert got["urls"]["event_urls"] == ["file:///events/img.png"]
    for endpoint, body in (("tasks.get_by_id", {"task": task}), ("models.get_by_id", {"model": model}),
                           ("projects.get_by_id", {"project": kid})):
        assert _fails(api, endpoint, body).code == 400
    assert not api.call("tasks.get_by_id", {"task": child})["task"].get("parent")
    assert not api.call("models.get_by_id", {"model": kept_model})["model"].get("task")


def test_move_repositions_the_subtree(api):
    top, dest, mid = _name("mv"), _name("mvdest"), _name("b")
    api.call("projects.create", {"name": f"{top}/{mid}/c"})
    b = _by_name(api, f"{top}/{mid}")
    assert api.call("projects.move", {"project": b["id"], "new_location": f"{dest}/x"}) == {"moved": 2}
    x, moved, c = _by_name(api, f"{dest}/x"), _by_name(api, f"{dest}/x/{mid}"), _by_name(api, f"{dest}/x/{mid}/c")
    assert moved["id"] == b["id"] and moved["parent"] == x["id"]
    assert c["path"] == [*x["path"], x["id"], b["id"]]
    err = _fails(api, "projects.move", {"project": b["id"], "new_location": f"{dest}/x"})
    assert (err.code, err.subcode) == (400, 410)
    err = _fails(api, "projects.move", {"project": b["id"], "new_location": f"{dest}/x/{mid}/c"})
    assert (err.code, err.subcode) == (400, 411)
    assert api.call("projects.move", {"project": b["id"], "new_location": ""}) == {"moved": 2}
    top_level = _by_name(api, mid)
    assert top_level["id"] == b["id"] and not top_level.get("parent") and top_level["path"] == []
    assert _by_name(api, f"{mid}/c")["path"] == [b["id"]]
    err = _fails(api, "projects.move", {"project": b["id"], "new_location": 5})
    assert err.code == 400 and "new_location" in err.msg


def test_merge_moves_contents_and_children(api):
    src, dst = _name("msrc"), _name("mdst")
    source = api.call("projects.create", {"name": src})["id"]
    api.call("projects.create", {"name": f"{src}/kid/g"})
    destination = api.call("projects.create", {"name": dst})["id"]
    active, archived = _task(api, source), _task(api, source)
    api.call("tasks.archive", {"tasks": [archived]})
    api.call("models.create", {"name": "m", "uri": "file:///m", "project": source})
    got = api.call("projects.merge", {"project": source, "destination_project": destination})
    assert got == {"moved_entities": 2, "moved_projects": 1}
    assert api.call("tasks.get_by_id", {"task": active})["task"]["project"] == destination
    assert api.call("tasks.get_by_id", {"task": archived})["task"]["project"] == source
    assert _by_name(api, f"{dst}/kid/g")["path"][0] == destination
    assert _fails(api, "projects.get_by_id", {"project": source}).code == 400
    kid = _by_name(api, f"{dst}/kid")["id"]
    err = _fails(api, "projects.merge", {"project": destination, "destination_project": kid})
    assert (err.code, err.subcode) == (400, 412)
    err = _fails(api, "projects.merge", {"project": kid, "destination_project": kid})
    assert (err.code, err.subcode) == (400, 410)
    err = _fails(api, "projects.merge", {"project": kid, "destination_project": 5})
    assert err.code == 400 and "destination_project" in err.msg


def test_make_public_and_private_count_the_projects(api):
    # Single tenant: every project is visible to every user already; only the count is answered.
    project = api.call("projects.create", {"name": _name("pub")})["id"]
    for endpoint in ("projects.make_public", "projects.make_private"):
        assert api.call(endpoint, {"ids": [project, "0" * 32]}) == {"updated": 1}
        err = _fails(api, endpoint, {"ids": [1]})
        assert err.code == 400 and "ids" in err.msg


def test_pipelines_and_datasets_in_the_subtree(api):
    top = _name("special")
    pipe = api.call("projects.create", {"name": f"{top}/.pipelines/p", "system_tags": ["hidden", "pipeline"]})["id"]
    data = api.call("projects.create", {"name": f"{top}/.datasets/d", "system_tags": ["hidden", "dataset"]})["id"]
    root = _by_name(api, top)["id"]
    _task(api, pipe, "step")  # not a controller: the pipeline is not active
    got = api.call("projects.validate_delete", {"project": root})
    assert (got["pipelines"], got["datasets"], got["tasks"]) == (0, 0, 0)
    _task(api, pipe, "ctl", type="controller")
    version = _task(api, data, "v", type="data_processing")
    got = api.call("projects.validate_delete", {"project": root})
    assert (got["pipelines"], got["datasets"]) == (1, 1)
    err = _fails(api, "projects.delete", {"project": root})
    assert (err.code, err.subcode) == (400, 413)
    err = _fails(api, "projects.delete", {"project": data})
    assert (err.code, err.subcode) == (400, 406)
    api.call("tasks.archive", {"tasks": [version]})
    assert api.call("projects.delete", {"project": data})["deleted"] == 1

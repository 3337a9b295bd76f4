"""Regressions found by running the real clearml SDK / clearml-agent against the server
(tests/compat). Each test pins the server behaviour the real client depends on, so it runs
without the peers installed."""
from __future__ import annotations

import pytest

from tests.helpers import ApiFailure


def make_task(api, name="t", **fields):
    return api.call("tasks.create", {"name": name, "type": "training", **fields})["id"]


def test_only_fields_keeps_embedded_parent_when_leaf_is_missing(api):
    # Dataset.create() queries tasks.get_all(only_fields=["id", "runtime.version"]) and then reads
    # `task.runtime.get("version")`: like a MongoDB projection, an existing embedded object stays
    # (empty) even when the projected leaf is missing.
    task = make_task(api, "ds-regression", system_tags=["dataset"])
    got = api.call("tasks.get_all", {"id": [task], "only_fields": ["id", "runtime.version"]})["tasks"][0]
    assert got == {"id": task, "runtime": {}}
    api.call("tasks.edit", {"task": task, "runtime": {"version": "1.0.0", "other": "x"}})
    got = api.call("tasks.get_all", {"id": [task], "only_fields": ["runtime.version"]})["tasks"][0]
    assert got == {"id": task, "runtime": {"version": "1.0.0"}}
    # a missing parent, or a parent that is not an object, is still left out
    got = api.call("tasks.get_all", {"id": [task], "only_fields": ["container.image.x", "name.x"]})["tasks"][0]
    assert got == {"id": task, "container": {}}


def test_user_properties_editable_in_any_status(api):
    # Task.set_user_properties() sends tasks.edit_hyper_params(section "properties") without
    # force on a running task; the reference server allows property-only edits in any status.
    task = make_task(api)
    api.call("tasks.started", {"task": task})
    api.call("tasks.edit_hyper_params", {"task": task, "replace_hyperparams": "none", "hyperparams": [
        {"section": "Properties", "name": "owner", "value": "me"}]})
    params = api.call("tasks.get_hyper_params", {"tasks": [task]})["params"][0]["hyperparams"]
    assert [(p["section"], p["name"], p["value"]) for p in params] == [("properties", "owner", "me")]
    api.call("tasks.delete_hyper_params", {"task": task, "hyperparams": [{"section": "properties", "name": "owner"}]})
    assert api.call("tasks.get_hyper_params", {"tasks": [task]})["params"][0]["hyperparams"] == []
    # any other section still needs a task in 'created' (or force)
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.edit_hyper_params", {"task": task, "hyperparams": [
            {"section": "properties", "name": "a", "value": "1"}, {"section": "Args", "name": "lr", "value": "1"}]})
    assert (err.value.code, err.value.subcode) == (400, 110)


def test_execution_always_lists_artifacts(api):
    # Task.delete() in the SDK reads task.execution["artifacts"] of a task made by Task.create(),
    # which never had artifacts ("Task deletion failed: 'artifacts'").
    task = make_task(api, "no-artifacts")
    assert api.call("tasks.get_by_id", {"task": task})["task"]["execution"]["artifacts"] == []
    got = api.call("tasks.get_all", {"id": [task], "only_fields": ["execution.artifacts"]})["tasks"][0]
    assert got["execution"] == {"artifacts": []}
    api.call("tasks.delete", {"task": task, "force": True})

"""Against a real server process (no agent): the change-feed filter, Job, triggers over restarts.

Each test works in a project of its own, so the shared session server's other tasks don't count.
"""
from __future__ import annotations

import uuid

import pytest

from scheduler import feed
from scheduler.job import Job
from scheduler.specs import Action, TriggerSpec
from scheduler.state import FireStatus, StateStore
from scheduler.trigger_scheduler import TriggerScheduler
from shipyard import clock
from shipyard.client.api import ApiClient
from tests.helpers import ACCESS_KEY, SECRET_KEY, ApiFailure

SCRIPT = {"repository": "", "entry_point": "t.py", "diff": "print('hi')\n"}


@pytest.fixture()
def client(server):
    with ApiClient(server.api_url, ACCESS_KEY, SECRET_KEY) as api:
        yield api


@pytest.fixture()
def project(api):
    return api.call("projects.create", {"name": f"sched-{uuid.uuid4().hex[:8]}"})["id"]


def new_task(api, project, name="t", **fields):
    return api.call("tasks.create", {"name": name, "type": "training", "project": project, "script": SCRIPT,
                                     **fields})["id"]


def complete(api, task_id, status="completed"):
    api.call("tasks.enqueue", {"task": task_id, "queue_name": "sched-nobody-listens"})
    api.call("tasks.started", {"task": task_id})
    api.call(f"tasks.{status}", {"task": task_id})


# --- the server's date filters (added for the change feed) ----------------------------------------


def test_get_all_filters_on_last_change(api, project):
    first = new_task(api, project, "first")
    mid = api.call("tasks.get_by_id", {"task": first})["task"]["last_change"]
    second = new_task(api, project, "second")
    api.call("tasks.edit", {"task": first, "comment": "edited"})  # moves first's last_change past mid
    newer = api.call("tasks.get_all", {"project": [project], "last_change": f">{mid}",
                                       "order_by": ["last_change", "id"], "only_fields": ["id"]})["tasks"]
    assert [t["id"] for t in newer] == [second, first]
    older = api.call("tasks.get_all", {"project": [project], "last_change": [None, mid]})["tasks"]
    assert [t["id"] for t in older] == []
    both = api.call("tasks.get_all", {"project": [project], "last_update": [">=2000-01-01T00:00:00", "<2999-01-01"]})
    assert len(both["tasks"]) == 2
    complete(api, second)
    changed = api.call("tasks.get_by_id", {"task": second})["task"]["status_changed"]
    done = api.call("tasks.get_all", {"project": [project], "status_changed": f">={changed}"})["tasks"]
    assert [t["id"] for t in done] == [second]


@pytest.mark.parametrize("bad", ["2024-01-01", ">yesterday", 5, ["<2024-01-01", 3]])
def test_a_bad_date_filter_is_a_validation_error(api, bad):
    with pytest.raises(ApiFailure) as failure:
        api.call("tasks.get_all", {"last_change": bad})
    assert failure.value.code == 400 and failure.value.subcode == 12


def test_models_filter_on_last_update(api, project):
    model = api.call("models.create", {"name": "m", "project": project, "uri": "file:///m"})["id"]
    stamp = api.call("models.get_by_id", {"model": model})["model"]["last_update"]
    found = api.call("models.get_all", {"project": [project], "last_update": f">={stamp}"})["models"]
    assert [m["id"] for m in found] == [model]
    assert api.call("models.get_all", {"project": [project], "last_update": f">{stamp}"})["models"] == []


def test_the_feed_misses_no_change_while_documents_change_under_it(api, client, project):
    ids = [new_task(api, project, f"t{i}") for i in range(7)]
    start = clock.parse_iso(api.call("tasks.get_by_id", {"task": ids[0]})["task"]["last_change"])
    spec = TriggerSpec("feed", "task", Action(function="m:f"), project=project, on_tags=("x",))

    class EditsAfterTheFirstPage:  # a user edits the oldest task while the feed is being read
        calls = 0

        def call(self, endpoint, data=None, **options):
            rows = client.call(endpoint, data, **options)
            self.calls += 1
            if self.calls == 1:
                api.call("tasks.edit", {"task": ids[0], "comment": "moved to the end of the feed"})
            return rows

    docs = feed.changes(EditsAfterTheFirstPage(), spec, start, page_size=3)
    assert set(ids) <= {doc["id"] for doc in docs}
    assert [doc["id"] for doc in docs][-1] == ids[0]


# --- Job ---------------------------------------------------------------------------------------------


def test_job_clone_launch_metrics_abort(api, client, project):
    base = new_task(api, project, "base", hyperparams={"Args": {"lr": {"section": "Args", "name": "lr", "value": "1"}}})
    job = Job.clone(client, base, parameter_override={"Args/lr": 0.5, "Args/epochs": 3},
                    task_overrides={"script.branch": "dev", "comment": "from a job"}, tags=["nightly"])
    doc = api.call("tasks.get_by_id", {"task": job.task_id()})["task"]
    assert doc["parent"] == base and doc["tags"] == ["nightly"] and doc["comment"] == "from a job"
    assert {k: v["value"] for k, v in doc["hyperparams"]["Args"].items()} == {"lr": "0.5", "epochs": "3"}
    assert doc["script"]["branch"] == "dev" and doc["script"]["entry_point"] == "t.py"
    assert job.is_pending() and not job.launched()
    assert job.launch("sched-nobody-listens") and job.status() == "queued"
    assert not job.launch("sched-nobody-listens")  # already queued: refused, not raised
    api.events([{"type": "training_stats_scalar", "task": job.task_id(), "metric": "loss", "variant": "total",
                 "value": v, "iter": i, "timestamp": 1700000000000 + i} for i, v in enumerate([0.9, 0.3, 0.5])])
    assert job.get_metric("loss", "total") == (0.5, 0.3, 0.9)
    assert job.iterations() == 2 and job.get_metric("loss", "nope") is None
    job.abort()
    assert job.wait(timeout=5, pool_period=0.1) and job.is_aborted() and job.is_stopped()


def test_job_wait_times_out_on_the_patched_clock(client, api, project, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    job = Job(client, new_task(api, project), sleep=sleep)
    assert job.wait(timeout=12, pool_period=5) is False
    assert slept == [5, 5, 2]


# --- TriggerScheduler against the real change feed --------------------------------------------------


class Calls:
    def __init__(self):
        self.events = []

    def __call__(self, context):
        self.events.append(context)


def triggers(client, state_dir, fn, **conditions):
    scheduler = TriggerScheduler(client, StateStore.open(state_dir), overlap_s=60)
    scheduler.add_task_trigger(name="on-done", schedule_function=fn, **conditions)
    return scheduler


def test_trigger_fires_once_per_completion_and_survives_restarts(api, client, project, tmp_path):
    history = new_task(api, project, "old")
    complete(api, history)                          # before the trigger existed: never fires
    calls = Calls()
    conditions = {"trigger_project": project, "trigger_on_status": ["completed"]}
    triggers(client, tmp_path, calls, **conditions).step()
    first = new_task(api, project, "first")
    complete(api, first)
    failed = new_task(api, project, "failed")
    complete(api, failed, "failed")
    scheduler = triggers(client, tmp_path, calls, **conditions)
    scheduler.step()
    scheduler.step()                                # the overlap re-reads `first`: still one event
    assert [c["task.id"] for c in calls.events] == [first]
    api.call("tasks.edit", {"task": first, "comment": "touched", "force": True})  # a change, not a completion
    second = new_task(api, project, "second")
    complete(api, second)                           # while the scheduler is "down"
    triggers(client, tmp_path, calls, **conditions).step()
    triggers(client, tmp_path, calls, **conditions).step()
    assert [c["task.id"] for c in calls.events] == [first, second]
    assert calls.events[1]["task.name"] == "second" and calls.events[1]["trigger.name"] == "on-done"
    api.call("tasks.reset", {"task": first})
    complete(api, first)                            # completing again is a new event
    triggers(client, tmp_path, calls, **conditions).step()
    assert [c["task.id"] for c in calls.events] == [first, second, first]


def test_trigger_on_a_metric_threshold(api, client, project, tmp_path):
    calls = Calls()
    conditions = {"trigger_project": project, "trigger_on_metric": "loss", "trigger_on_variant": "total",
                  "trigger_on_threshold": 0.2, "trigger_on_sign": "min"}
    triggers(client, tmp_path, calls, **conditions).step()
    task = new_task(api, project)
    for value in (0.9, 0.5, 0.1, 0.05):
        api.events([{"type": "training_stats_scalar", "task": task, "metric": "loss", "variant": "total",
                     "value": value, "iter": 1, "timestamp": 1700000000000}])
        triggers(client, tmp_path, calls, **conditions).step()
    assert [c["task.id"] for c in calls.events] == [task]


def test_model_trigger_on_publish(api, client, project, tmp_path):
    calls = Calls()
    scheduler = TriggerScheduler(client, StateStore.open(tmp_path))
    scheduler.add_model_trigger(name="published", schedule_function=calls, trigger_project=project,
                                trigger_on_publish=True)
    scheduler.step()
    model = api.call("models.create", {"name": "m", "project": project, "uri": "file:///m.pt"})["id"]
    scheduler.step()
    assert calls.events == []
    api.call("models.publish", {"model": model})
    scheduler.step()
    scheduler.step()
    assert [(c["model.id"], c["model.url"]) for c in calls.events] == [(model, "file:///m.pt")]
    assert [f.status for f in scheduler.store.history("trigger:published")] == [FireStatus.FIRED]


def test_trigger_project_by_name(api, client, tmp_path):
    name = f"sched-named-{uuid.uuid4().hex[:8]}"
    project = api.call("projects.create", {"name": name})["id"]
    calls = Calls()
    scheduler = triggers(client, tmp_path, calls, trigger_project=name, trigger_on_tags=["go"])
    scheduler.step()
    task = new_task(api, project, tags=["go"])
    new_task(api, project, tags=["stay"])
    scheduler.step()
    assert [c["task.id"] for c in calls.events] == [task]

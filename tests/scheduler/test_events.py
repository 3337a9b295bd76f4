"""Which changed documents fire a trigger, with what key; templates; the change-feed query."""
from __future__ import annotations

import pytest

from scheduler.events import change_query, match, substitute
from scheduler.specs import Action, TriggerSpec
from shipyard import clock

CALL = Action(function="pkg.mod:fn")
SINCE = clock.parse_iso("2024-01-01T00:00:00+00:00")


def task(**fields):
    doc = {"id": "t1", "name": "prep data", "status": "completed", "project": "p1", "tags": [], "system_tags": [],
           "status_changed": "2024-01-01T10:00:00.000+00:00", "last_change": "2024-01-01T10:00:00.001+00:00",
           "last_update": "2024-01-01T10:00:05.000+00:00"}
    return {**doc, **fields}


def model(**fields):
    doc = {"id": "m1", "name": "resnet", "ready": False, "project": "p1", "tags": [], "system_tags": [],
           "uri": "s3://b/m.pt", "task": "t9", "last_update": "2024-01-01T10:00:00.000+00:00"}
    return {**doc, **fields}


def metrics(metric, variant, min_value, max_value):
    return {"h1": {"h2": {"metric": metric, "variant": variant, "value": max_value, "min_value": min_value,
                          "max_value": max_value}}}


def on(kind="task", **conditions):
    return TriggerSpec("t", kind, CALL, **conditions)


CASES = [
    # spec, doc, expected key (None: no event)
    (on(on_status=("completed",)), task(), "t1@completed@2024-01-01T10:00:00.000+00:00"),
    (on(on_status=("failed",)), task(), None),
    (on(on_status=("completed",)), task(status_changed="2023-12-31T00:00:00+00:00"), None),  # before since
    (on(on_status=("completed",)), task(last_change="2023-12-31T23:59:59+00:00"), None),      # history
    (on(on_status=("completed",), project="p1"), task(), "t1@completed@2024-01-01T10:00:00.000+00:00"),
    (on(on_status=("completed",), project="p2"), task(), None),
    (on(on_status=("completed",), name_match="^PREP"), task(), "t1@completed@2024-01-01T10:00:00.000+00:00"),
    (on(on_status=("completed",), name_match="^train"), task(), None),
    (on(on_status=("completed",), required_tags=("a",)), task(tags=["a", "b"]),
     "t1@completed@2024-01-01T10:00:00.000+00:00"),
    (on(on_status=("completed",), required_tags=("a", "c")), task(tags=["a", "b"]), None),
    (on(on_status=("completed",), exclude_dev=True), task(system_tags=["development"]), None),
    (on(on_tags=("ready", "gold")), task(tags=["gold", "ready"]), "t1"),
    (on(on_tags=("ready", "gold")), task(tags=["ready"]), None),
    (on(metric="loss", variant="total", threshold=0.1), task(last_metrics=metrics("loss", "total", 0.05, 0.9)), "t1"),
    (on(metric="loss", variant="total", threshold=0.1), task(last_metrics=metrics("loss", "total", 0.2, 0.9)), None),
    (on(metric="loss", variant="total", threshold=0.1), task(last_metrics=metrics("loss", "val", 0.05, 0.9)), None),
    (on(metric="acc", variant="top1", threshold=0.9, sign="max"), task(last_metrics=metrics("acc", "top1", 0.1, 0.95)),
     "t1"),
    (on(metric="acc", variant="top1", threshold=0.9, sign="max"), task(last_metrics=metrics("acc", "top1", 0.1, 0.5)),
     None),
    (on(metric="acc", variant="top1", threshold=0.9, sign="max"), task(last_metrics={}), None),
    (on("model", on_publish=True), model(ready=True), "m1"),
    (on("model", on_publish=True), model(), None),
    (on("model", on_archive=True), model(system_tags=["archived"]), "m1"),
    (on("model", on_tags=("prod",)), model(tags=["prod"]), "m1"),
    (on("model", on_tags=("prod",)), model(tags=["prod"], last_update="2023-06-01T00:00:00+00:00"), None),
]


@pytest.mark.parametrize(("spec", "doc", "key"), CASES)
def test_match(spec, doc, key):
    event = match(spec, doc, since=SINCE)
    assert (event.key if event else None) == key


def test_event_context_for_templates():
    event = match(on(on_status=("completed",)), task(), since=SINCE)
    assert event.context == {"trigger.name": "t", "task.id": "t1", "task.name": "prep data", "task.project": "p1",
                             "task.status": "completed"}
    assert event.at == clock.parse_iso("2024-01-01T10:00:00+00:00")
    event = match(on("model", on_publish=True), model(ready=True), since=SINCE)
    assert event.context["model.url"] == "s3://b/m.pt" and event.context["model.task"] == "t9"


SUBSTITUTIONS = [
    ("${task.id}", "t1"),
    ("run-${task.id}-${task.name}", "run-t1-prep"),
    ("${unknown}", "${unknown}"),
    ("$task.id", "$task.id"),
    (3, 3),
    (None, None),
    ({"a": ["${task.id}", 1]}, {"a": ["t1", 1]}),
]


@pytest.mark.parametrize(("value", "expected"), SUBSTITUTIONS)
def test_substitute(value, expected):
    assert substitute(value, {"task.id": "t1", "task.name": "prep"}) == expected


def test_change_query_reads_by_the_indexed_field():
    status = change_query(on(on_status=("completed", "failed"), project="p1"), SINCE, 2, 100)
    assert status == {"last_change": ">=2024-01-01T00:00:00.000+00:00", "order_by": ["last_change", "id"],
                      "page": 2, "page_size": 100, "project": ["p1"], "status": ["completed", "failed"],
                      "only_fields": status["only_fields"]}
    metric = change_query(on(metric="loss", variant="total", threshold=1.0), SINCE, 0, 100)
    assert "last_update" in metric and "last_metrics" in metric["only_fields"] and "status" not in metric
    assert "last_update" in change_query(on("model", on_publish=True), SINCE, 0, 100)

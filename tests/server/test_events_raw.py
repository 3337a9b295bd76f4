"""events.scalar_metrics_iter_raw (paged), get_scalar_metric_data, get_vector_metrics_and_variants,
clear_scroll, delete_for_model and get_task_log's newer fields, against a running server."""
from __future__ import annotations

import pytest

from tests.helpers import ApiFailure


def make_task(api, name="raw"):
    return api.call("tasks.create", {"name": name, "type": "training"})["id"]


def scalar(task, it, value, metric="loss", variant="train", **extra):
    return {"type": "training_stats_scalar", "task": task, "iter": it, "metric": metric, "variant": variant,
            "value": value, **extra}


def failure(api, endpoint, body):
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    assert err.value.code == 400
    return err.value


@pytest.fixture(scope="module")
def series(api):
    task = make_task(api)
    api.events([scalar(task, it, float(it), variant=v, timestamp=1_000_000 + it) for it in range(25)
                for v in ("train", "val")] + [scalar(task, 0, 9.0, metric="other")])
    return task


def raw_pages(api, body):
    pages = []
    while True:
        page = api.call("events.scalar_metrics_iter_raw", body)
        if not page["returned"]:
            return pages, page
        pages.append(page)
        body = {**body, "scroll_id": page["scroll_id"]}


def test_scalar_metrics_iter_raw_pages_every_point_once(api, series):
    body = {"task": series, "metric": {"metric": "loss"}, "batch_size": 7, "count_total": True}
    pages, last = raw_pages(api, body)
    assert set(pages[0]) == {"variants", "returned", "total", "scroll_id"}
    assert all(page["total"] == 50 for page in pages) and last["total"] == 50 and last["variants"] == {}
    points = [(v, x, y) for page in pages for v, data in page["variants"].items()
              for x, y in zip(data["iter"], data["y"], strict=True)]
    assert sorted(points) == sorted((v, it, float(it)) for it in range(25) for v in ("train", "val"))
    for page in pages:  # an iteration is never split between pages
        assert page["variants"]["train"]["iter"] == page["variants"]["val"]["iter"]
        assert page["returned"] == 2 * len(page["variants"]["train"]["iter"])
    again = api.call("events.scalar_metrics_iter_raw", {**body, "scroll_id": last["scroll_id"]})
    assert again["returned"] == 0  # the end stays the end
    second = api.call("events.scalar_metrics_iter_raw", {**body, "key": "timestamp", "scroll_id": pages[0]["scroll_id"]})
    assert second["variants"] == pages[1]["variants"]  # a scroll keeps the axis it was opened on


def test_scalar_metrics_iter_raw_keys_and_filters(api, series):
    by_time = api.call("events.scalar_metrics_iter_raw", {"task": series, "key": "timestamp",
                                                          "metric": {"metric": "loss", "variants": ["val"]}})
    assert list(by_time["variants"]) == ["val"] and by_time["total"] is None  # not counted unless asked
    assert by_time["variants"]["val"]["timestamp"] == [1_000_000 + it for it in range(25)]
    iso = api.call("events.scalar_metrics_iter_raw", {"task": series, "key": "iso_time",
                                                      "metric": {"metric": "other"}})
    assert iso["variants"] == {"train": {"y": [9.0], "iso_time": [iso["variants"]["train"]["iso_time"][0]]}}


def test_scalar_metrics_iter_raw_bad_input(api, series):
    assert "batch_size" in failure(api, "events.scalar_metrics_iter_raw",
                                   {"task": series, "metric": {"metric": "loss"}, "batch_size": -1}).msg
    assert "metric" in failure(api, "events.scalar_metrics_iter_raw", {"task": series}).msg
    assert "metric.metric" in failure(api, "events.scalar_metrics_iter_raw",
                                      {"task": series, "metric": {"variants": ["x"]}}).msg
    assert "key" in failure(api, "events.scalar_metrics_iter_raw",
                            {"task": series, "metric": {"metric": "loss"}, "key": "epoch"}).msg
    assert "scroll_id" in failure(api, "events.scalar_metrics_iter_raw",
                                  {"task": series, "metric": {"metric": "loss"}, "scroll_id": "zz"}).msg


def test_scalar_metric_data_and_vector_names(api, series):
    data = api.call("events.get_scalar_metric_data", {"task": series, "metric": "loss"})
    assert data["total"] == 50 and data["returned"] == 50
    assert [e["iter"] for e in data["events"][:2]] == [24, 24]  # latest first
    assert api.call("events.get_scalar_metric_data", {"task": series, "metric": "loss",
                                                      "scroll_id": data["scroll_id"]})["events"] == []
    assert "metric" in failure(api, "events.get_scalar_metric_data", {"task": series}).msg
    api.events([{"type": "training_stats_vector", "task": series, "iter": 0, "metric": "hist", "variant": v,
                 "values": [1, 2]} for v in ("b", "a")])
    assert api.call("events.get_vector_metrics_and_variants", {"task": series}) == {"metrics": {"hist": ["a", "b"]}}
    hist = api.call("events.vector_metrics_iter_histogram", {"task": series, "metric": "hist", "variant": "a"})
    assert hist["images"] == [{"iter": 0, "values": [1, 2]}]
    assert (hist["metric"], hist["variant"], hist["vectors"], hist["iterations"]) == ("hist", "a", [[1, 2]], [0])


def test_clear_scroll_and_delete_for_model(api, series):
    page = api.call("events.scalar_metrics_iter_raw", {"task": series, "metric": {"metric": "loss"}})
    assert api.call("events.clear_scroll", {"scroll_id": page["scroll_id"]}) == {}
    assert "scroll_id" in failure(api, "events.clear_scroll", {}).msg
    model = api.call("models.create", {"name": "m", "uri": "file:///m.bin"})["id"]
    api.events([scalar(model, 0, 1.0, model_event=True), scalar(model, 1, 2.0, model_event=True)])
    assert api.call("events.delete_for_model", {"model": model}) == {"deleted": 2}
    api.call("models.publish", {"model": model})
    assert failure(api, "events.delete_for_model", {"model": model}).subcode == 201
    assert api.call("events.delete_for_model", {"model": model, "allow_locked": True}) == {"deleted": 0}
    assert failure(api, "events.delete_for_model", {"model": "0" * 32}).subcode == 201
    assert "model" in failure(api, "events.delete_for_model", {}).msg


def test_get_task_log_takes_metrics_and_validates(api):
    task = make_task(api, "log")
    api.events([{"type": "log", "task": task, "timestamp": 1000 + i, "msg": f"l{i}"} for i in range(6000)])
    page = api.call("events.get_task_log", {"task": task, "metrics": [{"metric": "m", "variants": ["v"]}]})
    assert page["returned"] == 5000 and page["total"] == 6000  # the reference server's default batch
    assert "metrics" in failure(api, "events.get_task_log", {"task": task, "metrics": [7]}).msg
    assert "navigate_earlier" in failure(api, "events.get_task_log", {"task": task, "navigate_earlier": {}}).msg

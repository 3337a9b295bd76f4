"""events.* reads over several tasks, against a running server: get_task_metrics,
get_multi_task_metrics, get_multi_task_plots (paged), events.plots, debug_images paging both
ways, and the latest/single values' task fields."""
from __future__ import annotations

import base64
import json

import pytest

from tests.helpers import ApiFailure

SINGLE = -2 ** 31


def make_task(api, name):
    return api.call("tasks.create", {"name": name, "type": "training"})["id"]


def scalar(task, it, value, metric="loss", variant="train"):
    return {"type": "training_stats_scalar", "task": task, "iter": it, "metric": metric, "variant": variant,
            "value": value}


def plot(task, it, metric="conf", variant="m"):
    return {"type": "plot", "task": task, "iter": it, "metric": metric, "variant": variant,
            "plot_str": f'{{"it": {it}}}'}


def image(task, it, metric="img", variant="v"):
    url = f"http://files/{metric}/{variant}/{it}.png"
    return {"type": "training_debug_image", "task": task, "iter": it, "metric": metric, "variant": variant,
            "key": url, "url": url}


def failure(api, endpoint, body):
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    assert err.value.code == 400
    return err.value


@pytest.fixture(scope="module")
def two(api):
    a, b = make_task(api, "cmp-a"), make_task(api, "cmp-b")
    api.events([scalar(a, 0, 1.0), scalar(a, 0, 2.0, variant="val"), image(a, 0), image(a, 0, "zz"),
                plot(a, 0), {"type": "log", "task": a, "msg": "hi"},
                scalar(b, 0, 3.0, metric="acc"), image(b, 0, "img", "w")])
    return a, b


def test_get_task_metrics(api, two):
    a, b = two
    got = api.call("events.get_task_metrics", {"tasks": [b, a], "event_type": "training_debug_image"})
    assert got == {"metrics": [{"task": b, "metrics": ["img"]}, {"task": a, "metrics": ["img", "zz"]}]}
    scalars = api.call("events.get_task_metrics", {"tasks": [a], "event_type": "training_stats_scalar"})
    assert scalars["metrics"][0]["metrics"] == ["loss"]
    assert "tasks" in failure(api, "events.get_task_metrics", {"event_type": "plot"}).msg
    assert "event_type" in failure(api, "events.get_task_metrics", {"tasks": [a], "event_type": "nope"}).msg
    assert failure(api, "events.get_task_metrics", {"tasks": [a, "0" * 32], "event_type": "plot"}).subcode == 101


def test_get_multi_task_metrics(api, two):
    a, b = two
    every = api.call("events.get_multi_task_metrics", {"tasks": [a, b]})["metrics"]
    assert every == [{"metric": "acc", "variants": ["train"]},
                     {"metric": "conf", "variants": ["m"]}, {"metric": "img", "variants": ["v", "w"]},
                     {"metric": "loss", "variants": ["train", "val"]}, {"metric": "zz", "variants": ["v"]}]
    scalars = api.call("events.get_multi_task_metrics", {"tasks": [a, b], "event_type": "training_stats_scalar"})
    assert [m["metric"] for m in scalars["metrics"]] == ["acc", "loss"]
    assert "tasks" in failure(api, "events.get_multi_task_metrics", {"tasks": [5]}).msg


def test_get_multi_task_plots_nests_and_pages(api):
    a, b = make_task(api, "plots-a"), make_task(api, "plots-b")
    api.events([plot(task, it) for task in (a, b) for it in range(700)] + [plot(a, 3, "roc", "r")])
    latest = api.call("events.get_multi_task_plots", {"tasks": [a, b], "iters": 1})
    assert latest["total"] == 3 and latest["returned"] == 3
    conf = latest["plots"]["conf"]["m"]
    assert set(conf) == {a, b} and list(conf[a]) == ["699"]
    assert conf[a]["699"]["name"] == "plots-a" and conf[a]["699"]["plots"][0]["plot_str"] == '{"it": 699}'
    assert list(latest["plots"]["roc"]["r"][a]) == ["3"]  # latest per task and metric
    whole_task = api.call("events.get_multi_task_plots", {"tasks": [a], "iters": 1,
                                                          "last_iters_per_task_metric": False})
    assert list(whole_task["plots"]) == ["conf"]  # the task's latest iteration only
    # every plot of both tasks, a page at a time, each once
    seen, body = [], {"tasks": [a, b], "iters": 1000, "metrics": [{"metric": "conf"}]}
    while True:
        page = api.call("events.get_multi_task_plots", body)
        assert page["total"] == 1400
        if not page["returned"]:
            break
        seen += [(task, int(it)) for task, by_iter in page["plots"]["conf"]["m"].items() for it in by_iter]
        body["scroll_id"] = page["scroll_id"]
    assert len(seen) == 1400 and set(seen) == {(task, it) for task in (a, b) for it in range(700)}
    assert "iters" in failure(api, "events.get_multi_task_plots", {"tasks": [a], "iters": 0}).msg
    assert "metrics" in failure(api, "events.get_multi_task_plots", {"tasks": [a], "metrics": [{"variants": []}]}).msg


def test_events_plots_and_debug_images_page_both_ways(api):
    task = make_task(api, "iterations")
    api.events([plot(task, it) for it in range(7)] + [image(task, it) for it in range(7)])
    for endpoint in ("events.plots", "events.debug_images"):
        body = {"metrics": [{"task": task}], "iters": 3}
        first = api.call(endpoint, body)
        assert set(first) == {"metrics", "scroll_id"} and first["metrics"][0]["task"] == task
        pages = [[i["iter"] for i in first["metrics"][0]["iterations"]]]
        scroll = first["scroll_id"]
        while pages[-1]:
            page = api.call(endpoint, {**body, "scroll_id": scroll})
            pages.append([i["iter"] for i in page["metrics"][0]["iterations"]])
            scroll = page["scroll_id"] if pages[-1] else scroll
        assert pages == [[6, 5, 4], [3, 2, 1], [0], []]
        back = api.call(endpoint, {**body, "scroll_id": scroll, "navigate_earlier": False})
        assert [i["iter"] for i in back["metrics"][0]["iterations"]] == [3, 2, 1]  # later than the last page
        fresh = api.call(endpoint, {**body, "scroll_id": scroll, "refresh": True})
        assert [i["iter"] for i in fresh["metrics"][0]["iterations"]] == [6, 5, 4]
    # a scroll_id issued before both edges were kept (one edge per entry) still pages on
    old = base64.urlsafe_b64encode(json.dumps({"k": "images", "bounds": {f"{task}/": 3}}).encode()).decode()
    older = api.call("events.debug_images", {"metrics": [{"task": task}], "iters": 3, "scroll_id": old.rstrip("=")})
    assert [i["iter"] for i in older["metrics"][0]["iterations"]] == [2, 1, 0]
    first = api.call("events.debug_images", {"metrics": [{"task": task}], "iters": 1})
    assert first["metrics"][0]["iterations"][0]["events"][0]["url"] == "http://files/img/v/6.png"
    assert "metrics" in failure(api, "events.plots", {"metrics": [{"metric": "x"}]}).msg


def test_latest_scalar_values_and_single_values_carry_task_fields(api):
    task = make_task(api, "latest")
    api.events([scalar(task, it, float(it)) for it in range(5)] + [plot(task, 9)]
               + [scalar(task, SINGLE, 0.5, metric="Summary", variant="acc")])
    latest = api.call("events.get_task_latest_scalar_values", {"task": task})
    assert latest["last_iter"] == 9 and latest["name"] == "latest" and latest["status"] == "created"
    assert isinstance(latest["last_timestamp"], int)
    assert latest["metrics"][0]["name"] == "loss" and latest["metrics"][0]["variants"][0]["last_value"] == 4.0
    empty = make_task(api, "empty")
    assert api.call("events.get_task_latest_scalar_values", {"task": empty})["last_iter"] == 0
    single = api.call("events.get_task_single_value_metrics", {"tasks": [task]})["tasks"][0]
    assert single["task_name"] == "latest" and single["values"][0]["value"] == 0.5
    api.events([scalar(task, SINGLE, 7.0, metric="Summary", variant="f1")])
    only = api.call("events.get_task_single_value_metrics", {"tasks": [task], "metrics": [{"metric": "Summary",
                                                                                          "variants": ["f1"]}]})
    assert [v["variant"] for v in only["tasks"][0]["values"]] == ["f1"]  # the compare view asks for some only


def test_multi_task_scalar_histogram_matches_the_schema(api, two):
    a, b = two
    both = api.call("events.multi_task_scalar_metrics_iter_histogram", {"tasks": [a, b]})
    assert set(both) == {"metrics"}
    loss = both["metrics"]["loss"]
    assert set(loss) == {"train", "val"} and set(loss["train"]) == {a}
    assert loss["train"][a] == {"name": "cmp-a", "x": [0], "y": [1.0]}
    assert both["metrics"]["acc"]["train"][b]["name"] == "cmp-b"
    comma = api.call("events.multi_task_scalar_metrics_iter_histogram", {"tasks": f"{a}, {b}",
                                                                         "metrics": [{"metric": "acc"}]})
    assert list(comma["metrics"]) == ["acc"]
    assert failure(api, "events.multi_task_scalar_metrics_iter_histogram", {"tasks": [a, "0" * 32]}).subcode == 101
    assert "tasks" in failure(api, "events.multi_task_scalar_metrics_iter_histogram",
                              {"tasks": [f"{i:032x}" for i in range(101)]}).msg

"""events.*: ingest (add_batch/add), overwrite semantics, task metric summaries, and read-back."""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.helpers import ApiFailure

SINGLE = -2 ** 31


def make_task(api, name="ev"):
    return api.call("tasks.create", {"name": name, "type": "training"})["id"]


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def scalar(task, it, value, metric="loss", variant="train", **extra):
    return {"type": "training_stats_scalar", "task": task, "iter": it, "metric": metric, "variant": variant,
            "value": value, "allow_locked": False, "model_event": False, "method": "get", **extra}


def log(task, ts, msg, level="info", **extra):
    return {"type": "log", "task": task, "timestamp": ts, "level": level, "worker": "w", "msg": msg, **extra}


def all_events(api, task, event_type=None, batch_size=500):
    body = {"task": task, "batch_size": batch_size}
    if event_type:
        body["event_type"] = event_type
    out = []
    while True:
        page = api.call("events.get_task_events", body)
        out.extend(page["events"])
        if not page["events"]:
            return out, page["total"]
        body["scroll_id"] = page["scroll_id"]


def raw_batch(api, payload: bytes, ctype="application/json-lines"):
    return api.raw("events.add_batch", body=payload, headers={"Content-Type": ctype}).json()


# -- ingest ------------------------------------------------------------------------------------


def test_add_batch_round_trips_every_type(api):
    task = make_task(api)
    result = api.events([
        scalar(task, 0, 1.0),
        {"type": "training_stats_vector", "task": task, "iter": 0, "metric": "vec", "variant": "v",
         "values": [1, 2, 3]},
        {"type": "training_debug_image", "task": task, "iter": 0, "metric": "img", "variant": "sample",
         "key": "p/t/img.jpeg", "url": "http://files/p/t/img.jpeg"},
        {"type": "plot", "task": task, "iter": 0, "metric": "hist", "variant": "v", "plot_str": '{"data": []}'},
        log(task, 1000, "hello\nworld"),
    ])
    assert result == {"added": 5, "errors": 0, "errors_info": {}}
    events, total = all_events(api, task)
    assert total == 5
    by_type = {e["type"]: e for e in events}
    assert set(by_type) == {"training_stats_scalar", "training_stats_vector", "training_debug_image", "plot", "log"}
    assert by_type["training_stats_scalar"]["value"] == 1.0
    assert by_type["training_stats_vector"]["values"] == [1, 2, 3]
    assert by_type["training_debug_image"]["url"] == "http://files/p/t/img.jpeg"
    assert by_type["plot"]["plot_str"] == '{"data": []}'
    assert by_type["log"]["msg"] == "hello\nworld"
    for event in events:  # request-format noise is not stored
        assert "method" not in event and "allow_locked" not in event
        assert event["task"] == task and isinstance(event["timestamp"], int)


def test_json_list_body_single_add_and_defaults(api):
    task = make_task(api)
    body = json.dumps([{"type": "log", "task": task, "msg": "no timestamp, no level"}]).encode()
    resp = api.raw("events.add_batch", body=body, headers={"Content-Type": "application/json",
                                                           "X-ClearML-Worker": "host-7"}).json()
    assert resp["data"]["added"] == 1
    api.call("events.add", {"type": "log", "task": task, "msg": "single", "level": "WARNING"})
    events = api.call("events.get_task_log", {"task": task, "order": "asc"})["events"]
    assert [e["msg"] for e in events] == ["no timestamp, no level", "single"]
    assert events[0]["level"] == "info" and events[0]["worker"] == "host-7"
    assert events[0]["timestamp"] > 1_600_000_000_000  # filled in, in milliseconds
    assert events[1]["level"] == "warning"  # levels are case-insensitive, stored lower-case


def test_offline_session_lines_are_lists_of_events(api):
    task = make_task(api)
    payload = "\n".join(json.dumps([log(task, 1, "a"), log(task, 2, "b")]) for _ in range(2)).encode()
    assert raw_batch(api, payload)["data"]["added"] == 4


def test_log_extra_fields_and_iter_survive(api):
    task = make_task(api)
    api.events([log(task, 5, "x", iter=3, custom={"k": 1})])
    event = api.call("events.get_task_log", {"task": task})["events"][0]
    assert event["iter"] == 3 and event["custom"] == {"k": 1}


def test_rereport_overwrites_but_logs_append(api):
    task = make_task(api)
    api.events([scalar(task, 1, 0.5), scalar(task, 1, 0.7), log(task, 10, "same"), log(task, 10, "same")])
    api.events([scalar(task, 1, 0.9)])
    scalars, total = all_events(api, task, "training_stats_scalar")
    assert total == 1 and [e["value"] for e in scalars] == [0.9]
    logs = api.call("events.get_task_log", {"task": task})
    assert logs["total"] == 2
    # the same point of a different event type is a different event
    api.events([{"type": "plot", "task": task, "iter": 1, "metric": "loss", "variant": "train", "plot_str": "{}"}])
    assert all_events(api, task, "training_stats_scalar")[1] == 1


def test_task_last_metrics_and_last_iteration(api):
    task = make_task(api)
    before = api.call("tasks.get_by_id", {"task": task})["task"]["last_update"]
    api.events([scalar(task, 0, 3.0), scalar(task, 1, 1.0), scalar(task, 2, 2.0),
                scalar(task, 5, 0.9, metric="acc", variant="val")])
    api.events([scalar(task, 3, 4.0), scalar(task, SINGLE, 0.8, metric="Summary", variant="f1")])
    doc = api.call("tasks.get_by_id", {"task": task})["task"]
    assert doc["last_iteration"] == 5
    assert doc["last_update"] >= before
    loss = doc["last_metrics"][md5("loss")][md5("train")]
    assert loss == {"metric": "loss", "variant": "train", "value": 4.0, "min_value": 1.0, "min_value_iteration": 1,
                    "max_value": 4.0, "max_value_iteration": 3, "first_value": 3.0, "first_value_iteration": 0,
                    "count": 4, "mean_value": 2.5}
    assert doc["last_metrics"][md5("acc")][md5("val")]["value"] == 0.9
    assert doc["last_metrics"][md5("Summary")][md5("f1")]["value"] == 0.8


def test_partial_batch_reports_errors_and_keeps_good_events(api):
    task = make_task(api)
    result = api.events([log(task, 1, "ok"), {"type": "bogus", "task": task},
                         log("f" * 32, 1, "unknown task"), scalar(task, 2 ** 63, 1.0)])
    assert result["added"] == 1 and result["errors"] == 3
    info = result["errors_info"]
    assert any("invalid event type" in k for k in info)
    assert any("invalid task id" in k and "f" * 32 in k for k in info)
    assert any("64-bit" in k for k in info)


@pytest.mark.parametrize("event, needle", [
    ({"type": "metrics", "msg": "x"}, "invalid event type"),
    ({"type": "log", "msg": "no task"}, "no 'task' field"),
    ({"type": "training_stats_scalar", "iter": 2 ** 63, "metric": "m", "variant": "v", "value": 1}, "64-bit"),
    ({"type": "training_stats_scalar", "iter": "one", "metric": "m", "variant": "v", "value": 1}, "integer"),
    ({"type": "training_stats_scalar", "iter": 1, "metric": "m", "variant": "v", "value": "x"}, "number"),
    ({"type": "log", "level": "loud", "msg": "x"}, "invalid log level"),
])
def test_bad_events_are_refused_with_reason(api, event, needle):
    task = make_task(api)
    if "task" not in event and needle != "no 'task' field":
        event = {**event, "task": task}
    with pytest.raises(ApiFailure) as err:
        api.events([event])
    assert (err.value.code, err.value.subcode) == (400, 131)
    assert "Events not added" in err.value.msg and needle in err.value.msg
    assert err.value.meta["error_data"]["errors_info"]
    assert all_events(api, task)[1] == 0


def test_unknown_task_is_refused(api):
    with pytest.raises(ApiFailure) as err:
        api.events([log("0" * 32, 1, "x")])
    assert (err.value.code, err.value.subcode) == (400, 131)
    assert "invalid task id" in err.value.msg


def test_malformed_json_line_writes_nothing(api):
    task = make_task(api)
    payload = (json.dumps(log(task, 1, "good")) + "\n{not json\n").encode()
    body = raw_batch(api, payload)
    assert body["meta"]["result_code"] == 400
    assert "Malformed JSON" in body["meta"]["result_msg"]
    assert api.call("events.get_task_log", {"task": task})["total"] == 0


def test_oversized_batch_is_refused_whole(api):
    task = make_task(api)
    line = json.dumps({"type": "log", "task": task, "timestamp": 1, "msg": ""})
    body = raw_batch(api, "\n".join([line] * 100_001).encode())
    assert body["meta"]["result_code"] == 400
    assert "exceeds the limit of 100000" in body["meta"]["result_msg"]
    assert api.call("events.get_task_log", {"task": task})["total"] == 0


def test_model_events_go_to_the_model(api):
    model = api.call("models.create", {"name": "m", "uri": "file:///m"})["id"]
    api.events([scalar(model, 4, 0.1, model_event=True)])
    assert api.call("models.get_by_id", {"model": model})["model"]["last_iteration"] == 4
    hist = api.call("events.scalar_metrics_iter_histogram", {"task": model})
    assert hist["loss"]["train"]["y"] == [0.1]


# -- logs --------------------------------------------------------------------------------------


def test_get_task_log_pages_back_and_forth(api):
    task = make_task(api)
    # three batches (chunks) whose time ranges interleave, with a run of equal timestamps
    api.events([log(task, ts, f"m{ts}") for ts in range(0, 60, 2)])
    api.events([log(task, ts, f"m{ts}") for ts in range(1, 60, 2)])
    api.events([log(task, 30, "dup-a"), log(task, 30, "dup-b")])
    everything = [e["msg"] for e in api.call("events.get_task_log", {"task": task, "batch_size": 1000,
                                                                     "order": "asc"})["events"]]
    assert len(everything) == 62
    stamps = [int(m[1:]) if m.startswith("m") else 30 for m in everything]
    assert stamps == sorted(stamps)

    # latest first, walking back; asc within each page; pages never split a timestamp
    seen, from_ts = [], None
    while True:
        body = {"task": task, "batch_size": 7, "navigate_earlier": True, "order": "asc"}
        if from_ts is not None:
            body["from_timestamp"] = from_ts
        page = api.call("events.get_task_log", body)
        assert page["total"] == 62
        if not page["events"]:
            break
        ts = [e["timestamp"] for e in page["events"]]
        assert ts == sorted(ts) and len(ts) >= 7 or from_ts is not None
        seen = page["events"] + seen
        from_ts = ts[0]
    assert [e["msg"] for e in seen] == everything

    # forward from the start, default order (asc for forward paging)
    seen, from_ts = [], -1
    while True:
        page = api.call("events.get_task_log", {"task": task, "batch_size": 9, "navigate_earlier": False,
                                                "from_timestamp": from_ts})
        if not page["events"]:
            break
        seen.extend(page["events"])
        from_ts = page["events"][-1]["timestamp"]
    assert [e["msg"] for e in seen] == everything

    latest = api.call("events.get_task_log", {"task": task, "batch_size": 3})["events"]
    assert [e["msg"] for e in latest] == ["m59", "m58", "m57"]  # default for navigate_earlier: desc


def test_download_and_clear_task_log(api):
    task = make_task(api)
    api.events([log(task, 2_000, "second", level="error"), log(task, 1_000, "first")])
    resp = api.raw("events.download_task_log", {"task": task, "line_type": "text"})
    assert resp.status_code == 200
    lines = resp.text.splitlines()
    assert len(lines) == 2 and lines[0].endswith("INFO first") and "ERROR second" in lines[1]
    resp = api.raw("events.download_task_log", {"task": task, "line_type": "json"})
    assert [json.loads(x)["msg"] for x in resp.text.splitlines()] == ["first", "second"]
    api.events([scalar(task, 0, 1.0)])
    assert api.call("events.clear_task_log", {"task": task}) == {"deleted": 2}
    assert api.call("events.get_task_log", {"task": task})["total"] == 0
    assert all_events(api, task)[1] == 1
    assert api.call("events.delete_for_task", {"task": task}) == {"deleted": 1}
    assert all_events(api, task)[1] == 0


def test_clear_task_log_with_threshold_keeps_recent_lines(api):
    import time
    task = make_task(api)
    now = int(time.time() * 1000)
    api.events([log(task, now - 7_200_000, "old"), log(task, now, "new")])
    assert api.call("events.clear_task_log", {"task": task, "threshold_sec": 3600}) == {"deleted": 1}
    assert [e["msg"] for e in api.call("events.get_task_log", {"task": task})["events"]] == ["new"]


def test_reads_of_unknown_task(api):
    with pytest.raises(ApiFailure) as err:
        api.call("events.get_task_log", {"task": "0" * 32})
    assert (err.value.code, err.value.subcode) == (400, 101)


# -- scroll and scalars ------------------------------------------------------------------------


def test_get_task_events_scrolls_across_log_chunks_and_rows(api):
    task = make_task(api)
    api.events([log(task, i, f"l{i}") for i in range(5)] + [scalar(task, i, float(i)) for i in range(4)])
    api.events([log(task, 10 + i, f"k{i}") for i in range(3)])
    events, total = all_events(api, task, batch_size=2)
    assert total == 12 and len(events) == 12
    assert len({json.dumps(e, sort_keys=True) for e in events}) == 12
    desc = api.call("events.get_task_events", {"task": task, "order": "desc", "batch_size": 100})["events"]
    assert [json.dumps(e, sort_keys=True) for e in desc] == [json.dumps(e, sort_keys=True) for e in reversed(events)]
    only = api.call("events.get_task_events", {"task": task, "event_type": "training_stats_scalar",
                                               "metrics": [{"metric": "loss", "variants": ["train"]}]})
    assert only["total"] == 4
    with pytest.raises(ApiFailure):
        api.call("events.get_task_events", {"task": task, "scroll_id": "garbage!"})


def test_scalar_histogram_and_downsampling(api):
    task = make_task(api)
    api.events([scalar(task, i, float(i)) for i in range(100)] + [scalar(task, i, 1.0, variant="val") for i in range(10)]
               + [scalar(task, SINGLE, 0.5, metric="Summary", variant="acc")])
    full = api.call("events.scalar_metrics_iter_histogram", {"task": task, "key": "iter"})
    assert set(full) == {"loss"}  # single values are not series
    assert full["loss"]["train"]["x"] == list(range(100)) and full["loss"]["train"]["name"] == "train"
    small = api.call("events.scalar_metrics_iter_histogram", {"task": task, "samples": 10})
    train = small["loss"]["train"]
    assert len(train["x"]) == 10 and train["x"][0] == 0
    assert train["y"][0] == pytest.approx(4.5)  # mean of 0..9
    assert small["loss"]["val"]["y"] == [1.0] * 10  # not above `samples`: untouched
    assert sum(train["y"]) / 10 == pytest.approx(49.5)
    only = api.call("events.scalar_metrics_iter_histogram", {"task": task, "metrics": [{"metric": "loss",
                                                                                       "variants": ["val"]}]})
    assert list(only["loss"]) == ["val"]
    by_time = api.call("events.scalar_metrics_iter_histogram", {"task": task, "key": "iso_time", "samples": 5})
    assert isinstance(by_time["loss"]["train"]["x"][0], str)


def test_single_values_latest_values_and_metric_names(api):
    task = make_task(api)
    api.events([scalar(task, SINGLE, 0.93, metric="Summary", variant="acc"), scalar(task, 0, 2.0),
                scalar(task, 1, 4.0)])
    single = api.call("events.get_task_single_value_metrics", {"tasks": [task]})["tasks"]
    assert len(single) == 1 and single[0]["task"] == task
    values = single[0]["values"]
    assert [(v["metric"], v["variant"], v["value"]) for v in values] == [("Summary", "acc", 0.93)]
    assert isinstance(values[0]["timestamp"], int)
    latest = api.call("events.get_task_latest_scalar_values", {"task": task})["metrics"]
    assert latest == [{"name": "loss", "variants": [{"name": "train", "last_value": 4.0, "last_100_value": 3.0}]}]
    names = api.call("events.get_scalar_metrics_and_variants", {"task": task})["metrics"]
    assert names == {"Summary": ["acc"], "loss": ["train"]}  # the reference server's {metric: [variants]}


def test_plots_and_debug_images(api):
    task = make_task(api)
    api.events([{"type": "plot", "task": task, "iter": it, "metric": "conf", "variant": "m", "plot_str": f'{{"i": {it}}}'}
                for it in range(3)])
    plots = api.call("events.get_task_plots", {"task": task, "iters": 2})
    assert plots["total"] == 2 and [p["iter"] for p in plots["plots"]] == [2, 1]
    again = api.call("events.get_task_plots", {"task": task, "iters": 2, "scroll_id": plots["scroll_id"]})
    assert again["plots"] == []

    api.events([{"type": "training_debug_image", "task": task, "iter": it, "metric": "img", "variant": v,
                 "url": f"http://f/{v}/{it}.jpg"} for it in range(4) for v in ("a", "b")])
    first = api.call("events.debug_images", {"metrics": [{"task": task, "metric": "img"}], "iters": 2})
    (entry,) = first["metrics"]
    assert entry["task"] == task and entry["metric"] == "img"
    assert [i["iter"] for i in entry["iterations"]] == [3, 2]
    assert [e["url"] for e in entry["iterations"][0]["events"]] == ["http://f/a/3.jpg", "http://f/b/3.jpg"]
    more = api.call("events.debug_images", {"metrics": [{"task": task, "metric": "img"}], "iters": 2,
                                            "scroll_id": first["scroll_id"]})
    assert [i["iter"] for i in more["metrics"][0]["iterations"]] == [1, 0]
    one = api.call("events.debug_images", {"metrics": [{"task": task, "metric": "img", "variants": ["b"]}]})
    assert [e["variant"] for i in one["metrics"][0]["iterations"] for e in i["events"]] == ["b"]


def test_task_reset_and_delete_remove_events(api):
    task = make_task(api)
    api.events([log(task, 1, "x"), scalar(task, 1, 1.0)])
    api.call("tasks.reset", {"task": task, "force": True})
    assert all_events(api, task)[1] == 0


def test_big_batch_spans_several_chunks_and_pages_exactly(api):
    task = make_task(api)
    # 2500 lines in one request (three stored chunks), many sharing a timestamp, sent out of order
    lines = [log(task, 1_000 + (i // 7), f"n{i}") for i in range(2500)]
    assert api.events(list(reversed(lines)))["added"] == 2500
    seen, from_ts = [], None
    while True:
        body = {"task": task, "batch_size": 300, "order": "asc"}
        if from_ts is not None:
            body["from_timestamp"] = from_ts
        page = api.call("events.get_task_log", body)["events"]
        if not page:
            break
        seen = page + seen
        from_ts = page[0]["timestamp"]
    assert len(seen) == 2500 and {e["msg"] for e in seen} == {f"n{i}" for i in range(2500)}
    assert [e["timestamp"] for e in seen] == sorted(e["timestamp"] for e in seen)
    events, total = all_events(api, task, "log", batch_size=700)
    assert total == 2500 and len(events) == 2500


def test_non_finite_values_become_null_points_outside_statistics(api):
    task = make_task(api)
    payload = "\n".join([json.dumps(scalar(task, 0, 1.0)), json.dumps(scalar(task, 1, 3.0)),
                         json.dumps(scalar(task, 2, float("nan"))),
                         json.dumps({"type": "training_stats_vector", "task": task, "iter": 0, "metric": "v",
                                     "variant": "v", "values": [1.0, float("inf")]})]).encode()
    assert raw_batch(api, payload)["data"]["added"] == 4
    entry = api.call("tasks.get_by_id", {"task": task})["task"]["last_metrics"][md5("loss")][md5("train")]
    assert entry["count"] == 2 and entry["mean_value"] == 2.0 and entry["max_value"] == 3.0
    assert entry["value"] is None  # the latest report: NaN, which JSON cannot carry
    hist = api.call("events.scalar_metrics_iter_histogram", {"task": task})
    assert hist["loss"]["train"]["y"] == [1.0, 3.0, None]
    assert api.call("events.scalar_metrics_iter_histogram", {"task": task, "samples": 2})["loss"]["train"]["y"] == [1.0, 3.0]
    vector = all_events(api, task, "training_stats_vector")[0][0]
    assert vector["values"] == [1.0, None]

"""workers.*: stats charts from status reports, timeouts, tag filters (issue 19)."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.helpers import ApiFailure


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _report(api, worker, ts_ms, stats, task=None):
    body = {"worker": worker, "timestamp": ts_ms, "machine_stats": stats}
    if task:
        body["task"] = task
    api.call("workers.status_report", body)


def _simulate(api, start: int):
    """Two workers report the same metrics one minute apart: the first four times (running a
    task), the second twice."""
    task = api.call("tasks.create", {"name": _name("stats-task"), "type": "training"})["id"]
    busy, idle = _name("busy"), _name("idle")
    for i in range(4):
        ts = (start + 60 * i) * 1000
        _report(api, busy, ts, {"cpu_usage": [10, 20], "memory_used": 50}, task)
        if i < 2:
            _report(api, idle, ts, {"cpu_usage": [5], "memory_used": 30})
    return busy, idle


def _bad(api, endpoint, body):
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    assert err.value.code == 400
    return err.value.msg


def test_get_metric_keys_groups_by_category(api):
    busy, idle = _simulate(api, int(time.time()))
    categories = api.call("workers.get_metric_keys", {"worker_ids": [busy, idle]})["categories"]
    assert {c["name"]: c["metric_keys"] for c in categories} == {"cpu": ["cpu_usage"], "memory": ["memory_used"]}
    with pytest.raises(ApiFailure) as err:
        api.call("workers.get_metric_keys", {"worker_ids": ["no-such-worker"]})
    assert (err.value.code, err.value.subcode) == (400, 1005)
    assert "worker_ids" in _bad(api, "workers.get_metric_keys", {"worker_ids": "x"})


def test_get_stats_buckets_and_aggregations(api):
    start = int(time.time()) // 120 * 120  # on a 40 s bucket's start
    busy, idle = _simulate(api, start)
    items = [{"key": "cpu_usage", "aggregation": "avg"}, {"key": "cpu_usage", "aggregation": "max"},
             {"key": "memory_used", "aggregation": "min"}]
    res = api.call("workers.get_stats", {"items": items, "from_date": start, "to_date": start + 400,
                                         "interval": 1, "worker_ids": [busy, idle]})
    by_worker = {w["worker"]: w["metrics"] for w in res["workers"]}
    assert set(by_worker) == {busy, idle}
    cpu = next(m for m in by_worker[busy] if m["metric"] == "cpu_usage")
    assert "variant" not in cpu
    assert 10 <= len(cpu["dates"]) <= 11  # the interval is raised to 40 s: 400 s -> 10 points
    assert cpu["dates"][0] % 1000 == 0 and cpu["dates"][0] >= start * 1000 - 40_000  # epoch ms
    stats = {s["aggregation"]: s["values"] for s in cpu["stats"]}
    assert set(stats) == {"avg", "max"}
    first = cpu["dates"].index(start * 1000)
    assert stats["avg"][first] == 15.0 and stats["max"][first] == 20.0
    assert all(len(v) == len(cpu["dates"]) for v in stats.values())

    split = api.call("workers.get_stats", {"items": [{"key": "cpu_usage"}], "from_date": start, "to_date": start + 400,
                                           "interval": 1, "split_by_variant": True, "worker_ids": [busy, idle]})
    variants = {w["worker"]: {m["variant"] for m in w["metrics"]} for w in split["workers"]}
    assert variants == {busy: {"0", "1"}, idle: {"0"}}

    none = api.call("workers.get_stats", {"items": [{"key": "cpu_usage"}], "from_date": start,
                                          "to_date": start + 400, "interval": 1, "worker_ids": ["nobody"]})
    assert none == {"workers": []}


def test_get_stats_bad_input_names_the_field(api):
    now = int(time.time())
    assert "items" in _bad(api, "workers.get_stats", {"from_date": now - 10, "to_date": now, "interval": 1})
    assert "items[0].aggregation" in _bad(api, "workers.get_stats", {
        "from_date": now - 10, "to_date": now, "interval": 1, "items": [{"key": "cpu_usage", "aggregation": "p99"}]})
    assert "from_date" in _bad(api, "workers.get_stats", {
        "from_date": now, "to_date": now - 10, "interval": 1, "items": [{"key": "cpu_usage"}]})
    assert "interval" in _bad(api, "workers.get_stats", {
        "from_date": now - 10, "to_date": now, "interval": "x", "items": [{"key": "cpu_usage"}]})


def test_activity_report_counts_reporting_and_busy_workers(api):
    start = int(time.time()) // 60 * 60 + 7200  # a range of its own, away from other tests' reports
    busy, idle = _simulate(api, start)
    res = api.call("workers.get_activity_report", {"from_date": start, "to_date": start + 400, "interval": 60})
    assert set(res) == {"total", "active"}
    for series in res.values():
        assert len(series["dates"]) == len(series["counts"]) == 6
        assert series["dates"][0] == start * 1000
    assert res["total"]["counts"][:4] == [2, 2, 1, 1]
    assert res["active"]["counts"][:4] == [1, 1, 1, 1]
    assert "to_date" in _bad(api, "workers.get_activity_report", {"from_date": start, "interval": 60})


def test_register_timeout_makes_the_worker_vanish(api):
    worker = _name("short")
    api.call("workers.register", {"worker": worker, "timeout": 4})
    assert worker in {w["id"] for w in api.call("workers.get_all", {})["workers"]}
    time.sleep(2.5)
    api.call("workers.status_report", {"worker": worker, "timestamp": int(time.time() * 1000)})
    time.sleep(2.5)
    assert worker in {w["id"] for w in api.call("workers.get_all", {})["workers"]}  # the report renewed it
    time.sleep(2.5)
    with pytest.raises(ApiFailure) as err:  # expired is unregistered, as on the reference server
        api.call("workers.unregister", {"worker": worker})
    assert (err.value.code, err.value.subcode) == (400, 1004)
    assert worker not in {w["id"] for w in api.call("workers.get_all", {})["workers"]}
    assert "timeout" in _bad(api, "workers.register", {"worker": worker, "timeout": -5})


def test_get_all_and_get_count_filter_by_tags_and_last_seen(api):
    tag, system_tag = _name("tag"), _name("sys")
    first, second = _name("tagged"), _name("tagged")
    api.call("workers.register", {"worker": first, "tags": [tag, "application"], "system_tags": [system_tag]})
    api.call("workers.register", {"worker": second, "tags": ["other"], "system_tags": [system_tag]})

    def ids(**body):
        return {w["id"] for w in api.call("workers.get_all", body)["workers"]} & {first, second}

    assert ids(tags=[tag]) == {first}
    assert ids(tags=[tag, "other"]) == {first, second}
    assert ids(tags=[f"-{tag}"]) == {second}
    assert ids(tags=[tag], system_tags=[f"-{system_tag}"]) == set()
    assert ids(worker_pattern=f"{first[:10]}*") == {first}
    assert api.call("workers.get_count", {"system_tags": [system_tag]})["count"] == 2
    assert api.call("workers.get_count", {"system_tags": [system_tag], "tags": ["other"]})["count"] == 1
    time.sleep(2.2)
    assert api.call("workers.get_count", {"system_tags": [system_tag], "last_seen": 2})["count"] == 0
    assert api.call("workers.get_count", {"system_tags": [system_tag]})["count"] == 2
    assert "tags" in _bad(api, "workers.get_all", {"tags": "x"})
    assert "system_tags" in _bad(api, "workers.get_count", {"system_tags": 3})


def test_get_all_shows_live_queue_state_task_time_and_project(api):
    project = api.call("projects.create", {"name": _name("wp")})["id"]
    queue = api.call("queues.create", {"name": _name("wq")})["id"]
    running = api.call("tasks.create", {"name": _name("run"), "type": "training", "project": project})["id"]
    api.call("tasks.started", {"task": running})
    waiting = api.call("tasks.create", {"name": "next-up", "type": "training"})["id"]
    api.call("tasks.enqueue", {"task": waiting, "queue": queue})
    worker = _name("proj")
    api.call("workers.register", {"worker": worker, "queues": [queue]})
    api.call("workers.status_report", {"worker": worker, "task": running, "queue": queue,
                                       "timestamp": int(time.time() * 1000)})
    time.sleep(1.1)
    doc = next(w for w in api.call("workers.get_all", {})["workers"] if w["id"] == worker)
    assert doc["project"]["id"] == project and doc["project"]["name"].startswith("wp-")
    assert doc["queues"][0]["num_tasks"] == 1 and doc["queues"][0]["next_task"] == {"id": waiting, "name": "next-up"}
    assert doc["queue"]["id"] == queue and doc["task"]["running_time"] >= 1000 and "last_iteration" in doc["task"]
    api.call("workers.status_report", {"worker": worker, "timestamp": int(time.time() * 1000)})
    doc = next(w for w in api.call("workers.get_all", {})["workers"] if w["id"] == worker)
    assert "task" not in doc and "queue" not in doc and "project" not in doc  # a report without them clears them


def test_a_real_daemons_reports_feed_the_charts(server, api, tmp_path):
    """The stats come from what `shipyard daemon` already sends: no agent change needed."""
    from tests.agent_helpers import agent_env, start_daemon

    worker = f"{_name('charted')}:0"
    env = agent_env(server, tmp_path, SHIPYARD_STATUS_REPORT_S="1", CLEARML_WORKER_ID=worker)
    daemon = start_daemon(env, [_name("charted-q")], tmp_path / "d.log")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                categories = api.call("workers.get_metric_keys", {"worker_ids": [worker]})["categories"]
                break
            except ApiFailure:
                time.sleep(0.5)
        assert {"cpu", "memory"} <= {c["name"] for c in categories}
        now = time.time()
        res = api.call("workers.get_stats", {"worker_ids": [worker], "from_date": now - 600, "to_date": now + 60,
                                             "interval": 60, "items": [{"key": "memory_used", "aggregation": "max"}]})
        [stats] = res["workers"]
        assert stats["worker"] == worker and max(stats["metrics"][0]["stats"][0]["values"]) > 0
        report = api.call("workers.get_activity_report", {"from_date": now - 600, "to_date": now + 60,
                                                          "interval": 60})
        assert max(report["total"]["counts"]) >= 1
    finally:
        daemon.stop()

"""events.get/next_debug_image_sample and events.get/next_plot_sample (the UI's sample viewers),
against a running server: shapes, walking every sample once in each direction, and bad input."""
from __future__ import annotations

import pytest

from tests.helpers import ApiFailure, start_server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request, tmp_path_factory):
    """The session's SQLite server, and one on PostgreSQL: the viewers read the image URL inside
    the stored document with each backend's JSON operator."""
    if request.param == "sqlite":
        yield request.getfixturevalue("server").api()
        return
    database = request.getfixturevalue("pg_cluster").new_database("shipyard_samples")
    srv = start_server(tmp_path_factory.mktemp("pg-samples"), db=database)
    yield srv.api()
    srv.stop()


def make_task(api, name="samples"):
    return api.call("tasks.create", {"name": name, "type": "training"})["id"]


def image(task, it, metric, variant, url):
    return {"type": "training_debug_image", "task": task, "iter": it, "metric": metric, "variant": variant,
            "key": url, "url": url}


def plot(task, it, metric, variant):
    return {"type": "plot", "task": task, "iter": it, "metric": metric, "variant": variant,
            "plot_str": f'{{"data": [], "it": {it}}}'}


def failure(api, endpoint, body):
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    assert err.value.code == 400
    return err.value.msg


@pytest.fixture(scope="module")
def images(api):
    """img/a reuses 3 file names (iterations 0-2 were overwritten by 3-5); img/b and other/c do not."""
    task = make_task(api)
    events = [image(task, it, "img", "a", f"http://files/a_{it % 3}.png") for it in range(6)]
    events += [image(task, it, "img", "b", f"http://files/b_{it}.png") for it in range(6)]
    events += [image(task, it, "other", "c", f"http://files/c_{it}.png") for it in (1, 4)]
    api.events(events)
    return task


def walk(api, task, scroll_id, earlier, **extra):
    seen = []
    while True:
        page = api.call("events.next_debug_image_sample", {"task": task, "scroll_id": scroll_id,
                                                           "navigate_earlier": earlier, **extra})
        if page["event"] is None:
            return seen
        event = page["event"]
        seen.append((event["iter"], event["metric"], event["variant"]))
        scroll_id = page["scroll_id"]


def test_debug_image_sample_latest_and_valid_range(api, images):
    latest = api.call("events.get_debug_image_sample", {"task": images, "metric": "img", "variant": "a"})
    assert set(latest) == {"scroll_id", "event", "min_iteration", "max_iteration"}
    assert latest["event"]["iter"] == 5 and latest["event"]["url"] == "http://files/a_2.png"
    assert (latest["min_iteration"], latest["max_iteration"]) == (3, 5)  # 0-2 were overwritten
    at = api.call("events.get_debug_image_sample", {"task": images, "metric": "img", "variant": "b", "iteration": 2})
    assert at["event"]["iter"] == 2 and (at["min_iteration"], at["max_iteration"]) == (0, 5)
    gone = api.call("events.get_debug_image_sample", {"task": images, "metric": "img", "variant": "a", "iteration": 1})
    assert gone["event"] is None and (gone["min_iteration"], gone["max_iteration"]) == (3, 5)


def test_next_debug_image_sample_walks_each_image_once(api, images):
    start = api.call("events.get_debug_image_sample", {"task": images, "metric": "img", "variant": "b",
                                                       "iteration": 0})
    forward = walk(api, images, start["scroll_id"], earlier=False)
    valid = [(0, "img", "b"), (1, "img", "b"), (2, "img", "b"), (3, "img", "a"), (3, "img", "b"),
             (4, "img", "a"), (4, "img", "b"), (5, "img", "a"), (5, "img", "b")]
    assert forward == valid[1:]
    end = api.call("events.get_debug_image_sample", {"task": images, "metric": "img", "variant": "b"})
    assert walk(api, images, end["scroll_id"], earlier=True) == list(reversed(valid[:-1]))
    # all metrics: the other metric's images join the walk in (iteration, metric, variant) order
    mixed = api.call("events.get_debug_image_sample", {"task": images, "metric": "img", "variant": "b",
                                                       "iteration": 0, "navigate_current_metric": False})
    assert walk(api, images, mixed["scroll_id"], earlier=False)[:3] == [(1, "img", "b"), (1, "other", "c"),
                                                                        (2, "img", "b")]


def test_next_debug_image_sample_by_iteration(api, images):
    start = api.call("events.get_debug_image_sample", {"task": images, "metric": "img", "variant": "a",
                                                       "iteration": 3})
    assert walk(api, images, start["scroll_id"], earlier=False, next_iteration=True) == [(4, "img", "a"),
                                                                                       (5, "img", "a")]


def test_debug_image_sample_bad_input(api, images):
    assert "variant" in failure(api, "events.get_debug_image_sample", {"task": images, "metric": "img"})
    assert "iteration" in failure(api, "events.get_debug_image_sample",
                                  {"task": images, "metric": "img", "variant": "a", "iteration": "x"})
    assert "scroll_id" in failure(api, "events.next_debug_image_sample", {"task": images})
    assert "scroll_id" in failure(api, "events.next_debug_image_sample", {"task": images, "scroll_id": ""})
    assert "scroll_id" in failure(api, "events.next_debug_image_sample", {"task": images, "scroll_id": "garbage!"})
    other = make_task(api, "other")
    start = api.call("events.get_debug_image_sample", {"task": images, "metric": "img", "variant": "a"})
    assert "scroll_id" in failure(api, "events.next_debug_image_sample",
                                  {"task": other, "scroll_id": start["scroll_id"]})
    plot_scroll = api.call("events.get_plot_sample", {"task": images, "metric": "img"})["scroll_id"]
    assert "scroll_id" in failure(api, "events.next_debug_image_sample", {"task": images, "scroll_id": plot_scroll})
    with pytest.raises(ApiFailure) as err:
        api.call("events.get_debug_image_sample", {"task": "0" * 32, "metric": "img", "variant": "a"})
    assert (err.value.code, err.value.subcode) == (400, 101)


# -- plots -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plots(api):
    task = make_task(api, "plots")
    api.events([plot(task, it, "conf", v) for it in (0, 2, 4) for v in ("y", "x")]
               + [plot(task, it, "roc", "v") for it in (1, 2)])
    return task


def plot_walk(api, task, scroll_id, earlier, **extra):
    seen = []
    while True:
        page = api.call("events.next_plot_sample", {"task": task, "scroll_id": scroll_id, "navigate_earlier": earlier,
                                                    **extra})
        if not page["events"]:
            return seen
        assert len({(e["iter"], e["metric"]) for e in page["events"]}) == 1
        seen.append((page["events"][0]["iter"], page["events"][0]["metric"]))
        scroll_id = page["scroll_id"]


def test_plot_sample_latest_and_at_iteration(api, plots):
    latest = api.call("events.get_plot_sample", {"task": plots, "metric": "conf"})
    assert set(latest) == {"scroll_id", "events", "min_iteration", "max_iteration"}
    assert [(e["iter"], e["variant"]) for e in latest["events"]] == [(4, "x"), (4, "y")]
    assert latest["events"][0]["plot_str"] == '{"data": [], "it": 4}'
    assert (latest["min_iteration"], latest["max_iteration"]) == (0, 4)
    at = api.call("events.get_plot_sample", {"task": plots, "metric": "conf", "iteration": 3})
    assert {e["iter"] for e in at["events"]} == {2}
    none = api.call("events.get_plot_sample", {"task": plots, "metric": "nothing"})
    assert none["events"] == [] and none["min_iteration"] is None


def test_next_plot_sample_walks(api, plots):
    latest = api.call("events.get_plot_sample", {"task": plots, "metric": "conf"})
    assert plot_walk(api, plots, latest["scroll_id"], earlier=True) == [(2, "conf"), (0, "conf")]  # one metric
    first = api.call("events.get_plot_sample", {"task": plots, "metric": "conf", "iteration": 0,
                                                "navigate_current_metric": False})
    everything = [(1, "roc"), (2, "conf"), (2, "roc"), (4, "conf")]
    assert plot_walk(api, plots, first["scroll_id"], earlier=False) == everything
    last = api.call("events.get_plot_sample", {"task": plots, "metric": "conf", "navigate_current_metric": False})
    assert plot_walk(api, plots, last["scroll_id"], earlier=True) == [(2, "roc"), (2, "conf"), (1, "roc"), (0, "conf")]
    assert plot_walk(api, plots, last["scroll_id"], earlier=True, next_iteration=True) == [(2, "roc"), (1, "roc"),
                                                                                          (0, "conf")]


def test_plot_sample_bad_input(api, plots):
    assert "metric" in failure(api, "events.get_plot_sample", {"task": plots})
    assert "navigate_current_metric" in failure(api, "events.get_plot_sample",
                                                {"task": plots, "metric": "conf", "navigate_current_metric": [1]})
    assert "scroll_id" in failure(api, "events.next_plot_sample", {"task": plots, "scroll_id": 7})

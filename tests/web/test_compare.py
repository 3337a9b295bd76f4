"""Comparing experiments on the page, in a real headless Chromium against a real server: the
compare view (overlaid scalars per task, smoothing, log scale, x-axis modes, hyperparameter
differences), the experiments list's chosen columns and bulk actions, and console timestamps."""
from __future__ import annotations

import re
import time
import uuid

import pytest
from playwright.sync_api import expect

from tests.web.conftest import sign_in

ROWS = "#task_rows tr[data-task]"
LOSS = "figure.chart[data-metric='loss / train']"


def _param(section, name, value):
    return {"section": section, "name": name, "value": value, "type": "float"}


@pytest.fixture(scope="module")
def seeded(web_server):
    """Three tasks with scalars (the second started a minute after the first), different
    learning rates and one shared batch size; one of them has console lines."""
    api = web_server.api()
    tag = uuid.uuid4().hex[:6]
    start = int(time.time() * 1000) - 3_600_000
    tasks = {}
    for k, (lr, scale, offset) in enumerate((("0.1", 1.0, 0), ("0.01", 2.0, 60_000), ("0.001", 4.0, 120_000))):
        name = f"sweep{k}-{tag}"
        tasks[name] = api.call("tasks.create", {"name": name, "type": "training", "hyperparams": {
            "Args": {"lr": _param("Args", "lr", lr), "batch": _param("Args", "batch", "64")}}})["id"]
        noisy = [scale * (10 - i) + (3 if i % 2 else -3) for i in range(10)]
        api.events([{"type": "training_stats_scalar", "task": tasks[name], "iter": i, "metric": metric,
                     "variant": variant, "value": value * (1 if metric == "loss" else 0.01),
                     "timestamp": start + offset + 5_000 * i}
                    for metric, variant in (("loss", "train"), ("acc", "val")) for i, value in enumerate(noisy)])
    first = tasks[f"sweep0-{tag}"]
    api.events([{"type": "log", "task": first, "level": "info", "timestamp": start + i, "msg": f"step {i}"}
                for i in range(3)])
    queue = api.call("queues.create", {"name": f"bulk-{tag}"})["id"]
    return {"api": api, "tag": tag, "tasks": tasks, "queue": queue}


@pytest.fixture()
def web(page, web_server):
    sign_in(page, web_server.web_url)
    page.wait_for_selector("#tasks")
    return page


def _filter(page, text, count):
    """Type a name filter and wait until the list shows it (the field is debounced)."""
    page.fill("#filter_name", text)
    expect(page).to_have_url(re.compile(f"name={text}"))
    expect(page.locator(ROWS)).to_have_count(count)


def _paths(page, chart=LOSS):
    return {g.get_attribute("data-series"): g.locator("path").get_attribute("d")
            for g in page.locator(f"{chart} g.series").all()}


def _strokes(page, chart):
    return {g.get_attribute("data-series"): g.locator("path").get_attribute("stroke")
            for g in page.locator(f"{chart} g.series").all()}


def _set_range(page, selector, value):
    page.locator(selector).evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(value))


def _start_x(path: str) -> float:
    return float(re.match(r"M([\d.]+),", path).group(1))


def test_select_rows_then_compare_overlays_each_task(web, seeded, web_server, artifacts_dir):
    page = web
    names = sorted(seeded["tasks"])
    _filter(page, "sweep", 3)
    expect(page.locator("#bulk_compare")).to_be_disabled()
    page.check(f"input[data-select='{seeded['tasks'][names[0]]}']")
    expect(page.locator("#bulk_compare")).to_be_disabled()  # one task is not a comparison
    page.check("#select_all")
    expect(page.locator("#selected_count")).to_have_text("3 selected")
    page.click("#bulk_compare")
    expect(page).to_have_url(re.compile(r"#/compare\?ids="))
    page.locator(LOSS).wait_for()
    # One line per task on every chart, named by the task, each task in its own colour everywhere.
    assert sorted(_paths(page)) == names
    assert sorted(page.locator("#compare_legend .compare-task a").all_inner_texts()) == names
    loss_colours, acc_colours = _strokes(page, LOSS), _strokes(page, "figure.chart[data-metric='acc / val']")
    assert loss_colours == acc_colours and len(set(loss_colours.values())) == 3
    legend = page.locator(f"{LOSS} .legend-item").all_inner_texts()
    assert sorted(t.strip() for t in legend) == names
    _set_range(page, "#compare_smoothing", 0.6)  # the docs' picture (docs/images/compare.png) is this one
    page.screenshot(path=str(artifacts_dir / "compare.png"), clip={"x": 0, "y": 0, "width": 1400, "height": 610})
    assert page.errors == []


def _open_compare(page, web_server, seeded, extra=""):
    ids = ",".join(seeded["tasks"][n] for n in sorted(seeded["tasks"]))
    page.goto(f"{web_server.web_url}/#/compare?ids={ids}{extra}")
    page.locator(LOSS).wait_for()


def test_smoothing_log_scale_and_x_axis_modes_redraw_the_lines(web, seeded, web_server):
    page = web
    _open_compare(page, web_server, seeded)
    raw = _paths(page)
    _set_range(page, "#compare_smoothing", 0.9)
    expect(page.locator("#compare_smoothing_value")).to_have_text("0.90")
    page.wait_for_function("([sel, before]) => document.querySelector(sel + ' g.series path').getAttribute('d') !== before",
                           arg=[LOSS, next(iter(raw.values()))])
    smoothed = _paths(page)
    assert all(smoothed[n] != raw[n] for n in raw)
    _set_range(page, "#compare_smoothing", 0)
    page.wait_for_function("([sel, before]) => document.querySelector(sel + ' g.series path').getAttribute('d') === before",
                           arg=[LOSS, next(iter(raw.values()))])
    # Log scale: the axis says so, and its ticks are 1, 2 and 5 times powers of ten.
    page.check("#compare_log")
    page.locator(f"{LOSS} svg[data-log='1']").wait_for()
    assert _paths(page) != raw
    y_ticks = page.locator(f"{LOSS} .axis text[text-anchor=end]").all_text_contents()
    assert len(y_ticks) >= 2 and set(y_ticks) <= {"1", "2", "5", "10", "20", "50"}, y_ticks
    page.uncheck("#compare_log")
    # x by iteration: every task starts at iteration 0, the left edge.
    assert len({_start_x(p) for p in _paths(page).values()}) == 1
    # Wall time: the later tasks start further right, ticks are clock times.
    page.select_option("#compare_x", "wall")
    expect(page.locator(f"{LOSS} text.label")).to_have_text("wall time")
    wall = _paths(page)
    by_start = sorted(wall, key=lambda n: _start_x(wall[n]))
    assert by_start == sorted(seeded["tasks"]) and _start_x(wall[by_start[0]]) < _start_x(wall[by_start[2]])
    ticks = page.locator(f"{LOSS} .axis text[text-anchor=middle]").all_text_contents()
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in ticks)
    # Relative time: from each task's first point, so all start at the left edge again.
    page.select_option("#compare_x", "relative")
    expect(page.locator(f"{LOSS} text.label")).to_have_text("time since start")
    relative = _paths(page)
    assert len({_start_x(p) for p in relative.values()}) == 1
    assert any(t.endswith("s") for t in page.locator(f"{LOSS} .axis text[text-anchor=middle]").all_text_contents())
    # The choices live in the link.
    _set_range(page, "#compare_smoothing", 0.5)
    page.check("#compare_log")
    assert "x=relative" in page.url and "log=1" in page.url and "smooth=0.5" in page.url
    page.reload()
    page.locator(f"{LOSS} svg[data-log='1']").wait_for()
    expect(page.locator("#compare_x")).to_have_value("relative")
    expect(page.locator("#compare_smoothing")).to_have_value("0.5")
    assert page.errors == []


def test_smoothing_is_the_debiased_moving_average(web):
    values = [1.0, 4.0, None, 2.0, 8.0]
    got = web.evaluate("async (v) => (await import('/static/js/series.js')).smooth(v, 0.6)", values)
    expected, avg, n = [], 0.0, 0
    for v in values:
        if v is None:
            expected.append(None)
            continue
        avg, n = avg * 0.6 + 0.4 * v, n + 1
        expected.append(avg / (1 - 0.6 ** n))
    assert got[2] is None and got[0] == pytest.approx(1.0)
    assert got == pytest.approx(expected)
    rel = web.evaluate("async () => (await import('/static/js/series.js')).xValues([5000, 6000, 9500], 'relative')")
    assert rel == [0, 1, 4.5]


def test_hyperparameters_side_by_side_with_differences(web, seeded, web_server):
    page = web
    _open_compare(page, web_server, seeded)
    page.click("#compare_tabs [data-tab=params]")
    lr, batch = page.locator("tr[data-param='Args/lr']"), page.locator("tr[data-param='Args/batch']")
    expect(lr).to_have_class(re.compile("differs"))
    expect(batch).not_to_have_class(re.compile("differs"))
    assert lr.locator("td.value").all_inner_texts() == ["0.1", "0.01", "0.001"]  # a column per task, URL order
    expect(page.locator("#compare_diff_count")).to_have_text("1 of 2 parameters differ")
    page.check("#compare_only_diff")
    expect(batch).to_be_hidden()
    expect(lr).to_be_visible()
    assert "tab=params" in page.url and "diff=1" in page.url
    assert page.errors == []


def test_a_link_with_one_task_says_what_compare_needs(web, seeded, web_server):
    one = next(iter(seeded["tasks"].values()))
    web.goto(f"{web_server.web_url}/#/compare?ids={one}")
    expect(web.locator(".error-box")).to_contain_text("2 to 10 experiments")


def test_chosen_metric_and_parameter_columns_sort_and_are_remembered(web, seeded):
    page = web
    _filter(page, "sweep", 3)
    page.click("#choose_columns")
    page.locator("#column_chooser label", has_text="loss/train (min)").locator("input").check()
    page.locator("#column_chooser label", has_text="Args/lr").locator("input").check()
    page.click("#dialog_ok")
    loss_th = page.locator("th", has_text="loss/train (min)")
    lr_th = page.locator("th", has_text="Args/lr")
    expect(loss_th).to_be_visible()
    expect(lr_th).to_have_attribute("data-sort", "hyperparams.Args.lr.value")
    lr_col = lr_th.get_attribute("data-column")
    loss_col = loss_th.get_attribute("data-column")

    def column(col):
        return page.locator(f"{ROWS} td[data-column='{col}']").all_inner_texts()

    lr_th.click()  # ascending, as numbers on the server
    expect(page.locator(f"{ROWS} td[data-column='{lr_col}']").first).to_have_text("0.001")
    assert column(lr_col) == ["0.001", "0.01", "0.1"]
    loss_th.click()
    expect(page.locator(f"{ROWS} td[data-column='{loss_col}']").first).to_have_text("-1")
    assert column(loss_col) == ["-1", "1", "5"]
    assert "order=last_metrics." in page.url
    page.reload()
    expect(page.locator("th", has_text="Args/lr")).to_be_visible()  # remembered by the browser
    expect(page.locator(f"{ROWS} td[data-column='{loss_col}']").first).to_have_text("-1")
    assert page.errors == []


def _make(api, name):
    return api.call("tasks.create", {"name": name, "type": "training"})["id"]


def _status(api, task):
    return api.call("tasks.get_by_id", {"task": task})["task"]["status"]


def _select(page, ids):
    for task in ids:
        page.check(f"input[data-select='{task}']")


def test_bulk_actions_change_the_server_and_report_each_row(web, seeded):
    page, api, tag = web, seeded["api"], seeded["tag"]
    drafts = [_make(api, f"bulk{i}-{tag}") for i in range(2)]
    running = _make(api, f"bulkrun-{tag}")
    api.call("tasks.started", {"task": running})
    _filter(page, "bulk", 3)
    # Enqueue, to a chosen queue.
    _select(page, drafts)
    page.click("#bulk_enqueue")
    page.select_option("#bulk_queue", seeded["queue"])
    page.click("#dialog_ok")
    expect(page.locator("#bulk_result")).to_contain_text("2 of 2 enqueued")
    assert [_status(api, t) for t in drafts] == ["queued", "queued"]
    # Abort the queued ones.
    _select(page, drafts)
    page.click("#bulk_abort")
    page.click("#dialog_ok")
    expect(page.locator("#bulk_result")).to_contain_text("2 of 2 aborted")
    assert [_status(api, t) for t in drafts] == ["stopped", "stopped"]
    # Delete: the running one is refused and says why; the other goes.
    _select(page, [drafts[0], running])
    page.click("#bulk_delete")
    page.click("#dialog_ok")
    expect(page.locator("#bulk_result")).to_contain_text("1 of 2 deleted")
    expect(page.locator(f"#bulk_result li[data-task='{running}'][data-ok='0']")).to_contain_text("running")
    expect(page.locator(f"#bulk_result li[data-task='{drafts[0]}'][data-ok='1']")).to_be_visible()
    assert not api.call("tasks.get_all", {"id": [drafts[0]]})["tasks"]
    assert _status(api, running) == "in_progress"
    expect(page.locator(ROWS)).to_have_count(2)
    # Archive: gone from the list, archived on the server.
    _select(page, [drafts[1]])
    page.click("#bulk_archive")
    page.click("#dialog_ok")
    expect(page.locator("#bulk_result")).to_contain_text("1 of 1 archived")
    expect(page.locator(ROWS)).to_have_count(1)
    doc = api.call("tasks.get_by_id", {"task": drafts[1]})["task"]
    assert "archived" in doc["system_tags"]
    # Cancelling a confirm changes nothing.
    _select(page, [running])
    page.click("#bulk_abort")
    page.click("dialog button[value=cancel]")
    assert _status(api, running) == "in_progress"
    assert page.errors == []


def test_console_timestamps_can_be_shown_and_hidden(web, seeded, web_server):
    page = web
    first = seeded["tasks"][f"sweep0-{seeded['tag']}"]
    page.goto(f"{web_server.web_url}/#/task/{first}/console")
    page.locator("#console .line", has_text="step 2").wait_for()
    expect(page.locator("#console .ts")).to_have_count(0)
    page.check("#console_timestamps")
    expect(page.locator("#console .ts")).to_have_count(3)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page.locator("#console .ts").first.inner_text())
    page.reload()
    page.locator("#console .line", has_text="step 2").wait_for()
    expect(page.locator("#console_timestamps")).to_be_checked()  # remembered
    expect(page.locator("#console .ts")).to_have_count(3)
    page.uncheck("#console_timestamps")
    expect(page.locator("#console .ts")).to_have_count(0)
    assert page.errors == []

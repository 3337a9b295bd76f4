"""The Plots and Debug images tabs in a real Chromium, on the events the real clearml SDK 2.1.12
stored for the SDK examples' reports (tests/web/fixtures/sdk_events.json, recorded by
scripts/record_plot_fixtures.py: report_scalar, report_histogram, report_scatter2d/3d,
report_line_plot, report_surface, report_confusion_matrix, report_table from pandas, csv and
rows, report_plotly with plotly 7's typed `bdata` arrays, matplotlib figures, report_image,
report_media), loaded into a fresh server with events.add_batch.

Each kind must draw (SVG/canvas/img/table present), a trace type not drawn here gets its own
"not drawn here" panel, one broken plot leaves the others drawn, and the page logs no error.
One screenshot per plot kind goes to the test artifacts; with SHIPYARD_DOC_IMAGES=1 also to
docs/images/plots-<kind>.png (the pictures docs/web.md shows).
"""
from __future__ import annotations

import base64
import json
import math
import os
import struct
import uuid
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.web.conftest import sign_in

FIXTURES = Path(__file__).parent / "fixtures"
DOC_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def upload(web_server, api, prefix: str, path: Path) -> None:
    key = f"{prefix}/{path.name}"
    resp = requests.post(f"{web_server.files_url}/", files={key: (path.name, path.read_bytes())},
                         headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
    assert resp.status_code == 200, resp.text


def load_fixture_events(web_server, api, task: str) -> dict:
    """The recorded events, for `task`, with their files uploaded to this server."""
    recorded = json.loads((FIXTURES / "sdk_events.json").read_text())
    prefix = f"plots/{task}"
    for path in sorted((FIXTURES / "files").iterdir()):
        upload(web_server, api, prefix, path)
    text = json.dumps(recorded["events"]).replace("{task}", task)
    text = text.replace("{files}", f"{web_server.files_url}/{prefix}")
    api.events(json.loads(text))
    return recorded


def new_task(api, name: str) -> str:
    project = api.call("projects.create", {"name": f"plots-{uuid.uuid4().hex[:6]}", "description": ""})["id"]
    task = api.call("tasks.create", {"name": name, "type": "training", "project": project})["id"]
    api.call("tasks.started", {"task": task})
    return task


@pytest.fixture(scope="module")
def sdk_task(web_server):
    api = web_server.api()
    task = new_task(api, "sdk reports")
    recorded = load_fixture_events(web_server, api, task)
    api.call("tasks.completed", {"task": task, "force": True})
    return {"task": task, "recorded": recorded}


@pytest.fixture()
def web(page, web_server):
    sign_in(page, web_server.web_url)
    page.wait_for_selector("#tasks")
    return page


def panel(page, metric: str, kind: str | None = None):
    sel = f"#plots figure.plot[data-metric^='{metric} /']"
    return page.locator(sel + (f"[data-kind={kind}]" if kind else ""))


def shoot(locator, artifacts_dir: Path, kind: str) -> None:
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(artifacts_dir / f"plots-{kind}.png"))
    if os.environ.get("SHIPYARD_DOC_IMAGES"):
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(DOC_IMAGES / f"plots-{kind}.png"))


def open_plots(page, web_server, task: str) -> None:
    page.goto(f"{web_server.web_url}/#/task/{task}/plots")
    page.locator("#plots figure.plot").first.wait_for()


def test_fixtures_hold_typed_arrays(sdk_task):
    """The recording is what plotly >= 6 sends: at least one array as {bdata, dtype(, shape)}."""
    assert int(sdk_task["recorded"]["reported_by"]["plotly"].split(".")[0]) >= 6
    plots = [e["plot_str"] for e in sdk_task["recorded"]["events"] if e["type"] == "plot"]
    assert any('"bdata"' in p and '"shape"' in p for p in plots)


def test_heatmaps_surfaces_and_contours(web, web_server, sdk_task, artifacts_dir):
    page = web
    open_plots(page, web_server, sdk_task["task"])
    confusion = panel(page, "confusion matrix", "heatmap")
    expect(confusion.locator("g.cells rect")).to_have_count(9)
    assert confusion.locator("text.cell-text", has_text="50").count() == 1  # values written in the cells
    assert confusion.locator("g.axis text", has_text="dog").count() >= 2  # both axes labelled
    assert confusion.locator("g.colorbar rect").count() > 10
    assert "cat, cat: 50" in confusion.locator("g.cells rect").nth(0).locator("title").text_content()
    shoot(confusion, artifacts_dir, "confusion-matrix")
    imshow = panel(page, "plotly heatmap", "heatmap")  # z as a 6x8 float64 bdata array
    expect(imshow.locator("g.cells rect")).to_have_count(48)
    shoot(imshow, artifacts_dir, "heatmap")
    surface = panel(page, "surface", "heatmap")
    expect(surface.locator("g.cells rect")).to_have_count(80)
    expect(surface.locator(".plot-note")).to_have_text("surface drawn as a heatmap")
    shoot(surface, artifacts_dir, "surface")
    contour = panel(page, "plotly contour", "heatmap")  # float32 bdata, shape "12, 10"
    expect(contour.locator("g.cells rect")).to_have_count(120)
    # Hovering a cell shows its value.
    confusion.scroll_into_view_if_needed()
    box = confusion.locator("svg.chart-svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.2)
    expect(confusion.locator(".readout")).to_be_visible()
    assert not page.errors, page.errors


def test_scatter_modes_bars_and_histograms(web, web_server, sdk_task, artifacts_dir):
    page = web
    open_plots(page, web_server, sdk_task["task"])
    markers = panel(page, "scatter markers", "xy")
    expect(markers.locator("circle.marker")).to_have_count(30)
    assert markers.locator("path.line").count() == 0  # markers are not drawn as lines
    shoot(markers, artifacts_dir, "scatter")
    lines = panel(page, "scatter lines", "xy")
    expect(lines.locator("path.line")).to_have_count(1)
    assert lines.locator("circle.marker").count() == 0
    both = panel(page, "scatter lines+markers", "xy")
    expect(both.locator("circle.marker")).to_have_count(30)
    expect(both.locator("path.line")).to_have_count(1)
    labelled = panel(page, "scatter labelled", "xy")
    expect(labelled.locator("text.point-text")).to_have_text(["first", "second", "third"])
    typed = panel(page, "plotly scatter", "xy")  # x uint16, y float64, marker.color int8, all bdata
    expect(typed.locator("circle.marker")).to_have_count(12)
    assert len({typed.locator("circle.marker").nth(i).get_attribute("fill") for i in (0, 11)}) == 2
    line_plot = panel(page, "line plot", "xy")
    expect(line_plot.locator("g.series")).to_have_count(2)
    shoot(line_plot, artifacts_dir, "line")
    grouped = panel(page, "grouped bars", "xy")  # series A and B, reported apart, on one chart
    expect(grouped).to_have_attribute("data-metric", "grouped bars / A, B (iter 0)")
    expect(grouped.locator("g.series")).to_have_count(2)
    expect(grouped.locator("rect.bar")).to_have_count(8)
    xs = [float(grouped.locator("rect.bar").nth(i).get_attribute("x")) for i in (0, 4)]
    assert xs[0] < xs[1]  # side by side: A's first bar left of B's
    shoot(grouped, artifacts_dir, "bar-grouped")
    histogram = panel(page, "histogram", "xy")
    expect(histogram.locator("rect.bar")).to_have_count(10)
    shoot(panel(page, "plotly histogram", "xy"), artifacts_dir, "histogram")
    hbar = panel(page, "plotly bar", "xy")  # orientation "h", x int8 bdata
    expect(hbar.locator("rect.bar")).to_have_count(3)
    heights = {hbar.locator("rect.bar").nth(i).get_attribute("height") for i in range(3)}
    widths = [float(hbar.locator("rect.bar").nth(i).get_attribute("width")) for i in range(3)]
    assert len(heights) == 1 and widths[1] > widths[2] > widths[0]  # lengths 3, 7, 5 along x
    shoot(hbar, artifacts_dir, "bar-horizontal")
    mpl = panel(page, "matplotlib", "xy").filter(has=page.locator("path.line"))
    expect(mpl.locator("circle.marker")).to_have_count(4)
    expect(panel(page, "scatter 3d", "xy").locator("circle.marker")).to_have_count(15)
    assert not page.errors, page.errors


def test_tables_images_and_fallback(web, web_server, sdk_task, artifacts_dir):
    page = web
    open_plots(page, web_server, sdk_task["task"])
    pandas_table = panel(page, "table pandas", "table")
    expect(pandas_table.locator("th")).to_have_text(["animal", "num_legs", "num_wings", "seen"])
    expect(pandas_table.locator("tbody tr")).to_have_count(4)
    assert pandas_table.locator("tbody tr").first.locator("td").all_text_contents() == ["falcon", "2", "2", "10"]
    shoot(pandas_table, artifacts_dir, "table")
    csv_table = panel(page, "table csv", "table")
    expect(csv_table.locator("td", has_text="gamma")).to_have_count(1)
    expect(panel(page, "table rows", "table").locator("tbody tr")).to_have_count(2)
    rgb = panel(page, "plotly image", "image").locator("img.plot-image")  # an image trace's source
    rgb.scroll_into_view_if_needed()
    expect(rgb).to_have_js_property("naturalWidth", 12)
    mpl_image = panel(page, "matplotlib", "image").locator("img.plot-image")  # layout.images, a file
    assert mpl_image.get_attribute("src").startswith("/files/")
    mpl_image.scroll_into_view_if_needed()
    expect(mpl_image).not_to_have_js_property("naturalWidth", 0)
    shoot(panel(page, "matplotlib", "image"), artifacts_dir, "image")
    pie = panel(page, "plotly pie", "fallback")
    expect(pie.locator(".not-drawn")).to_have_text("not drawn here: pie")
    shoot(pie, artifacts_dir, "fallback")
    assert not page.errors, page.errors


def test_debug_images_and_media(web, web_server, sdk_task, artifacts_dir):
    page = web
    page.goto(f"{web_server.web_url}/#/task/{sdk_task['task']}/images")
    images = page.locator("#debug_images figure.image img")
    expect(images).to_have_count(3)  # two report_image, one matplotlib report_image=True
    for i in range(3):
        images.nth(i).scroll_into_view_if_needed()
        expect(images.nth(i)).not_to_have_js_property("naturalWidth", 0)
    expect(page.locator("#debug_images iframe.sample")).to_have_count(1)  # report_media of an .html
    audio = page.locator("#debug_images a.sample-file")  # report_media of a .wav: a download, not a broken <img>
    expect(audio).to_have_text("⤓ audio_tone_00000000.wav")
    assert audio.get_attribute("href").startswith("/files/") and audio.get_attribute("href").endswith("?download=1")
    assert not page.errors, page.errors


def test_scalars_and_single_value(web, web_server, sdk_task):
    """report_scalar's loss curves and report_single_value, from the same recording."""
    page = web
    page.goto(f"{web_server.web_url}/#/task/{sdk_task['task']}/scalars")
    chart = page.locator("#scalar_charts figure.chart[data-metric=loss]")
    expect(chart.locator("g.series")).to_have_count(2)
    expect(page.locator("#single_values th", has_text="accuracy")).to_have_count(1)
    assert not page.errors, page.errors


# -- typed arrays and broken plots -----------------------------------------------------------


def typed(fmt: str, dtype: str, values, shape=None) -> dict:
    spec = {"dtype": dtype, "bdata": base64.b64encode(struct.pack(f"<{len(values)}{fmt}", *values)).decode()}
    if shape is not None:
        spec["shape"] = shape
    return spec


DTYPES = [("b", "i1", [-128, 0, 127]), ("B", "u1", [0, 7, 255]), ("h", "i2", [-32768, 1, 32767]),
          ("H", "u2", [0, 2, 65535]), ("i", "i4", [-2 ** 31, 3, 2 ** 31 - 1]), ("I", "u4", [0, 4, 2 ** 32 - 1]),
          ("f", "f4", [0.5, -1.25, 3.0]), ("d", "f8", [0.1, -2.5, 1e300]), ("B", "u1c", [1, 2, 3]),
          ("d", "float64", [1.5, 2.5, 3.5]), ("b", "int8", [-1, -2, -3])]


def test_typed_arrays_decode_every_dtype(web):
    page = web
    cases = [typed(fmt, dtype, values) for fmt, dtype, values in DTYPES]
    cases.append(typed("d", "f8", [1, 2, 3, 4, 5, 6], "2, 3"))  # plotly.py writes str(shape)[1:-1]
    cases.append(typed("h", "i2", [1, 2, 3, 4, 5, 6], [3, 2]))
    cases.append(typed("B", "u1", list(range(12)), "2, 2, 3"))  # an RGB image's z
    decoded = page.evaluate("""async (cases) => {
        const m = await import('/static/js/plotly_data.js');
        const figure = m.decodeFigure({data: [{x: cases[0], marker: {color: cases[1]}}], layout: {}});
        let bad = null;
        try { m.decodeTyped({dtype: 'f8', bdata: 'AAAA'}); } catch (err) { bad = err.message; }
        return {all: cases.map(m.decodeTyped), nested: figure.data[0], bad};
    }""", cases)
    expected = [[round(v, 6) for v in values] for _, _, values in DTYPES]
    assert [[round(v, 6) for v in vals] for vals in decoded["all"][:len(DTYPES)]] == expected
    assert decoded["all"][len(DTYPES)] == [[1, 2, 3], [4, 5, 6]]
    assert decoded["all"][len(DTYPES) + 1] == [[1, 2], [3, 4], [5, 6]]
    assert decoded["all"][len(DTYPES) + 2] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    assert decoded["nested"] == {"x": [-128, 0, 127], "marker": {"color": [0, 7, 255]}}
    assert "not a whole number" in decoded["bad"]


WAVES = [math.sin(i / 9) * math.cos(j / 14) for i in range(150) for j in range(150)]


def test_one_broken_plot_leaves_the_others_drawn(web, web_server, artifacts_dir):
    page, api = web, web_server.api()
    task = new_task(api, "broken plots")
    good = {"data": [{"type": "scatter", "mode": "markers", "x": [1, 2, 3], "y": typed("d", "f8", [3, 1, 2])}]}
    mixed = {"data": [{"type": "scatter", "x": typed("d", "zz", [1.0]), "y": [1]},
                      {"type": "sankey", "node": {"label": ["a", "b"]}},
                      {"type": "heatmap", "z": typed("f", "f4", WAVES, "150, 150")}]}
    events = [("a good", good), ("b mixed", mixed), ("c bad json", None), ("d empty", {"data": [], "layout": {}})]
    api.events([{"type": "plot", "task": task, "iter": 0, "metric": metric, "variant": "v",
                 "plot_str": "{not json" if fig is None else json.dumps(fig)} for metric, fig in events])
    open_plots(page, web_server, task)
    expect(panel(page, "a good", "xy").locator("circle.marker")).to_have_count(3)
    expect(panel(page, "b mixed", "error")).to_contain_text("unknown typed array dtype")
    expect(panel(page, "b mixed", "fallback").locator(".not-drawn")).to_have_text("not drawn here: sankey")
    big = panel(page, "b mixed", "heatmap")  # 22,500 cells: one image, not 22,500 rectangles
    expect(big.locator("image.cells")).to_have_count(1)
    assert big.locator("g.cells rect").count() == 0
    shoot(big, artifacts_dir, "heatmap-large")
    expect(panel(page, "c bad json", "error")).to_contain_text("does not parse")
    expect(panel(page, "d empty", "empty")).to_have_count(1)
    assert not [e for e in page.errors if "is not a function" in e]
    assert not page.errors, page.errors


def test_stacked_bars_log_axis_and_large_scatter(web, web_server):
    """Figures as plotly.py writes them for barmode="stack", a log y axis, and a scattergl of
    50,000 points (drawn as a line plus at most 5,000 markers, so the page stays usable)."""
    page, api = web, web_server.api()
    task = new_task(api, "layouts")
    stacked = {"data": [{"type": "bar", "name": "a", "x": ["p", "q"], "y": typed("b", "i1", [2, 3])},
                        {"type": "bar", "name": "b", "x": ["p", "q"], "y": typed("b", "i1", [4, 1])}],
               "layout": {"barmode": "stack"}}
    log = {"data": [{"type": "scatter", "mode": "lines", "x": [1, 2, 3, 4], "y": [1, 10, 100, 1000]}],
           "layout": {"yaxis": {"type": "log", "title": {"text": "loss"}}}}
    big = {"data": [{"type": "scattergl", "mode": "lines+markers", "x": typed("i", "i4", list(range(50_000))),
                     "y": typed("f", "f4", [math.sin(i / 500) for i in range(50_000)])}]}
    api.events([{"type": "plot", "task": task, "iter": 0, "metric": metric, "variant": "v", "plot_str": json.dumps(fig)}
                for metric, fig in (("stacked", stacked), ("log", log), ("big", big))])
    open_plots(page, web_server, task)
    bars = panel(page, "stacked", "xy").locator("rect.bar")
    expect(bars).to_have_count(4)
    first_a, first_b = bars.nth(0), bars.nth(2)  # both at "p": b sits on top of a, same x
    assert first_a.get_attribute("x") == first_b.get_attribute("x")
    assert float(first_b.get_attribute("y")) + float(first_b.get_attribute("height")) == pytest.approx(
        float(first_a.get_attribute("y")), abs=0.5)
    ticks = panel(page, "log", "xy").locator("g.axis text").all_text_contents()
    assert {"1", "10", "100", "1000", "loss"} <= set(ticks)
    big_panel = panel(page, "big", "xy")
    expect(big_panel.locator("path.line")).to_have_count(1)
    assert 4000 <= big_panel.locator("circle.marker").count() <= 5000
    # A legend entry hides its series.
    legend = panel(page, "stacked", "xy").locator(".legend-item", has_text="b")
    legend.click()
    expect(panel(page, "stacked", "xy").locator("g.series[data-series=b]")).to_have_attribute("visibility", "hidden")
    assert not page.errors, page.errors

"""The events reads the official web UI makes, called through the clearml SDK 2.1.12's own typed
request and response models (its APIClient parses each answer and fails on a wrong type), and
the SDK's Task.get_debug_samples, against a real Shipyard server (issue 19)."""
from __future__ import annotations

import json
import textwrap

import pytest

from tests.compat.conftest import bad_lines, clean_env
from tests.compat.test_sdk import _result_line, run_sdk

pytestmark = pytest.mark.compat

EVENTS_PY = textwrap.dedent("""\
    import json
    import numpy as np
    from clearml import Task
    from clearml.backend_api.services import events

    t = Task.init(project_name="compat-events", task_name="reported")
    lg = t.get_logger()
    for i in range(4):
        lg.report_scalar("loss", "train", 1.0 / (i + 1), i)
        lg.report_image("img", "sample", iteration=i, image=np.full((8, 8, 3), i * 40, dtype=np.uint8))
        lg.report_scatter2d("scatter", "s", iteration=i, scatter=[[0, i], [1, i + 1]])
    t.flush(wait_for_uploads=True)
    def send(request):  # the SDK's typed request; a wrong answer type prints "Failed parsing response"
        return Task._send(Task._get_default_session(), request).response_data

    out = {"task": t.id}
    out["metrics"] = send(events.GetTaskMetricsRequest(tasks=[t.id], event_type="training_debug_image"))["metrics"]
    sample = send(events.GetDebugImageSampleRequest(task=t.id, metric="img", variant="sample"))
    out["sample"] = [sample["event"]["iter"], sample["min_iteration"], sample["max_iteration"], sample["event"]["url"]]
    prev = send(events.NextDebugImageSampleRequest(task=t.id, scroll_id=sample["scroll_id"], navigate_earlier=True))
    out["prev_iter"] = prev["event"]["iter"]
    plot = send(events.GetPlotSampleRequest(task=t.id, metric="scatter"))
    out["plot"] = [[e["iter"] for e in plot["events"]], plot["min_iteration"], plot["max_iteration"]]
    nxt = send(events.NextPlotSampleRequest(task=t.id, scroll_id=plot["scroll_id"], navigate_earlier=True))
    out["plot_prev"] = [e["iter"] for e in nxt["events"]]
    raw = send(events.ScalarMetricsIterRawRequest(task=t.id, metric=events.MetricVariants(metric="loss"),
                                                  count_total=True, batch_size=3))
    out["raw"] = [raw["returned"], raw["total"], raw["variants"]["train"]["iter"]]
    multi = send(events.GetMultiTaskPlotsRequest(tasks=[t.id], iters=1))
    out["multi"] = sorted(multi["plots"]["scatter"]["s"][t.id])
    plots = send(events.PlotsRequest(metrics=[events.TaskMetricVariants(task=t.id, metric="scatter")], iters=2))
    out["plots"] = [i["iter"] for i in plots["metrics"][0]["iterations"]]
    out["debug_samples"] = sorted(e["iter"] for e in t.get_debug_samples("img", "sample", n_last_iterations=3))
    print("RESULT " + json.dumps(out, default=str), flush=True)
""")


def test_ui_events_reads_through_the_sdk_models(server, sdk_python, tmp_path):
    script = tmp_path / "events.py"
    script.write_text(EVENTS_PY)
    env = clean_env(tmp_path / "home", server.env())
    output = run_sdk(sdk_python, script, [], cwd=tmp_path, env=env)
    assert not bad_lines(output)
    out = json.loads(_result_line(output, "RESULT"))
    assert out["metrics"] == [{"task": out["task"], "metrics": ["img"]}]
    assert out["sample"][:3] == [3, 0, 3] and out["sample"][3].startswith(server.files_url)
    assert out["prev_iter"] == 2
    assert out["plot"] == [[3], 0, 3] and out["plot_prev"] == [2]
    assert out["raw"] == [3, 4, [0, 1, 2]]
    assert out["multi"] == ["3"]
    assert out["plots"] == [3, 2]
    assert out["debug_samples"] == [1, 2, 3]

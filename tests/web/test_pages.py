"""The page's views in a real headless Chromium, on data recorded through the API (no agent):
the experiments list (filters, sorting, live status), a task's parts (diff, console search and
follow, plots, debug images, artifact downloads, requirements), draft editing, the task actions,
and the queues and workers pages."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.helpers import ApiFailure
from tests.web.conftest import sign_in

PNG_1x1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e5273ee1"
                        "0000000049454e44ae426082")
DIFF = ("diff --git a/train.py b/train.py\nindex 1111111..2222222 100644\n--- a/train.py\n+++ b/train.py\n"
        "@@ -1,3 +1,3 @@\n import sys\n-LR = 0.1\n+LR = 0.5\n print(LR)\n")


@pytest.fixture(scope="module")
def seeded(web_server):
    """Two projects with tasks in several states, a rich completed task, a queue with three drafts."""
    api = web_server.api()
    tag = uuid.uuid4().hex[:6]
    p1 = api.call("projects.create", {"name": f"vision-{tag}", "description": ""})["id"]
    p2 = api.call("projects.create", {"name": f"nlp-{tag}", "description": ""})["id"]

    def task(name, project, **fields):
        return api.call("tasks.create", {"name": name, "type": "training", "project": project, **fields})["id"]

    rich = task(f"resnet-{tag}", p1, tags=["baseline"], script={
        "repository": "https://example.com/vision.git", "branch": "main", "version_num": "a1b2c3d4",
        "entry_point": "train.py", "working_dir": ".", "diff": DIFF,
        "requirements": {"pip": "torch==2.3.0\nnumpy==1.26.4\n"}},
        hyperparams={"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.5", "type": "float"}}},
        configuration={"model": {"name": "model", "value": "layers = 3", "type": "dictionary"}})
    api.call("tasks.started", {"task": rich})
    files_path = f"vision/resnet.{rich}"
    for path, content in ((f"{files_path}/artifacts/stats/stats.json", b'{"a": 1}'),
                          (f"{files_path}/metrics/sample/img/sample_img_00000000.png", PNG_1x1)):
        resp = requests.post(f"{web_server.files_url}/", files={path: (path.rsplit("/", 1)[-1], content)},
                             headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
        assert resp.status_code == 200, resp.text
    api.call("tasks.add_or_update_artifacts", {"task": rich, "force": True, "artifacts": [{
        "key": "stats", "type": "dict", "mode": "output", "uri": f"{web_server.files_url}/{files_path}/artifacts/stats/stats.json",
        "content_size": 8, "hash": "abc", "timestamp": int(time.time()), "type_data": {"preview": '{"a": 1}'}}]})
    now = int(time.time() * 1000)
    api.events([{"type": "log", "task": rich, "level": "info", "timestamp": now + i, "msg": f"epoch {i} loss {1 / (i + 1):.3f}"}
                for i in range(30)] + [
        {"type": "log", "task": rich, "level": "error", "timestamp": now + 40, "msg": "warning: slow disk"},
        {"type": "training_stats_scalar", "task": rich, "iter": 0, "metric": "acc", "variant": "val", "value": 0.5},
        {"type": "training_stats_scalar", "task": rich, "iter": 1, "metric": "acc", "variant": "val", "value": 0.7},
        {"type": "plot", "task": rich, "iter": 1, "metric": "confusion", "variant": "hist", "plot_str": json.dumps(
            {"data": [{"type": "bar", "x": ["cat", "dog"], "y": [3, 5], "name": "count"}], "layout": {}})},
        {"type": "plot", "task": rich, "iter": 1, "metric": "pr", "variant": "curve", "plot_str": json.dumps(
            {"data": [{"type": "scatter", "x": [0, 0.5, 1], "y": [1, 0.8, 0.2], "name": "pr"}],
             "layout": {"xaxis": {"title": "recall"}}})},
        {"type": "training_debug_image", "task": rich, "iter": 0, "metric": "sample", "variant": "img",
         "url": f"{web_server.files_url}/{files_path}/metrics/sample/img/sample_img_00000000.png"},
    ])
    draft = task(f"bert-{tag}", p2, tags=["nlp"])
    failed = task(f"gpt-{tag}", p2)
    api.call("tasks.started", {"task": failed})
    api.call("tasks.failed", {"task": failed, "status_reason": "boom"})
    queue = api.call("queues.create", {"name": f"gpu-{tag}"})["id"]
    queued = [task(f"q{i}-{tag}", p1) for i in range(3)]
    for t in queued:
        api.call("tasks.enqueue", {"task": t, "queue": queue})
    return {"api": api, "tag": tag, "p1": p1, "p2": p2, "rich": rich, "draft": draft, "failed": failed,
            "queue": queue, "queued": queued}


@pytest.fixture()
def web(page, web_server):
    sign_in(page, web_server.web_url)
    page.wait_for_selector("#tasks")
    return page


ROWS = "#task_rows tr[data-task]"


def rows(page) -> list[str]:
    return [row.get_attribute("data-name") for row in page.locator(ROWS).all()]


def test_list_filters_sorting_and_live_status(web, seeded, artifacts_dir):
    page, api, tag = web, seeded["api"], seeded["tag"]
    page.fill("#filter_name", tag)
    expect(page.locator(ROWS)).to_have_count(6)
    # Status filter.
    page.check("[data-status-filter=failed]")
    expect(page.locator(ROWS)).to_have_count(1)
    assert rows(page) == [f"gpt-{tag}"]
    page.uncheck("[data-status-filter=failed]")
    # Project filter (from the side list) and tags.
    page.click(f"[data-project='{seeded['p2']}']")
    expect(page.locator(ROWS)).to_have_count(2)
    assert sorted(rows(page)) == [f"bert-{tag}", f"gpt-{tag}"]
    page.fill("#filter_tags", "nlp")
    expect(page.locator(ROWS)).to_have_count(1)
    assert rows(page) == [f"bert-{tag}"]
    assert "tags=nlp" in page.url and f"project={seeded['p2']}" in page.url  # filters live in the URL
    page.fill("#filter_tags", "")
    page.click("[data-project='']")
    # Sorting by name, both ways.
    page.click("th[data-sort=name]")
    expect(page.locator(ROWS).first).to_have_attribute("data-name", f"bert-{tag}")
    page.click("th[data-sort=name]")
    expect(page.locator(ROWS).first).to_have_attribute("data-name", f"resnet-{tag}")
    # A status change elsewhere shows up without reloading.
    draft_row = page.locator(f"tr[data-task='{seeded['draft']}']")
    draft_row.locator("[data-status=created]").wait_for()
    api.call("tasks.started", {"task": seeded["draft"]})
    draft_row.locator("[data-status=in_progress]").wait_for(timeout=10_000)
    page.screenshot(path=str(artifacts_dir / "pages-list.png"), full_page=True)
    api.call("tasks.stopped", {"task": seeded["draft"]})
    api.call("tasks.reset", {"task": seeded["draft"]})
    assert not page.errors, page.errors


def test_task_parts(web, web_server, seeded, artifacts_dir):
    page, api, rich = web, seeded["api"], seeded["rich"]
    page.goto(f"{web_server.web_url}/#/task/{rich}/script")
    page.locator("#diff .line.add", has_text="+LR = 0.5").wait_for()
    assert page.locator("#diff .line.del", has_text="-LR = 0.1").count() == 1
    page.click("[data-tab=requirements]")
    assert "torch==2.3.0" in page.locator("#req_pip").inner_text()
    page.click("[data-tab=configuration]")
    assert page.locator("tr[data-param='Args/lr'] td.value").inner_text() == "0.5"
    assert "layers = 3" in page.locator("[data-config=model] pre").inner_text()

    # Console: search highlights and filters; new lines arrive while following.
    page.click("[data-tab=console]")
    page.locator("#console", has_text="epoch 29").wait_for()
    page.fill("#console_search", "loss 0.5")
    expect(page.locator("#console mark")).to_have_count(1)
    page.check("#console_only")
    expect(page.locator("#console .line")).to_have_count(1)
    page.uncheck("#console_only")
    page.fill("#console_search", "")
    assert page.locator("#console .lvl-error", has_text="slow disk").count() == 1
    page.check("#console_follow")
    api.events([{"type": "log", "task": rich, "level": "info", "timestamp": int(time.time() * 1000) + 1000,
                 "msg": "a line that came later"}])
    page.locator("#console", has_text="a line that came later").wait_for(timeout=10_000)
    page.screenshot(path=str(artifacts_dir / "pages-console.png"), full_page=True)

    page.click("[data-tab=plots]")
    page.locator("#plots figure.chart[data-metric^='confusion'] rect").first.wait_for()
    page.locator("#plots figure.chart[data-metric^='pr'] g.series").wait_for()
    page.click("[data-tab=images]")
    img = page.locator("#debug_images img")
    img.wait_for()
    expect(img).to_have_js_property("naturalWidth", 1)
    assert img.get_attribute("src").startswith("/files/")

    # Artifacts download through the page's origin.
    page.click("[data-tab=artifacts]")
    link = page.locator("tr[data-artifact=stats] a.download")
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == "stats.json"
    assert Path(download.path()).read_bytes() == b'{"a": 1}'
    page.screenshot(path=str(artifacts_dir / "pages-artifacts.png"), full_page=True)
    assert not page.errors, page.errors


def test_edit_a_draft(web, web_server, seeded):
    page, api = web, seeded["api"]
    draft = seeded["draft"]
    page.goto(f"{web_server.web_url}/#/task/{draft}/edit")
    page.wait_for_selector("#edit_form")
    page.click("#add_param")
    page.locator("#edit_params tr").last.locator(".p-name").fill("epochs")
    page.locator("#edit_params tr").last.locator(".p-value").fill("7")
    page.click("#add_config")
    block = page.locator("#edit_configs .config-edit").last
    block.locator(".c-name").fill("model")
    block.locator(".c-value").fill("depth = 12")
    page.fill("#edit_image", "python:3.11-slim")
    page.fill("#edit_pip", "numpy==1.26.4\n")
    page.click("#edit_save")
    expect(page.locator("#edit_state")).to_have_text("Saved")  # exactly: "Unsaved changes" contains "saved"
    doc = api.call("tasks.get_by_id", {"task": draft})["task"]
    assert doc["hyperparams"]["Args"]["epochs"]["value"] == "7"
    assert doc["configuration"]["model"]["value"] == "depth = 12"
    assert doc["container"]["image"] == "python:3.11-slim"
    assert doc["script"]["requirements"]["pip"] == "numpy==1.26.4\n"
    assert not page.errors, page.errors


def test_task_actions(web, web_server, seeded):
    page, api = web, seeded["api"]
    task = api.call("tasks.create", {"name": f"actions-{seeded['tag']}", "type": "training", "project": seeded["p1"]})["id"]
    page.goto(f"{web_server.web_url}/#/task/{task}/overview")
    page.wait_for_selector("#task_name [data-status=created]")
    page.select_option("#queue_select", label=f"gpu-{seeded['tag']}")
    page.click("#action_enqueue")
    page.wait_for_selector("#task_name [data-status=queued]")
    page.click("#action_abort")
    page.click("#dialog_ok")
    page.wait_for_selector("#task_name [data-status=stopped]")
    page.click("#action_reset")
    page.click("#dialog_ok")
    page.wait_for_selector("#task_name [data-status=created]")
    page.click("#action_archive")
    page.wait_for_selector("#action_unarchive")
    assert "archived" in api.call("tasks.get_by_id", {"task": task})["task"]["system_tags"]
    # Archived tasks leave the list unless asked for.
    page.goto(f"{web_server.web_url}/#/tasks?name=actions-{seeded['tag']}")
    page.locator("#task_rows td.empty").wait_for()
    page.check("#filter_archived")
    page.wait_for_selector(f"tr[data-task='{task}']")
    page.click(f"tr[data-task='{task}'] a.task-name")
    page.click("#action_unarchive")
    page.wait_for_selector("#action_archive")
    assert "archived" not in api.call("tasks.get_by_id", {"task": task})["task"]["system_tags"]
    assert not page.errors, page.errors


def test_queues_page(web, web_server, seeded, artifacts_dir):
    page, api = web, seeded["api"]
    queue, (a, b, c) = seeded["queue"], seeded["queued"]

    def order() -> list[str]:
        return [e["task"] for e in api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"]]

    page.click("nav a[data-nav=queues]")
    card = page.locator(f"section.queue[data-queue='gpu-{seeded['tag']}']")
    card.locator(f"tr[data-entry='{c}']").wait_for()
    page.screenshot(path=str(artifacts_dir / "pages-queues.png"), full_page=True)
    card.locator(f"tr[data-entry='{c}'] [data-action=up]").click()
    entries = card.locator("tr[data-entry]")
    expect(entries.nth(1)).to_have_attribute("data-entry", c)
    assert order() == [a, c, b]
    card.locator(f"tr[data-entry='{a}'] [data-action=down]").click()
    expect(entries.first).to_have_attribute("data-entry", c)
    assert order() == [c, a, b]
    card.locator(f"tr[data-entry='{b}'] [data-action=remove]").click()
    card.locator(f"tr[data-entry='{b}']").wait_for(state="detached")
    assert order() == [c, a]
    assert api.call("tasks.get_by_id", {"task": b})["task"]["status"] == "created"
    assert not page.errors, page.errors


def test_queues_page_shows_the_environments_workers_prepared(web, seeded):
    """A worker that prepared a queued task's environment (agent/daemon/prepare.py) reports it;
    the Queues page shows "env ready on <worker>" on that task's row."""
    page, api = web, seeded["api"]
    queue = seeded["queue"]
    head = api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"][0]["task"]
    worker = f"prep-box-{seeded['tag']}:0"
    api.call("workers.register", {"worker": worker, "queues": [queue]})
    api.call("workers.status_report", {"worker": worker, "timestamp": 1, "queues": [queue],
                                       "prepared": {head: "ready"}})
    with pytest.raises(ApiFailure) as bad:   # a state that is not one: 400 naming the field
        api.call("workers.status_report", {"worker": worker, "prepared": {head: "sort of"}})
    assert bad.value.meta["result_code"] == 400 and "prepared" in bad.value.meta["result_msg"]
    page.click("nav a[data-nav=queues]")
    cell = page.locator(f"section.queue[data-queue='gpu-{seeded['tag']}'] tr[data-entry='{head}'] td[data-env]")
    expect(cell).to_have_text(f"env ready on {worker}")
    api.call("workers.unregister", {"worker": worker})
    assert not page.errors, page.errors


def test_workers_page(web, seeded, artifacts_dir):
    page, api = web, seeded["api"]
    worker = f"gpu-box-{seeded['tag']}:0"
    api.call("workers.register", {"worker": worker, "queues": [seeded["queue"]]})
    stats = {"cpu_usage": [37.5], "memory_used": 2048, "memory_free": 6144, "disk_free_home": 71.2,
             "network_rx": 0.5, "network_tx": 0.1}
    api.call("workers.status_report", {"worker": worker, "timestamp": int(time.time()), "machine_stats": stats,
                                       "task": seeded["rich"], "queues": [seeded["queue"]],
                                       "system_tags": [f"gpu-leased:1:ada:{int(time.time()) + 3600}", "gpu-foreign:0"]})
    page.click("nav a[data-nav=workers]")
    row = page.locator(f"tr[data-worker='{worker}']")
    row.wait_for()
    assert "37.5%" in row.inner_text() and "2048 MiB used" in row.inner_text()
    assert "GPU 1 leased by ada until" in row.inner_text() and "GPU 0 in use outside Shipyard" in row.inner_text()
    assert row.locator(f"a[href='#/task/{seeded['rich']}']").count() == 1
    api.call("workers.status_report", {"worker": worker, "timestamp": int(time.time()),
                                       "machine_stats": {**stats, "cpu_usage": [88.0]}, "queues": [seeded["queue"]]})
    row.locator("td", has_text="88%").wait_for(timeout=10_000)  # live
    assert "idle" in row.inner_text()
    page.screenshot(path=str(artifacts_dir / "pages-workers.png"), full_page=True)
    api.call("workers.unregister", {"worker": worker})
    assert not page.errors, page.errors


def test_task_gpu_memory_request_vs_use(web, web_server, seeded):
    page, api = web, seeded["api"]
    task = api.call("tasks.create", {"name": f"packed-{seeded['tag']}", "type": "training",
                                     "runtime": {"gpu_memory_request_mb": 20000, "gpu_memory_peak_mb": 3000}})["id"]
    page.goto(f"{web_server.web_url}/#/task/{task}")
    page.locator("#gpu_memory").wait_for()
    assert page.locator("#gpu_memory").inner_text() == \
        "request 20000 MB · measured peak 3000 MB · request far above use (6.7×)"
    assert not page.errors, page.errors

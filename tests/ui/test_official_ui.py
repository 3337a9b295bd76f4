"""Issue 19: the official ClearML web UI, from a build given by SHIPYARD_OFFICIAL_UI_DIR and
served by `shipyard server --web-ui`, walked in a real Chromium as a ClearML user would: sign in,
the projects page with its counts, the task table (scrolled to its third page, sorted by a metric
column, filtered by status and tag), a task's detail tabs, two tasks compared, the models table,
the queues and workers pages, and clone -> edit a hyperparameter -> enqueue -> a `shipyard daemon`
runs it -> the UI shows it completed. Every API call the UI made is recorded and the walk fails
on any that answered an error. A screenshot of each page goes to SHIPYARD_UI_SHOTS when set
(docs/images/official-ui/ holds the committed ones).

Shipyard neither contains nor builds the UI (docs/official-ui.md says where a build comes
from), so without the variable these tests skip.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from pathlib import Path

import pytest

from tests.agent_helpers import agent_env, make_repo, start_daemon, wait_status
from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, start_server
from tests.security.test_files_attacks import upload

BUILD = os.environ.get("SHIPYARD_OFFICIAL_UI_DIR", "")
SHOTS = os.environ.get("SHIPYARD_UI_SHOTS", "")
pytestmark = pytest.mark.skipif(
    not BUILD, reason="SHIPYARD_OFFICIAL_UI_DIR is not set: point it at a built ClearML web UI (the directory "
                      "holding its index.html, e.g. copied out of ClearML's webserver image; docs/official-ui.md)")
PROJECT = "Official UI check"
TASKS = 70  # more than two of the UI's 30-row pages
WAIT = 60_000


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # how metric and variant names are keyed


def _scalars(task: str, index: int) -> list[dict]:
    return [{"type": "training_stats_scalar", "task": task, "iter": it, "metric": "loss", "variant": "train",
             "value": round(1.0 / (it + 1 + index % 7), 4), "timestamp": 1_700_000_000_000 + it}
            for it in range(5)]


def _plot(task: str) -> dict:
    figure = {"data": [{"type": "bar", "x": ["a", "b", "c"], "y": [3, 1, 2]}], "layout": {"title": "counts"}}
    return {"type": "plot", "task": task, "iter": 4, "metric": "summary", "variant": "counts",
            "plot_str": json.dumps(figure), "timestamp": 1_700_000_000_100}


def _log(task: str) -> dict:
    return {"type": "log", "task": task, "msg": "epoch 4 done", "level": "info", "timestamp": 1_700_000_000_200}


def _seed_task(api: Api, project: str, index: int) -> str:
    tags = ["good"] if index % 3 == 0 else ["other"]
    task = api.call("tasks.create", {
        "name": f"experiment {index:03d}", "type": "training", "project": project, "tags": tags,
        "hyperparams": {"General": {"lr": {"section": "General", "name": "lr", "value": str(0.001 * (index + 1)),
                                           "type": "float"}}},
        "script": {"repository": "", "entry_point": "train.py", "diff": "print('hello')"}})["id"]
    if index % 2 == 0:
        api.call("tasks.started", {"task": task})
        api.events(_scalars(task, index) + [_plot(task), _log(task)])
        api.call("tasks.completed", {"task": task})
    return task


def _png() -> bytes:
    """A 16x16 blue square, a real PNG the browser draws."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    rows = b"".join(b"\x00" + bytes([30, 120, 200]) * 16 for _ in range(16))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _debug_image(server, api: Api, task: str) -> None:
    """A debug sample stored on the files listener, as the SDK stores one."""
    path = f"{PROJECT}/experiment.{task}/metrics/samples/input/sample_4.png"
    upload(server, api.token, {path: _png()})
    api.events([{"type": "training_debug_image", "task": task, "iter": 4, "metric": "samples", "variant": "input",
                 "url": f"{server.files_url}/{path}", "timestamp": 1_700_000_000_300}])


def _seed(server, api: Api) -> dict:
    project = api.call("projects.create", {"name": PROJECT, "description": "seen in the UI"})["id"]
    tasks = [_seed_task(api, project, i) for i in range(TASKS)]
    _debug_image(server, api, tasks[0])
    for n, task in enumerate(tasks[:2]):
        model = api.call("models.create", {"name": f"model {n}", "uri": f"file:///tmp/model-{n}.bin",
                                           "framework": "PyTorch", "task": task, "project": project, "ready": True})["id"]
        api.call("tasks.add_or_update_model", {"task": task, "name": f"model {n}", "model": model, "type": "output"})
    api.call("tasks.add_or_update_artifacts", {"task": tasks[0], "force": True, "artifacts": [
        {"key": "summary", "type": "custom", "mode": "output", "uri": "file:///tmp/summary.txt"}]})
    api.call("queues.create", {"name": "ui-queue"})
    return {"project": project, "tasks": tasks}


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """The server with the UI, its data, and a `shipyard daemon` serving ui-queue (the workers
    page shows it; the clone test's task runs on it)."""
    if not (Path(BUILD) / "index.html").is_file():
        pytest.fail(f"SHIPYARD_OFFICIAL_UI_DIR={BUILD} holds no index.html", pytrace=False)
    root = tmp_path_factory.mktemp("official-ui")
    # --public-host: the files URL the server gives the UI is the one the stored URLs start with
    server = start_server(root / "server", extra_args=["--web-ui", BUILD, "--public-host", "127.0.0.1"])
    server.seed = _seed(server, server.api())
    daemon = start_daemon(agent_env(server, root / "agent"), ["ui-queue"], root / "daemon.log")
    server.daemon = daemon
    yield server
    daemon.stop()
    server.stop()


class Walk:
    """A signed-in page and every /api call that answered an error while it walked."""

    def __init__(self, page, server):
        self.page, self.server, self.failures = page, server, []
        page.on("response", self._check)

    def _check(self, response) -> None:
        if "/api/" not in response.url:
            return
        try:
            meta = json.loads(response.body())["meta"]
            code, why = meta["result_code"], meta.get("result_msg")
        except (ValueError, KeyError, TypeError):
            code, why = response.status, ""
        if code != 200:
            self.failures.append(f"{response.url.rsplit('/', 1)[-1]} -> {code} {why} "
                                 f"(request {response.request.post_data!r:.300})")

    def go(self, path: str, wait_for: str, shot: str) -> None:
        self.page.goto(f"{self.server.web_url}{path}")
        self.page.wait_for_selector(wait_for, timeout=WAIT)
        self.settle()
        self.shot(shot)

    def settle(self) -> None:
        self.page.wait_for_load_state("networkidle", timeout=WAIT)

    def shot(self, name: str, clip: dict | None = None) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), clip=clip)


@pytest.fixture()
def walk(ui_server, page):
    page.set_default_timeout(WAIT)
    page.goto(f"{ui_server.web_url}/")
    walk = Walk(page, ui_server)
    page.wait_for_selector("input[name=name]", timeout=WAIT)
    walk.shot("01-sign-in", clip={"x": 450, "y": 180, "width": 500, "height": 420})  # the form, not the backdrop
    page.fill("input[name=name]", ACCESS_KEY)
    page.fill("input[name=password]", SECRET_KEY)
    page.click("form button")
    page.wait_for_function("!location.pathname.startsWith('/login')", timeout=WAIT)
    return walk


def test_projects_page_with_counts(walk, ui_server):
    walk.go("/projects", f"text={PROJECT}", "02-projects")
    card = walk.page.locator("sm-project-card", has_text=PROJECT)
    assert str(TASKS // 2) in card.inner_text()  # the completed ones, counted on the card
    assert not walk.failures, walk.failures


def test_task_table_scroll_sort_filter(walk, ui_server):
    project = ui_server.seed["project"]
    walk.go(f"/projects/{project}/tasks", "text=experiment 069", "03-tasks")
    rows = walk.page.locator("tr.p-selectable-row")
    for _ in range(4):  # the table asks for its next page when the pointer reaches its "load more" dots
        if rows.count() >= TASKS:
            break
        walk.page.locator("tr.table-load-more sm-dots-load-more").dispatch_event("mouseenter")
        walk.settle()
    assert rows.count() == TASKS  # three pages of the UI's 30, none twice
    walk.page.wait_for_selector("text=experiment 000")
    loss = f"m.{_md5('loss')}.{_md5('train')}.value.loss.train"
    walk.go(f"/projects/{project}/tasks?columns=type&columns=name&columns=status&columns={loss}"
            f"&order=last_metrics.{_md5('loss')}.{_md5('train')}.value", "text=experiment 0", "04-tasks-by-loss")
    first = rows.first.inner_text()
    assert any(f"experiment {i:03d}" in first for i in (6, 20, 34, 48, 62)), first  # the lowest last loss
    walk.go(f"/projects/{project}/tasks?filter=status:completed,tags:good&order=-name",
            "text=experiment 066", "04-tasks-filtered")
    names = [m.group(1) for line in rows.all_inner_texts() if (m := re.search(r"experiment (\d{3})", line))]
    assert names == [f"{i:03d}" for i in range(TASKS - 1, -1, -1) if i % 6 == 0], names
    assert not walk.failures, walk.failures


def test_task_details_tabs(walk, ui_server):
    project, task = ui_server.seed["project"], ui_server.seed["tasks"][0]
    base = f"/projects/{project}/tasks/{task}/output"
    for n, (tab, wait_for) in enumerate([
            ("execution", "text=train.py"), ("hyper-params/hyper-param/General", "text=lr"),
            ("artifacts", "text=model 0"),
            ("general", "text=experiment 000"), ("log", "text=epoch 4 done"),
            ("metrics/scalar", "text=loss"), ("metrics/plots", "text=counts"), ("debugImages", "text=samples")]):
        walk.go(f"{base}/{tab}", wait_for, f"05-details-{n}-{tab.replace('/hyper-param/', '-').replace('/', '-')}")
    # the sample is drawn: fetched through this origin's /files/ with the session cookie
    walk.page.wait_for_function("[...document.images].some(i => i.src.includes('/files/') && i.naturalWidth === 16)")
    walk.shot("05-details-7-debugImages")
    assert not walk.failures, walk.failures


def test_compare_two_tasks(walk, ui_server):
    project, tasks = ui_server.seed["project"], ui_server.seed["tasks"]
    ids = f"{tasks[0]},{tasks[2]}"
    walk.go(f"/projects/{project}/compare-tasks;ids={ids}/scalars/graph", "text=loss", "06-compare-scalars")
    walk.go(f"/projects/{project}/compare-tasks;ids={ids}/hyper-params/values", "text=General", "07-compare-hyperparams")
    walk.page.locator("text=General").first.click()  # a section opens on click
    walk.page.wait_for_selector("text=lr")
    walk.shot("07-compare-hyperparams")
    assert not walk.failures, walk.failures


def test_models_queues_workers(walk, ui_server):
    project = ui_server.seed["project"]
    walk.go(f"/projects/{project}/models", "text=model 1", "08-models")
    walk.go("/workers-and-queues/queues", "text=ui-queue", "09-queues")
    worker = ui_server.api().call("workers.get_all", {})["workers"][0]["id"]
    walk.go("/workers-and-queues/workers", f"text={worker}", "10-workers")
    assert not walk.failures, walk.failures


TRAIN = "import sys\nprint('trained with', sys.argv[1:])\n"


def test_clone_edit_enqueue_runs(walk, ui_server, tmp_path):  # last: its task runs on the daemon
    api = ui_server.api()
    repo, commit = make_repo(tmp_path / "repo", {"train.py": TRAIN})
    source = api.call("tasks.create", {
        "name": "runnable", "type": "training", "project": ui_server.seed["project"],
        "script": {"repository": str(repo), "branch": "main", "version_num": commit, "entry_point": "train.py"},
        "hyperparams": {"Args": {"epochs": {"section": "Args", "name": "epochs", "value": "1"}}}})["id"]
    clone = _clone_edit_enqueue(walk, ui_server.seed["project"], source)
    doc = wait_status(api, clone, timeout=300)
    assert doc["status"] == "completed", ui_server.daemon.output()
    assert doc["hyperparams"]["Args"]["epochs"]["value"] == "7"
    walk.page.reload()
    walk.page.wait_for_selector("text=COMPLETED", timeout=WAIT)
    walk.shot("12-clone-completed")
    # the run went through ui-queue: the queues page now draws its length and wait
    walk.go("/workers-and-queues/queues", "text=ui-queue", "13-queues-after-the-run")
    assert not walk.failures, walk.failures


def _clone_edit_enqueue(walk: Walk, project: str, source: str) -> str:
    """Clone the task from its menu, set its `lr` hyperparameter, enqueue it on ui-queue; the
    clone's id is read from the page's address (the UI opens the clone)."""
    page = walk.page
    walk.go(f"/projects/{project}/tasks/{source}/output/execution", "text=train.py", "11-clone-source")
    page.click("button[data-id=menuIcon]")
    page.click("button[data-id='Clone Option']")
    page.click("button[data-id=CloneButton]")
    page.wait_for_function(f"!location.pathname.includes('{source}')", timeout=WAIT)
    clone = page.url.split("/tasks/", 1)[1].split("/", 1)[0]
    walk.go(f"/projects/{project}/tasks/{clone}/output/hyper-params/hyper-param/Args", "#editSection", "11-clone-edit")
    page.click("#editSection")
    page.locator("sm-experiment-execution-parameters input").last.fill("7")
    page.click("[data-id=SaveButton]")
    walk.settle()
    page.click("button[data-id=menuIcon]")
    page.click("button[data-id='Enqueue Option']")
    page.fill("input[data-id='Select Queue']", "ui-queue")
    page.click("mat-option:has-text('ui-queue')")
    page.click("button[data-id=EnqueueButton]")
    walk.settle()
    return clone

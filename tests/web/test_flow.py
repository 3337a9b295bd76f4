"""The everyday move, in a real browser: sign in, open a completed task that the real clearml
SDK recorded, see its scalar chart and console, clone it, change a parameter, enqueue it, and
watch the agent run the clone to completion with the new value.

The SDK (clearml 2.1.12, in its own venv: tests/peers.py) runs a training script in a git repo;
a real `shipyard daemon` serves the queue. Screenshots of each step go to the artifacts dir.
"""
from __future__ import annotations

import os
import re
import subprocess
import textwrap

import pytest
from playwright.sync_api import expect

from tests import peers
from tests.agent_helpers import agent_env, git, make_repo, start_daemon
from tests.web.conftest import fill_sign_in

pytestmark = [pytest.mark.slow, pytest.mark.compat]  # the real clearml SDK, in its peer venv

QUEUE = "web-e2e"
TRAIN_PY = textwrap.dedent("""\
    import argparse

    from clearml import Task

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5)

    task = Task.init(project_name="web-e2e", task_name="train")
    args = parser.parse_args()
    logger = task.get_logger()
    for i in range(args.epochs):
        logger.report_scalar("loss", "train", args.lr / (i + 1), i)
        logger.report_scalar("loss", "val", 2 * args.lr / (i + 1), i)
    print("trained with lr", args.lr)
    task.close()
""")
# The SDK forks its reporter at the end of Task.init while its repository-detection thread may
# be inside Popen(git ...), which can hang the detection for minutes (see tests/compat/conftest.py);
# reporting from a thread sends the same requests.
SDK_CONFIG = "sdk.development.report_use_subprocess: false\n"


def sdk_env(home, server) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "clearml.conf").write_text(SDK_CONFIG)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLEARML_", "TRAINS_", "VIRTUAL_ENV", "PYTHON", "PIP_", "UV_"))}
    env.update(server.env())
    env.update({"HOME": str(home), "CLEARML_CONFIG_FILE": str(home / "clearml.conf"), "PYTHONUNBUFFERED": "1",
                "GIT_TERMINAL_PROMPT": "0"})
    return env


@pytest.fixture(scope="module")
def recorded(web_server, tmp_path_factory):
    """A completed task recorded by the real SDK, and a daemon serving QUEUE."""
    root = tmp_path_factory.mktemp("web-flow")
    daemon = start_daemon(agent_env(web_server, root), [QUEUE], root / "daemon.log")
    try:
        sdk = peers.ensure("sdk")
        repo, _ = make_repo(root / "repo", {"train.py": TRAIN_PY})
        git(repo, "remote", "add", "origin", str(repo))  # the agent clones it from here
        proc = subprocess.run([str(sdk), "train.py", "--lr", "0.5"], cwd=repo, env=sdk_env(root / "home", web_server),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout
        task_id = re.search(r"created new task id=([0-9a-f]{32})", proc.stdout).group(1)
        link = re.search(r"results page: (\S+)", proc.stdout).group(1)
        api = web_server.api()
        assert api.call("tasks.get_by_id", {"task": task_id})["task"]["status"] == "completed"
        yield {"task": task_id, "link": link, "api": api, "daemon": daemon}
    finally:
        daemon.stop()


def shot(page, artifacts_dir, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"flow-{name}.png"), full_page=True)


def test_clone_edit_enqueue_run(page, web_server, recorded, artifacts_dir):
    api, source = recorded["api"], recorded["task"]
    base = web_server.web_url

    # The results link the SDK printed leads, through the sign-in page, to the task.
    link = recorded["link"]
    assert link.startswith(base + "/projects/"), link
    page.goto(link)
    page.wait_for_selector("#access_key")
    shot(page, artifacts_dir, "01-sign-in")
    fill_sign_in(page)  # the form carries the link's target along
    page.wait_for_selector("#task_name [data-status=completed]")
    assert f"#/task/{source}" in page.url

    # The list shows it, completed.
    page.click("nav a[data-nav=tasks]")
    row = page.locator(f"tr[data-task='{source}']")
    row.locator("[data-status=completed]").wait_for()
    shot(page, artifacts_dir, "02-experiments")
    row.locator("a.task-name").click()

    # Its scalar chart (one line per variant) and its console.
    page.click("[data-tab=scalars]")
    chart = page.locator("figure.chart[data-metric=loss]")
    chart.wait_for()
    assert chart.locator("g.series").count() == 2
    assert chart.locator("g.series[data-series=train] path").get_attribute("d").count("L") == 4
    chart.locator("rect.overlay").hover(position={"x": 2, "y": 20})
    expect(chart.locator(".readout")).to_contain_text("train: 0.5")  # hover: the nearest iteration, 0
    shot(page, artifacts_dir, "03-scalars")
    page.click("[data-tab=console]")
    page.locator("#console", has_text="trained with lr 0.5").wait_for()
    page.fill("#console_search", "trained with")
    assert page.locator("#console mark").count() >= 1
    shot(page, artifacts_dir, "04-console")

    # Clone with a name; the clone opens in its editor.
    page.click("#action_clone")
    page.fill("#dialog_input", "train lr 0.25")
    page.click("#dialog_ok")
    page.wait_for_selector("#edit_form")
    clone = re.search(r"#/task/([0-9a-f]{32})/edit", page.url).group(1)
    assert clone != source
    page.locator("#task_name", has_text="train lr 0.25").wait_for()

    # Change the parameter, save, enqueue to the agent's queue.
    lr = page.locator("[data-edit-param='Args/lr']")
    assert lr.input_value() == "0.5"
    lr.fill("0.25")
    page.click("#edit_save")
    expect(page.locator("#edit_state")).to_have_text("Saved")  # exactly: "Unsaved changes" contains "saved"
    shot(page, artifacts_dir, "05-edited-clone")
    page.select_option("#queue_select", label=QUEUE)
    page.click("#action_enqueue")

    # The agent runs it; the page follows the status live, to completed.
    page.wait_for_selector("#task_name [data-status=completed]", timeout=150_000)
    doc = api.call("tasks.get_by_id", {"task": clone})["task"]
    assert doc["status"] == "completed", (doc["status_reason"], recorded["daemon"].output()[-3000:])
    assert doc["hyperparams"]["Args"]["lr"]["value"] == "0.25"
    assert doc["parent"] == source and doc["last_worker"]

    # The clone shows the new parameter, what it printed and what it reported.
    page.click("[data-tab=configuration]")
    assert page.locator("tr[data-param='Args/lr'] td.value").inner_text() == "0.25"
    shot(page, artifacts_dir, "06-clone-configuration")
    page.click("[data-tab=console]")
    page.locator("#console", has_text="trained with lr 0.25").wait_for()
    page.click("[data-tab=scalars]")
    page.locator("figure.chart[data-metric=loss] g.series[data-series=train]").wait_for()
    hist = api.call("events.scalar_metrics_iter_histogram", {"task": clone})
    assert hist["loss"]["train"]["y"][0] == pytest.approx(0.25)
    page.click("[data-tab=overview]")
    page.locator("#timeline").wait_for()
    shot(page, artifacts_dir, "07-clone-completed")
    assert not page.errors, page.errors



"""Issue 19: the official ClearML web UI, from a build given by SHIPYARD_OFFICIAL_UI_DIR and
served by `shipyard server --web-ui`, in a real Chromium: sign in, the projects page renders,
and no API call the UI made answered an error.

Shipyard neither contains nor builds the UI (docs/official-ui.md says where a build comes
from), so without the variable this test skips. The full walk (experiments, details, compare,
models, queues, workers, clone and enqueue) is later work.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import ACCESS_KEY, SECRET_KEY, start_server

BUILD = os.environ.get("SHIPYARD_OFFICIAL_UI_DIR", "")
pytestmark = pytest.mark.skipif(
    not BUILD, reason="SHIPYARD_OFFICIAL_UI_DIR is not set: point it at a built ClearML web UI (the directory "
                      "holding its index.html, e.g. copied out of ClearML's webserver image; docs/official-ui.md)")


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    if not (Path(BUILD) / "index.html").is_file():
        pytest.fail(f"SHIPYARD_OFFICIAL_UI_DIR={BUILD} holds no index.html", pytrace=False)
    server = start_server(tmp_path_factory.mktemp("official-ui"), extra_args=["--web-ui", BUILD])
    api = server.api()
    project = api.call("projects.create", {"name": "Official UI check", "description": "seen in the UI"})["id"]
    api.call("tasks.create", {"name": "first experiment", "type": "training", "project": project})
    yield server
    server.stop()


def _record_api_errors(page) -> list[str]:
    """Every /api call that answered anything but a 200 envelope."""
    failures: list[str] = []

    def check(response) -> None:
        if "/api/" not in response.url:
            return
        try:
            code = json.loads(response.body())["meta"]["result_code"]
        except (ValueError, KeyError, TypeError):
            code = response.status
        if code != 200:
            failures.append(f"{response.url} -> {code}")

    page.on("response", check)
    return failures


def test_sign_in_and_the_projects_page_renders(ui_server, page, artifacts_dir):
    failures = _record_api_errors(page)
    page.goto(f"{ui_server.web_url}/")
    page.wait_for_selector("input#name", timeout=60_000)
    page.fill("input#name", ACCESS_KEY)
    page.fill("input#password", SECRET_KEY)
    page.click("form button.btn")
    page.wait_for_function("!location.pathname.startsWith('/login')", timeout=60_000)
    page.goto(f"{ui_server.web_url}/projects")
    page.wait_for_selector("text=Official UI check", timeout=60_000)
    page.screenshot(path=str(artifacts_dir / "official-ui-projects.png"), full_page=True)
    assert not failures, failures

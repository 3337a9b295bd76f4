"""Issue 19: `shipyard server --web-ui DIR` serves a UI build from DIR at the web port, with
`configuration.json`, `/api/v<version>/...` and `/files` on the same origin.

The build here is a stand-in the test writes: an index.html and a script that does what the
official UI does at start (read configuration.json, `login.supported_modes`, sign in with
`auth.login` and Basic, `users.get_current_user`, all through /api/v999.0/ with its client
header and the cookie), checked in a real Chromium.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from click.testing import CliRunner

from tests.helpers import ACCESS_KEY, SECRET_KEY, free_port, start_server
from tests.security.test_files_attacks import upload

INDEX = """<!doctype html><html><head><meta charset="utf-8"><title>Stand-in UI</title></head><body>
<form id="form"><input id="user"><input id="pass" type="password"><button id="login">Sign in</button></form>
<p id="mode"></p><p id="who"></p><p id="after"></p><p id="cookie"></p>
<script type="module" src="/assets/main.js"></script></body></html>"""

MAIN_JS = """
const config = await (await fetch('/configuration.json')).json();
const api = (endpoint, headers = {}) => fetch(`${config.apiBaseUrl}/v999.0/${endpoint}`, {
  method: 'POST', body: '{}',
  headers: {'Content-Type': 'application/json', 'X-Allegro-Client': 'Webapp-test', ...headers},
}).then(r => r.json());
const modes = await api('login.supported_modes');
document.getElementById('mode').textContent = `basic=${modes.data.basic.enabled} auth=${modes.data.authenticated}`;
document.getElementById('form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const pair = btoa(`${document.getElementById('user').value}:${document.getElementById('pass').value}`);
  await api('auth.login', {Authorization: `Basic ${pair}`});
  const me = await api('users.get_current_user');
  document.getElementById('cookie').textContent = `visible=${document.cookie.includes('clearml_token_basic')}`;
  document.getElementById('who').textContent = `${me.meta.result_code} ${me.data.user.id}`;
  const again = await api('login.supported_modes');
  document.getElementById('after').textContent = `auth=${again.data.authenticated}`;
});
"""


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-build")
    (root / "index.html").write_text(INDEX)
    (root / "assets").mkdir()
    (root / "assets" / "main.js").write_text(MAIN_JS)
    return root


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, build):
    server = start_server(tmp_path_factory.mktemp("ui-server"), extra_args=["--web-ui", str(build)])
    yield server
    server.stop()


def test_the_build_signs_in_and_calls_the_api_through_its_own_origin(ui_server, page):
    page.goto(f"{ui_server.web_url}/")
    page.wait_for_selector("#mode:has-text('basic=true auth=false')")
    page.fill("#user", ACCESS_KEY)
    page.fill("#pass", SECRET_KEY)
    page.click("#login")
    page.wait_for_selector(f"#who:has-text('200 {ACCESS_KEY}')")
    page.wait_for_selector("#after:has-text('auth=true')")
    assert page.inner_text("#cookie") == "visible=false"  # HttpOnly: scripts never see the session
    # A stored file, by the URL the UI makes of it (useFilesProxy: this origin's /files/), with the cookie.
    upload(ui_server, ui_server.api().token, {"ui/metrics.txt": b"loss 0.1"})
    assert page.evaluate("fetch('/files/ui/metrics.txt').then(r => r.text())") == "loss 0.1"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["clearml_token_basic"]["httpOnly"] and cookies["clearml_token_basic"]["sameSite"] == "Strict"
    # A page of the UI opened later (a deep link) is the same app, already signed in.
    page.goto(f"{ui_server.web_url}/projects/*/experiments")
    page.wait_for_selector("#mode:has-text('auth=true')")
    assert not page.errors, page.errors


def test_configuration_assets_and_the_spa_fallback(ui_server, build):
    config = requests.get(f"{ui_server.web_url}/configuration.json", timeout=30).json()
    # The UI rewrites URLs under fileBaseUrl (what the SDK stores) to this origin's /files/.
    assert config["apiBaseUrl"] == "/api" and config["useFilesProxy"] is True
    # A production build rewrites them only when `production` is false here (otherwise it loads
    # debug samples straight from the files listener, which takes no cookie: broken images).
    assert config["production"] is False
    assert config["fileBaseUrl"] == ui_server.files_url.replace("127.0.0.1", "localhost")
    assert config["userKey"] == "" and config["userSecret"] == ""  # no built-in credentials are ever sent
    script = requests.get(f"{ui_server.web_url}/assets/main.js", timeout=30)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"
    for path in ("/", "/login", "/projects/abc/experiments/def/output/log", "/settings"):
        page = requests.get(f"{ui_server.web_url}{path}", timeout=30)
        assert page.status_code == 200 and "Stand-in UI" in page.text, path
    # Nothing outside the build, and no Shipyard page routes.
    assert "Stand-in UI" in requests.get(f"{ui_server.web_url}/assets/..%2f..%2fetc/passwd", timeout=30).text
    assert requests.get(f"{ui_server.web_url}/static/app.css", timeout=30).text == (build / "index.html").read_text()
    assert requests.get(f"{ui_server.web_url}/api/v999.0/debug.ping", timeout=30).status_code == 403
    assert requests.get(f"{ui_server.web_url}/files/x.txt", timeout=30).status_code == 401


def test_without_the_flag_the_shipyard_page_stays(tmp_path):
    server = start_server(tmp_path / "plain")
    try:
        assert requests.get(f"{server.web_url}/configuration.json", timeout=30).status_code == 404
        assert "Sign in" in requests.get(f"{server.web_url}/login", timeout=30).text
    finally:
        server.stop()


def test_a_directory_without_index_html_is_refused_at_start(tmp_path):
    (tmp_path / "empty").mkdir()
    ports = [str(free_port()) for _ in range(3)]
    done = subprocess.run([sys.executable, "-m", "shipyard", "server", "--data-dir", str(tmp_path / "data"),
                           "--api-port", ports[0], "--files-port", ports[1], "--web-port", ports[2],
                           "--web-ui", str(tmp_path / "empty")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no index.html" in done.stderr


def test_shipyard_up_takes_the_flag():
    from shipyard.cli.up import up_cmd

    assert "--web-ui" in CliRunner().invoke(up_cmd, ["--help"]).output

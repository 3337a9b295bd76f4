"""Attack 2 of issue 17 in a real browser: stored HTML must not act as the admin who opens it.

A user-role key uploads an HTML "report" whose script tries what the original attack did: revoke
another key through the page's API proxy and through the API listener with the admin's cookie,
read another user's file, read the page's cookie and DOM, and carry the loot back into the store.
An admin signed in on the web page then opens it (a) straight from the files listener, which
takes no cookie (401), and (b) as an HTML debug sample on the task's Debug images tab, where it
renders in a sandboxed iframe from the web origin's /files route under a `sandbox` CSP, and
(c) through the sample's "open" link. Afterwards the victim key still works, nothing was stolen
or written, and the page's document is untouched. Chromium: Debian's, via Playwright (tests/web).
"""
from __future__ import annotations

import time

import pytest
import requests
from playwright.sync_api import expect

from tests.browser import sign_in
from tests.helpers import Api, start_server

SECRET = b"TOP SECRET: another user's numbers"
SAMPLE_DIR = "vision/report.{task}/metrics/report/html"

PAYLOAD = """<!doctype html><html><head><meta charset="utf-8"><title>report</title></head><body>
<h1 id="report">Accuracy report</h1><p>val acc 0.93</p>
<script>
(async () => {
  const VICTIM = "%(victim)s", API = "%(api)s", FILES = "%(files)s";
  const mark = (what) => {
    try { parent.document.body.setAttribute("data-pwned-" + what, "1"); } catch (e) {}
    try { top.document.title = "PWNED " + what; } catch (e) {}
  };
  const revoke = JSON.stringify({access_key: VICTIM});
  try { await fetch("/api/auth.revoke_credentials", {method: "POST", credentials: "include",
        headers: {"X-Shipyard-Web": "1", "Content-Type": "application/json"}, body: revoke}); } catch (e) {}
  try { await fetch(API + "/auth.revoke_credentials", {method: "POST", mode: "no-cors",
        credentials: "include", headers: {"Content-Type": "text/plain"}, body: revoke}); } catch (e) {}
  let loot = "cookie=" + document.cookie;
  try { loot += " page=" + parent.document.cookie + parent.document.body.innerHTML.length; mark("dom"); } catch (e) {}
  for (const url of ["/files/secret/data.txt", "/secret/data.txt", FILES + "/secret/data.txt"]) {
    try { loot += " " + await (await fetch(url, {credentials: "include"})).text(); } catch (e) {}
  }
  const form = new FormData();
  form.append("loot/stolen.txt", new Blob([loot]), "loot/stolen.txt");
  for (const url of [FILES + "/", "/"]) {
    try { await fetch(url, {method: "POST", mode: "no-cors", credentials: "include", body: form}); } catch (e) {}
  }
  mark("ran");
})();
</script></body></html>
"""


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A server; an admin's secret file; a victim key; an attacker's task with the HTML sample."""
    srv = start_server(tmp_path_factory.mktemp("html-xss"))
    admin = srv.api()
    put(srv, admin.token, "secret/data.txt", SECRET)
    victim = admin.call("auth.create_credentials", {"label": "victim"})
    key = admin.call("auth.create_credentials", {"label": "attacker"})
    attacker = Api(srv.api_url, key["access_key"], key["secret_key"])
    task = attacker.call("tasks.create", {"name": "innocent report", "type": "training"})["id"]
    path = f"{SAMPLE_DIR.format(task=task)}/report.html"
    put(srv, attacker.token, path, (PAYLOAD % {"victim": victim["access_key"], "api": srv.api_url,
                                               "files": srv.files_url}).encode())
    attacker.events([{"type": "training_debug_image", "task": task, "iter": 0, "metric": "report",
                      "variant": "html", "url": f"{srv.files_url}/{path}"}])
    yield {"srv": srv, "admin": admin, "victim": victim, "task": task, "path": path}
    srv.stop()


def put(srv, token: str, path: str, content: bytes) -> None:
    resp = requests.post(f"{srv.files_url}/", files={path: (path, content)},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == 200, resp.text


def assert_nothing_happened(scene) -> None:
    srv, victim = scene["srv"], scene["victim"]
    Api(srv.api_url, victim["access_key"], victim["secret_key"])  # still signs in: not revoked
    assert not (srv.data_dir / "files" / "loot").exists()
    assert (srv.data_dir / "files" / "secret" / "data.txt").read_bytes() == SECRET


def test_html_from_the_files_listener_gets_no_session(page, scene):
    srv = scene["srv"]
    sign_in(page, srv.web_url)
    page.wait_for_selector("#tasks")
    response = page.goto(f"{srv.files_url}/{scene['path']}")
    assert response.status == 401 and response.headers["x-content-type-options"] == "nosniff"
    assert "Accuracy report" not in page.content()
    time.sleep(1.0)
    assert_nothing_happened(scene)


def test_html_debug_sample_renders_inert_in_a_sandboxed_iframe(page, scene, artifacts_dir):
    srv = scene["srv"]
    sign_in(page, srv.web_url)
    page.wait_for_selector("#tasks")
    page.goto(f"{srv.web_url}/#/task/{scene['task']}/images")
    frame = page.locator("#debug_images iframe.sample")
    frame.wait_for()
    assert frame.get_attribute("sandbox") == ""
    src = frame.get_attribute("src")
    assert src.startswith("/files/") and src.endswith("/report.html")
    expect(page.frame_locator("#debug_images iframe.sample").locator("#report")).to_have_text("Accuracy report")
    # The frame has an origin of its own: the page cannot reach into it, nor it into the page.
    assert page.evaluate("() => document.querySelector('#debug_images iframe.sample').contentDocument === null")
    time.sleep(1.5)
    page.screenshot(path=str(artifacts_dir / "security-html-sample.png"), full_page=True)
    assert not page.evaluate("() => document.body.getAttributeNames().filter(n => n.startsWith('data-pwned'))")
    assert not page.title().startswith("PWNED")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    served = requests.get(f"{srv.web_url}{src}", cookies=cookies, timeout=10)
    assert served.headers["content-security-policy"].startswith("sandbox;")
    assert "allow-scripts" not in served.headers["content-security-policy"]
    # The caption's "open" link shows the same file on its own: just as inert.
    page.goto(f"{srv.web_url}{src}")
    page.locator("#report").wait_for()
    time.sleep(1.5)
    assert not page.title().startswith("PWNED")
    assert_nothing_happened(scene)

"""The web listener's HTTP contract, without a browser: what is served without a session, the
session cookie, the in-process API proxy and its guards, stored files served sandboxed."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from tests.helpers import ACCESS_KEY, SECRET_KEY, web_session

PROXY = {"X-Shipyard-Web": "1", "Content-Type": "application/json"}


def test_only_the_sign_in_page_without_a_session(web_server):
    base = web_server.web_url
    resp = requests.get(f"{base}/", allow_redirects=False, timeout=10)
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    page = requests.get(f"{base}/login", timeout=10)
    assert page.status_code == 200 and 'name="secret_key"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert requests.get(f"{base}/static/app.css", timeout=10).status_code == 200  # the sign-in page's style
    for path in ("/static/js/main.js", "/static/index.html", "/session", "/files/any/thing.txt"):
        assert requests.get(f"{base}{path}", timeout=10).status_code == 401, path
    api = requests.post(f"{base}/api/tasks.get_all", json={}, headers=PROXY, timeout=10)
    assert api.status_code == 401 and api.json()["meta"]["result_code"] == 401


def test_sign_in_sets_a_strict_httponly_cookie(web_server):
    base = web_server.web_url
    wrong = requests.post(f"{base}/login", data={"access_key": ACCESS_KEY, "secret_key": "nope"},
                          allow_redirects=False, timeout=10)
    assert wrong.status_code == 401 and "wrong secret" in wrong.text and "set-cookie" not in wrong.headers
    resp = requests.post(f"{base}/login", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                         allow_redirects=False, timeout=10)
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("shipyard_token=")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
    assert "secure" not in lowered  # plain http here; set under https
    # A sign-in form posted from another site's page is refused.
    forged = requests.post(f"{base}/login", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                           headers={"Origin": "http://evil.example"}, allow_redirects=False, timeout=10)
    assert forged.status_code == 403 and "set-cookie" not in forged.headers


def test_session_page_and_sign_out(web_server):
    http = web_session(web_server)
    info = http.get(f"{web_server.web_url}/session", timeout=10).json()
    assert info["user"] == ACCESS_KEY and info["files_url"].endswith(f":{web_server.ports[1]}")
    assert http.get(f"{web_server.web_url}/", timeout=10).status_code == 200
    out = http.post(f"{web_server.web_url}/logout", allow_redirects=False, timeout=10)
    assert out.status_code == 303 and 'shipyard_token=""' in out.headers["set-cookie"]
    assert http.get(f"{web_server.web_url}/session", timeout=10).status_code == 401


def test_api_proxy_speaks_the_protocol_and_refuses_other_origins(web_server):
    http = web_session(web_server)
    url = f"{web_server.web_url}/api/tasks.create"
    created = http.post(url, json={"name": "via-web", "type": "training"}, headers=PROXY, timeout=10).json()
    assert created["meta"]["result_code"] == 200
    task = created["data"]["id"]
    got = http.post(f"{web_server.web_url}/api/tasks.get_by_id", json={"task": task}, headers=PROXY, timeout=10)
    assert got.json()["data"]["task"]["name"] == "via-web"
    assert got.json()["data"]["task"]["user"] == ACCESS_KEY  # the session's identity
    # Errors arrive in the protocol's envelope.
    bad = http.post(f"{web_server.web_url}/api/tasks.get_by_id", json={"task": "0" * 32}, headers=PROXY, timeout=10)
    assert bad.status_code == 400 and bad.json()["meta"]["result_subcode"] == 101
    # Without the page's header, by GET, or from another origin: refused, nothing done.
    assert http.post(url, json={"name": "x", "type": "training"}, timeout=10).status_code == 403
    assert http.get(f"{web_server.web_url}/api/tasks.get_all", headers=PROXY, timeout=10).status_code == 403
    evil = http.post(url, json={"name": "x", "type": "training"}, headers={**PROXY, "Origin": "http://evil.example"},
                     timeout=10)
    assert evil.status_code == 403
    same = http.post(f"{web_server.web_url}/api/tasks.get_all", json={"id": [task]},
                     headers={**PROXY, "Origin": web_server.web_url}, timeout=10)
    assert same.status_code == 200


def _upload(server, path: str, content: bytes) -> None:
    api = server.api()
    resp = requests.post(f"{server.files_url}/", files={path: (path.rsplit("/", 1)[-1], content)},
                         headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
    assert resp.status_code == 200, resp.text


def test_files_are_served_sandboxed(web_server):
    _upload(web_server, "p/t.1/artifacts/page/page.html", b"<script>alert(1)</script>")
    _upload(web_server, "p/t.1/metrics/img/a.png", b"\x89PNG\r\n\x1a\nfake")
    http = web_session(web_server)
    base = web_server.web_url
    # HTML renders (for the sandboxed iframe of HTML debug samples) only under a sandbox CSP.
    html = http.get(f"{base}/files/p/t.1/artifacts/page/page.html", timeout=10)
    assert html.status_code == 200 and html.content == b"<script>alert(1)</script>"
    assert html.headers["content-type"].startswith("text/html")
    assert html.headers["content-security-policy"].startswith("sandbox;")
    assert "frame-ancestors 'self'" in html.headers["content-security-policy"]
    assert html.headers["x-content-type-options"] == "nosniff"
    html_download = http.get(f"{base}/files/p/t.1/artifacts/page/page.html?download=1", timeout=10)
    assert html_download.headers["content-type"] == "application/octet-stream"
    assert html_download.headers["content-disposition"].startswith("attachment")
    png = http.get(f"{base}/files/p/t.1/metrics/img/a.png", timeout=10)
    assert png.headers["content-type"] == "image/png" and "content-disposition" not in png.headers
    download = http.get(f"{base}/files/p/t.1/metrics/img/a.png?download=1", timeout=10)
    assert download.headers["content-disposition"].startswith("attachment")
    assert http.get(f"{base}/files/p/nothing.bin", timeout=10).status_code == 404
    assert http.get(f"{base}/files/..%2f..%2fserver.log", timeout=10).status_code in (403, 404)
    # The files listener never takes the page's cookie (a stored page there must not act as the user).
    direct = http.get(f"{web_server.files_url}/p/t.1/metrics/img/a.png", timeout=10)
    assert direct.status_code == 401


def test_sdk_results_link_opens_the_task(web_server):
    base = web_server.web_url
    link = f"{base}/projects/{'a' * 32}/tasks/{'b' * 32}/output/log"
    anonymous = requests.get(link, allow_redirects=False, timeout=10)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == f"/login?next=/%23/task/{'b' * 32}"
    http = requests.Session()
    after = http.post(f"{base}/login", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                             "next": f"/#/task/{'b' * 32}"}, allow_redirects=False, timeout=10)
    assert after.headers["location"] == f"/#/task/{'b' * 32}"
    assert http.get(link, allow_redirects=False, timeout=10).headers["location"] == f"/#/task/{'b' * 32}"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        resp = requests.post(f"{base}/login", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                                    "next": evil}, allow_redirects=False, timeout=10)
        assert resp.headers["location"] == "/", evil


def _keys(server, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "shipyard", "keys", "--data-dir", str(server.data_dir), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.timeout(60)
def test_revoking_the_key_ends_its_sessions(web_server):
    out = _keys(web_server, "create", "--name", "web-test")
    pairs = dict(line.split("=", 1) for line in out.strip().splitlines())
    access, secret = pairs["CLEARML_API_ACCESS_KEY"], pairs["CLEARML_API_SECRET_KEY"]
    http = web_session(web_server, access, secret)
    assert http.get(f"{web_server.web_url}/session", timeout=10).status_code == 200
    _keys(web_server, "revoke", access)
    deadline = time.monotonic() + 20  # the server re-reads a key's state every few seconds
    while http.get(f"{web_server.web_url}/session", timeout=10).status_code == 200:
        assert time.monotonic() < deadline, "session still valid after its key was revoked"
        time.sleep(0.5)
    api = http.post(f"{web_server.web_url}/api/tasks.get_all", json={}, headers=PROXY, timeout=10)
    assert api.status_code == 401

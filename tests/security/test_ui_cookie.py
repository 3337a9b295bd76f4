"""Issue 19: the official ClearML web UI's session cookie (`clearml_token_basic`) and CORS.

The cookie is what `auth.login` sets when the UI signs in through the web listener's `/api`
route; it is taken there and on the web listener's `/files`, under the same CSRF rules as the
Shipyard page's cookie (POST, a client header, this origin), and nowhere else: the API and files
listeners stay Bearer (and Basic for auth.login) only. CORS on the API listener is off unless
origins are configured, and never carries credentials.
"""
from __future__ import annotations

import json

import pytest
import requests

from tests.helpers import ACCESS_KEY, SECRET_KEY, start_server
from tests.security.test_files_attacks import upload

UI = {"X-Allegro-Client": "Webapp-2.0.0", "Content-Type": "application/json"}
COOKIE = "clearml_token_basic"
ALLOWED = "http://ui.example:4200"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("ui-cookie"), env={"SHIPYARD_CORS_ORIGINS": ALLOWED})
    yield server
    server.stop()


def ui_sign_in(srv) -> requests.Session:
    """What the UI does on its sign-in form: auth.login with Basic through /api/v999.0/."""
    http = requests.Session()
    resp = http.post(f"{srv.web_url}/api/v999.0/auth.login", auth=(ACCESS_KEY, SECRET_KEY), headers=UI, timeout=30)
    assert resp.status_code == 200, resp.text
    return http


def test_ui_sign_in_sets_an_httponly_strict_cookie_that_the_web_api_route_takes(srv):
    anonymous = requests.post(f"{srv.web_url}/api/v999.0/login.supported_modes", json={}, headers=UI, timeout=30)
    modes = anonymous.json()["data"]
    assert modes["basic"] == {"enabled": True, "guest": {"enabled": False}} and modes["authenticated"] is False
    http = requests.Session()
    resp = http.post(f"{srv.web_url}/api/v999.0/auth.login", auth=(ACCESS_KEY, SECRET_KEY), headers=UI, timeout=30)
    set_cookie = resp.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=") and "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert http.post(f"{srv.web_url}/api/v999.0/login.supported_modes", json={}, headers=UI,
                     timeout=30).json()["data"]["authenticated"] is True
    me = http.post(f"{srv.web_url}/api/v999.0/users.get_current_user", json={}, headers=UI, timeout=30).json()
    assert me["meta"]["result_code"] == 200 and me["data"]["user"]["id"] == ACCESS_KEY
    # A wrong secret sets nothing.
    bad = requests.post(f"{srv.web_url}/api/v999.0/auth.login", auth=(ACCESS_KEY, "wrong"), headers=UI, timeout=30)
    assert bad.status_code == 401 and "set-cookie" not in bad.headers


def test_the_ui_cookie_is_refused_on_the_api_and_files_ports(srv):
    token = ui_sign_in(srv).cookies[COOKIE]
    for url in (f"{srv.api_url}/users.get_current_user", f"{srv.api_url}/v999.0/tasks.get_all"):
        resp = requests.post(url, json={}, cookies={COOKIE: token}, headers=UI, timeout=30)
        assert resp.status_code == 401 and resp.json()["meta"]["result_code"] == 401
    upload(srv, srv.api().token, {"ui/plain.txt": b"hello"})
    assert requests.get(f"{srv.files_url}/ui/plain.txt", cookies={COOKIE: token}, timeout=30).status_code == 401


def test_the_ui_cookie_without_the_client_header_or_from_another_origin_is_refused(srv):
    http = ui_sign_in(srv)
    url = f"{srv.web_url}/api/v999.0/users.get_current_user"
    assert http.post(url, json={}, timeout=30).status_code == 403  # what a form or a link sends
    assert http.post(url, json={}, headers={**UI, "Origin": "http://evil.example"}, timeout=30).status_code == 403
    assert http.post(url, json={}, headers={**UI, "Sec-Fetch-Site": "cross-site"}, timeout=30).status_code == 403
    assert http.get(url, headers=UI, timeout=30).status_code == 403
    same = {**UI, "Origin": srv.web_url, "Sec-Fetch-Site": "same-origin"}
    assert http.post(url, json={}, headers=same, timeout=30).json()["meta"]["result_code"] == 200
    # Without the cookie a private endpoint is a 401, a public one still answers.
    assert requests.post(url, json={}, headers=UI, timeout=30).status_code == 401


def test_files_through_the_ui_cookie_are_sandboxed_and_active_content_is_not_inline(srv):
    upload(srv, srv.api().token, {"ui/page.html": b"<script>alert(1)</script>", "ui/app.js": b"alert(1)",
                                  "ui/pic.svg": b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>",
                                  "ui/img.png": b"\x89PNG\r\n\x1a\n"})
    http = ui_sign_in(srv)
    assert requests.get(f"{srv.web_url}/files/ui/img.png", timeout=30).status_code == 401
    png = http.get(f"{srv.web_url}/files/ui/img.png", timeout=30)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    for name in ("app.js", "pic.svg"):
        got = http.get(f"{srv.web_url}/files/ui/{name}", timeout=30)
        assert got.status_code == 200 and got.headers["content-disposition"].startswith("attachment")
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["x-content-type-options"] == "nosniff"
    page = http.get(f"{srv.web_url}/files/ui/page.html", timeout=30)
    assert page.headers["content-security-policy"].startswith("sandbox")


def test_ui_logout_clears_the_cookie(srv):
    http = ui_sign_in(srv)
    out = http.post(f"{srv.web_url}/api/v999.0/auth.logout", json={}, headers=UI, timeout=30)
    assert out.status_code == 200 and f'{COOKIE}=""' in out.headers["set-cookie"]
    assert COOKIE not in http.cookies


def test_cors_answers_only_configured_origins_and_never_allows_credentials(srv):
    token = srv.api().token
    preflight = requests.options(f"{srv.api_url}/v999.0/tasks.get_all", timeout=30, headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in preflight.headers
    call = requests.post(f"{srv.api_url}/tasks.get_all", json={}, timeout=30,
                         headers={"Origin": ALLOWED, "Authorization": f"Bearer {token}"})
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == ALLOWED
    other = requests.post(f"{srv.api_url}/tasks.get_all", json={}, timeout=30,
                          headers={"Origin": "http://evil.example", "Authorization": f"Bearer {token}"})
    assert "access-control-allow-origin" not in other.headers
    refused = requests.options(f"{srv.api_url}/tasks.get_all", headers={"Origin": "http://evil.example"}, timeout=30)
    assert refused.status_code == 405 and "access-control-allow-origin" not in refused.headers


def test_cors_is_off_by_default(tmp_path):
    server = start_server(tmp_path / "no-cors")
    try:
        preflight = requests.options(f"{server.api_url}/tasks.get_all", headers={"Origin": ALLOWED}, timeout=30)
        assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
        call = requests.post(f"{server.api_url}/tasks.get_all", json={}, timeout=30,
                             headers={"Origin": ALLOWED, "Authorization": f"Bearer {server.api().token}"})
        assert call.status_code == 200 and "access-control-allow-origin" not in call.headers
    finally:
        server.stop()


def test_behind_clearmls_webserver_container_the_api_answers_at_the_root(srv):
    """Its nginx strips /api and passes the browser's host name without the port (nginx's $host):
    the same rules hold, with the browser's Fetch metadata telling a same-site page of another
    port (refused) from the UI's own origin."""
    http = ui_sign_in(srv)
    url = f"{srv.web_url}/v999.0/users.get_current_user"
    proxied = {**UI, "Host": "127.0.0.1", "Origin": srv.web_url, "Sec-Fetch-Site": "same-origin"}
    assert http.post(url, json={}, headers=proxied, timeout=30).json()["data"]["user"]["id"] == ACCESS_KEY
    other_port = {**proxied, "Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}
    assert http.post(url, json={}, headers=other_port, timeout=30).status_code == 403
    other_host = {**proxied, "Origin": "http://evil.example:80", "Sec-Fetch-Site": "same-origin"}
    assert http.post(url, json={}, headers=other_host, timeout=30).status_code == 403
    assert http.post(url, json={}, timeout=30).status_code == 403


def test_cors_origins_from_a_config_file_list(tmp_path):
    from server.config import load_server_config

    conf = tmp_path / "server.conf"
    conf.write_text('server { cors_origins: ["https://ui.example.com/", "http://localhost:4200"] }')
    assert load_server_config(conf, env={}).cors_origin_set == {"https://ui.example.com", "http://localhost:4200"}
    assert load_server_config(None, env={}).cors_origin_set == frozenset()


def test_the_log_download_link_the_ui_opens_is_taken_from_this_origin_only(srv):
    """The UI opens `events.download_task_log` as a plain link (GET, no client header): that one
    read-only download is taken with the cookie from this origin; other GETs stay refused."""
    api = srv.api()
    task = api.call("tasks.create", {"name": "logged", "type": "training"})["id"]
    event = {"type": "log", "task": task, "msg": "hello log", "level": "info", "timestamp": 1}
    assert api.raw("events.add_batch", body=json.dumps([event]).encode(),
                   headers={"Content-Type": "application/json"}).json()["meta"]["result_code"] == 200
    http = ui_sign_in(srv)
    url = f"{srv.web_url}/api/v999.0/events.download_task_log?line_type=text&task={task}"
    got = http.get(url, headers={"Sec-Fetch-Site": "same-origin"}, timeout=30)
    assert got.status_code == 200 and "hello log" in got.text
    assert http.get(url, headers={"Sec-Fetch-Site": "cross-site"}, timeout=30).status_code == 403
    assert requests.get(url, timeout=30).status_code == 401
    assert http.get(f"{srv.web_url}/api/v999.0/tasks.get_all", timeout=30).status_code == 403


def test_the_table_export_link_the_ui_opens_is_taken_from_this_origin_only(srv):
    """The UI prepares a CSV export (POST, its client header) and opens the download as a link
    (GET, no client header): taken with the cookie from this origin, for the preparing key only."""
    api = srv.api()
    api.call("tasks.create", {"name": "exported", "type": "training"})
    http = ui_sign_in(srv)
    body = {"entity_type": "task", "name": "^exported$", "only_fields": ["name"], "field_mappings": [{"field": "name"}]}
    prepared = http.post(f"{srv.web_url}/api/v999.0/organization.prepare_download_for_get_all", json=body,
                         headers=UI, timeout=30).json()["data"]["prepare_id"]
    url = f"{srv.web_url}/api/v999.0/organization.download_for_get_all?prepare_id={prepared}"
    got = http.get(url, headers={"Sec-Fetch-Site": "same-origin"}, timeout=30)
    assert got.status_code == 200 and "exported" in got.text and got.headers["content-type"].startswith("text/csv")
    assert http.get(url, headers={"Sec-Fetch-Site": "cross-site"}, timeout=30).status_code == 403
    assert requests.get(url, timeout=30).status_code == 401

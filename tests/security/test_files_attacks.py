"""Attacks on the files listener (issue 17), each performed for real against a running server.

1. `DELETE /<dir>/..` removed the whole files root: now DELETE removes one file and nothing else
   (root/outside/symlink-out 403, a directory 409, `..` and over-long names 400).
2. (files-listener half) the listener served stored HTML inline and took the web page's cookie:
   now Bearer only, and active content is an attachment under nosniff + a sandbox CSP.
9. Uploads had no size limit and were spooled twice: now per-file, per-request and free-disk
   limits (413/507, nothing stored, nothing replaced), and each part streams to its own place.
Each test checks that what was stored before the attack is still there, byte for byte.
"""
from __future__ import annotations

import http.client
import os
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, start_server

MIB = 1 << 20
BOUNDARY = "sEcUrItYbOuNdArY"
SEED = {"proj/a/model.bin": os.urandom(4096), "proj/b/stats.json": b'{"acc": 0.9}',
        "other/t.1/artifacts/notes.txt": b"keep me"}
LIMITS = {"SHIPYARD_FILES_MAX_FILE_MB": "2", "SHIPYARD_FILES_MAX_REQUEST_MB": "3",
          "SHIPYARD_FILES_MIN_FREE_MB": "1"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("files-attacks"), env=LIMITS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(srv) -> Api:
    return srv.api()


@pytest.fixture(scope="module")
def user_token(srv, admin) -> str:
    """A token of an ordinary user-role key: the attacker."""
    key = admin.call("auth.create_credentials", {"label": "attacker"})
    return Api(srv.api_url, key["access_key"], key["secret_key"]).token


@pytest.fixture()
def seeded(srv, admin) -> dict[str, bytes]:
    for path, content in SEED.items():
        upload(srv, admin.token, {path: content})
    return SEED


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def multipart(parts: dict[str, bytes], *, close: bool = True) -> bytes:
    """A body as the ClearML SDK sends it: each part's field name (and file name) is the path."""
    out = b""
    for name, content in parts.items():
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def upload(srv, token: str, parts: dict[str, bytes], **kw) -> requests.Response:
    resp = post(srv, token, multipart(parts), **kw)
    assert resp.status_code == 200, resp.text
    return resp


def post(srv, token: str, body, **kw) -> requests.Response:
    headers = {**bearer(token), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return requests.post(f"{srv.files_url}/", data=body, headers=headers, timeout=30, **kw)


def raw(srv, method: str, path: str, token: str) -> tuple[int, dict]:
    """A request whose path goes out exactly as written (no client-side `..` folding)."""
    conn = http.client.HTTPConnection(urlsplit(srv.files_url).netloc, timeout=10)
    try:
        conn.request(method, path, headers=bearer(token))
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (requests.models.complexjson.loads(body) if body[:1] == b"{" else {})
    finally:
        conn.close()


def read_answer(sock: socket.socket) -> str:
    """One HTTP answer read off a raw socket (headers and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), b"0"))
    while len(body) < length and (more := sock.recv(65536)):
        body += more
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def assert_intact(srv, token: str, expected: dict[str, bytes]) -> None:
    for path, content in expected.items():
        got = requests.get(f"{srv.files_url}/{path}", headers=bearer(token), timeout=10)
        assert got.status_code == 200 and got.content == content, path
        assert (srv.data_dir / "files" / path).read_bytes() == content


def no_temp_files(srv) -> list[Path]:
    return [p for p in (srv.data_dir / "files").rglob(".upload-*")]


# -- attack 1: the files root wiped by one DELETE ---------------------------------------------

def test_delete_cannot_remove_the_root_a_directory_or_anything_outside(srv, admin, user_token, seeded, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"not yours")
    link = srv.data_dir / "files" / "escape"
    link.symlink_to(outside, target_is_directory=True)
    try:
        for path in ("/proj/..", "/proj/%2e%2e", "/proj/a/../..", "/", "/.", "/..", "/../files",
                     "/..%2f..%2fetc%2fpasswd", "/escape/victim.txt", "/escape"):
            status, body = raw(srv, "DELETE", path, user_token)
            assert status == 403, (path, status, body)
        for path in ("/proj", "/proj/a", "/proj/a/", "/other/t.1"):
            status, body = raw(srv, "DELETE", path, user_token)
            assert status == 409 and "DELETE removes files, not directories" in body["error"], (path, body)
        status, body = raw(srv, "DELETE", "/proj/a/../b/stats.json", user_token)
        assert status == 400 and "'..'" in body["error"]
        status, _ = raw(srv, "DELETE", "/proj/" + "n" * 256, user_token)
        assert status == 400
        assert raw(srv, "GET", "/escape/victim.txt", user_token)[0] == 403
    finally:
        link.unlink()
    assert (outside / "victim.txt").read_bytes() == b"not yours"
    assert_intact(srv, admin.token, seeded)
    # Deleting a file is what DELETE does: that one file goes, its neighbours stay.
    assert raw(srv, "DELETE", "/proj/b/stats.json", user_token)[0] == 200
    assert raw(srv, "GET", "/proj/b/stats.json", user_token)[0] == 404
    assert_intact(srv, admin.token, {k: v for k, v in seeded.items() if k != "proj/b/stats.json"})


def test_bad_upload_paths_are_400_or_403_never_500(srv, admin, user_token, seeded):
    for path in ("x/..", "x/.", "x/", "proj/..", "a/b/../c.txt", "n" * 256 + ".bin", "d/" + "é" * 128 + "/f"):
        resp = post(srv, user_token, multipart({path: b"x"}))
        assert resp.status_code == 400, (path, resp.status_code, resp.text)
    for path in ("../evil", "/../../outside.txt", "a/../../b", "escape/../../x"):
        resp = post(srv, user_token, multipart({path: b"x"}))
        assert resp.status_code == 403, (path, resp.status_code, resp.text)
    # A file where a directory is needed, a directory where a file goes: 409.
    assert post(srv, user_token, multipart({"proj/a/model.bin/inner.txt": b"x"})).status_code == 409
    assert post(srv, user_token, multipart({"proj/a": b"x"})).status_code == 409
    assert not (srv.data_dir / "outside.txt").exists() and not no_temp_files(srv)
    assert_intact(srv, admin.token, seeded)


# -- attack 2, the files listener's half: no cookie, no active content inline -------------------

def test_the_web_cookie_is_not_accepted(srv, admin, seeded):
    web = requests.Session()
    resp = web.post(f"{srv.web_url}/login", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                    allow_redirects=False, timeout=10)
    assert resp.status_code == 303 and web.cookies.get("shipyard_token")
    for method in ("GET", "DELETE"):
        refused = web.request(method, f"{srv.files_url}/proj/a/model.bin", timeout=10)
        assert refused.status_code == 401 and refused.headers["x-content-type-options"] == "nosniff"
    token = web.cookies["shipyard_token"]
    assert requests.get(f"{srv.files_url}/proj/a/model.bin", cookies={"token": token}, timeout=10).status_code == 401
    assert post(srv, "", multipart({"x/cookie.txt": b"x"}), cookies={"shipyard_token": token}).status_code == 401
    assert not (srv.data_dir / "files" / "x" / "cookie.txt").exists()
    assert_intact(srv, admin.token, seeded)


@pytest.mark.parametrize("name,content", [
    ("report.html", b"<script>fetch('/')</script>"),
    ("pic.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>1</script></svg>"),
    ("app.js", b"alert(1)"), ("feed.xml", b"<?xml version='1.0'?><x/>"), ("page.xhtml", b"<html/>"),
    ("noext", b"<html><script>alert(1)</script></html>")])
def test_active_content_is_a_sandboxed_download(srv, user_token, name, content):
    upload(srv, user_token, {f"x/{name}": content})
    got = requests.get(f"{srv.files_url}/x/{name}", headers=bearer(user_token), timeout=10)
    assert got.status_code == 200 and got.content == content
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-security-policy"].startswith("sandbox; default-src 'none'")


def test_safe_types_inline_and_every_answer_sandboxed(srv, user_token, seeded):
    upload(srv, user_token, {"x/img.png": b"\x89PNG\r\n\x1a\n", "x/log.txt": b"hello"})
    for path, kind in (("x/img.png", "image/png"), ("x/log.txt", "text/plain"),
                       ("proj/b/stats.json", "application/json")):
        got = requests.get(f"{srv.files_url}/{path}", headers=bearer(user_token), timeout=10)
        assert got.headers["content-type"].startswith(kind) and "content-disposition" not in got.headers
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-security-policy"].startswith("sandbox")
    for resp in (requests.get(f"{srv.files_url}/x/missing.html", headers=bearer(user_token), timeout=10),
                 requests.get(f"{srv.files_url}/x/img.png", timeout=10)):
        assert resp.status_code in (401, 404) and resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["content-security-policy"].startswith("sandbox")


# -- attack 9: uploads without limits, spooled twice -------------------------------------------

def test_oversized_file_is_413_and_replaces_nothing(srv, admin, user_token, seeded):
    big = os.urandom(2 * MIB + 1)
    for target in ("proj/a/model.bin", "fresh/dir/new.bin"):
        resp = post(srv, user_token, multipart({target: big}))
        assert resp.status_code == 413, resp.text
        assert "files_max_file_mb=2" in resp.json()["error"]
    assert not (srv.data_dir / "files" / "fresh").exists() and not no_temp_files(srv)
    assert_intact(srv, admin.token, seeded)
    # At the limit: stored.
    upload(srv, user_token, {"fresh/ok.bin": big[:2 * MIB]})
    assert (srv.data_dir / "files" / "fresh" / "ok.bin").stat().st_size == 2 * MIB


def test_oversized_request_is_413_all_or_nothing(srv, admin, user_token, seeded):
    parts = {"req/one.bin": os.urandom(MIB + MIB // 2), "req/two.bin": os.urandom(MIB + MIB // 2),
             "proj/b/stats.json": b"replaced?"}
    resp = post(srv, user_token, multipart(parts))
    assert resp.status_code == 413 and "files_max_request_mb=3" in resp.json()["error"]

    def chunked():  # no Content-Length: the limit is enforced on the bytes as they come
        body = multipart(parts)
        for i in range(0, len(body), 256 * 1024):
            yield body[i:i + 256 * 1024]
    try:
        resp = post(srv, user_token, chunked())
        assert resp.status_code == 413
    except requests.ConnectionError:
        pass  # the server stopped reading a body over the request limit: refused either way
    assert not (srv.data_dir / "files" / "req").exists() and not no_temp_files(srv)
    assert_intact(srv, admin.token, seeded)


def test_declared_huge_upload_is_refused_before_its_body(srv, user_token):
    head = (f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user_token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {1 << 30}\r\n\r\n")
    started = time.monotonic()
    url = urlsplit(srv.files_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + multipart({"huge/one.bin": b"x" * 1000}, close=False))
        answer = read_answer(sock)
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "files_max_request_mb=3" in answer and time.monotonic() - started < 5
    assert not (srv.data_dir / "files" / "huge").exists()


def test_each_part_streams_once_into_its_own_directory(srv, admin, user_token):
    """While the body is still arriving, its bytes are already in a temp file next to the target."""
    body = multipart({"stream/big.bin": b"s" * (2 * MIB)})
    seen: list[int] = []

    def slow():
        yield body[:MIB + MIB // 2]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not seen:
            temps = list((srv.data_dir / "files" / "stream").glob(".upload-*"))
            if temps and temps[0].stat().st_size >= MIB:
                seen.append(temps[0].stat().st_size)
            time.sleep(0.02)
        yield body[MIB + MIB // 2:]

    resp = post(srv, user_token, slow())
    assert resp.status_code == 200 and resp.json() == ["stream/big.bin"]
    assert seen, "no partial file next to the target while the upload was under way"
    assert (srv.data_dir / "files" / "stream" / "big.bin").read_bytes() == b"s" * (2 * MIB)
    assert not no_temp_files(srv)


def test_broken_bodies_store_nothing(srv, admin, user_token, seeded):
    cut = multipart({"proj/a/model.bin": b"half"}, close=False)
    assert post(srv, user_token, cut).status_code == 400
    assert post(srv, user_token, b"not multipart at all").status_code == 400
    resp = requests.post(f"{srv.files_url}/", data=b"x", headers={**bearer(user_token), "Content-Type": "text/plain"},
                         timeout=10)
    assert resp.status_code == 400
    fields_only = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
                   f"--{BOUNDARY}--\r\n").encode()
    assert post(srv, user_token, fields_only).status_code == 400
    assert not no_temp_files(srv)
    assert_intact(srv, admin.token, seeded)


def test_low_disk_is_507_and_loses_nothing(tmp_path):
    free_mb = shutil.disk_usage(tmp_path).free // MIB
    server = start_server(tmp_path / "full", env={"SHIPYARD_FILES_MIN_FREE_MB": str(free_mb + 1_000_000)})
    try:
        api = server.api()
        (server.data_dir / "files" / "kept").mkdir()
        (server.data_dir / "files" / "kept" / "model.bin").write_bytes(b"weights")
        resp = post(server, api.token, multipart({"kept/model.bin": b"overwrite", "new/x.bin": b"x"}))
        assert resp.status_code == 507, resp.text
        assert "files_min_free_mb" in resp.json()["error"] and "MiB free" in resp.json()["error"]
        assert not (server.data_dir / "files" / "new").exists()
        assert_intact(server, api.token, {"kept/model.bin": b"weights"})
    finally:
        server.stop()

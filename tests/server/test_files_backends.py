"""The files listener on both storage backends, for real: a server process on a local directory
and one on an S3 bucket of a moto server, each driven over HTTP (uploads, ranges, HEAD, delete,
the path rules), and the S3 one checked with boto3 in the bucket itself: objects appear only
whole, uploads go in parts as they stream, an outage of the store is a retryable 503."""
from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from server.config import load_server_config
from server.files.serve import RangeNotSatisfiable, parse_range
from shipyard.errors import ConfigError
from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, start_server, until, web_session
from tests.s3_helpers import Relay, keys, make_bucket, s3_client, server_env, start_moto

MIB = 1 << 20
BOUNDARY = "bAcKeNdBoUnDaRy"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["local", "s3"])
def store(request, moto, tmp_path_factory):
    """(server, bucket or None): a server on each backend."""
    bucket = make_bucket(moto.url) if request.param == "s3" else None
    env = server_env(moto.url, bucket, SHIPYARD_FILES_S3_PART_MB="5") if bucket else {}
    server = start_server(tmp_path_factory.mktemp(f"files-{request.param}"), env=env)
    server.moto_url = moto.url  # type: ignore[attr-defined]
    yield server, bucket
    server.stop()


@pytest.fixture(scope="module")
def token(store) -> str:
    return Api(store[0].api_url, ACCESS_KEY, SECRET_KEY).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def part(name: str, content: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"


def upload(server, token: str, parts: dict[str, bytes]) -> requests.Response:
    body = b"".join(part(n, c) for n, c in parts.items()) + f"--{BOUNDARY}--\r\n".encode()
    return requests.post(f"{server.files_url}/", data=body, timeout=60, headers={
        **bearer(token), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def raw_status(server, method: str, path: str, token: str) -> int:
    """The status of a request whose path goes out exactly as written (no `..` folding)."""
    parts = urlsplit(server.files_url)
    with socket.create_connection((parts.hostname, parts.port)) as conn:
        conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        answer = conn.recv(65536)
    return int(answer.split(b" ")[1])


def peak_rss(server) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_ranges_head_and_whole_files(store, token):
    server, _ = store
    content = os.urandom(100_000)
    assert upload(server, token, {"r/data.bin": content}).json() == ["r/data.bin"]
    url = f"{server.files_url}/r/data.bin"
    whole = requests.get(url, headers=bearer(token), timeout=10)
    assert whole.status_code == 200 and whole.content == content and whole.headers["accept-ranges"] == "bytes"
    for asked, first, last in (("bytes=10-19", 10, 19), ("bytes=99990-", 99990, 99999),
                               ("bytes=-5", 99995, 99999), ("bytes=0-999999", 0, 99999)):
        got = requests.get(url, headers={**bearer(token), "Range": asked}, timeout=10)
        assert got.status_code == 206, (asked, got.text)
        assert got.headers["content-range"] == f"bytes {first}-{last}/100000"
        assert got.content == content[first:last + 1]
    past = requests.get(url, headers={**bearer(token), "Range": "bytes=100000-"}, timeout=10)
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */100000"
    several = requests.get(url, headers={**bearer(token), "Range": "bytes=0-1,5-6"}, timeout=10)
    assert several.status_code == 200 and several.content == content
    head = requests.head(url, headers=bearer(token), timeout=10)
    assert head.status_code == 200 and head.headers["content-length"] == "100000" and head.content == b""
    head_range = requests.head(url, headers={**bearer(token), "Range": "bytes=0-9"}, timeout=10)
    assert head_range.status_code == 206 and head_range.headers["content-length"] == "10"
    assert requests.head(f"{server.files_url}/r/none.bin", headers=bearer(token), timeout=10).status_code == 404


def test_path_rules_and_delete_hold_on_every_backend(store, token):
    server, bucket = store
    upload(server, token, {"d/keep.txt": b"keep", "d/sub/x.txt": b"x", "d/page.html": b"<script>1</script>"})
    page = requests.get(f"{server.files_url}/d/page.html", headers=bearer(token), timeout=10)
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"].startswith("attachment")
    assert page.headers["content-security-policy"].startswith("sandbox")
    text = requests.get(f"{server.files_url}/d/keep.txt", headers=bearer(token), timeout=10)
    assert text.headers["content-type"].startswith("text/plain") and "content-disposition" not in text.headers
    for method, path, code in (("DELETE", "/d/sub", 409), ("DELETE", "/d/sub/..", 400), ("DELETE", "/d/..", 403),
                               ("GET", "/d/../../etc/passwd", 403), ("DELETE", "/d/missing.txt", 404),
                               ("GET", "/d/x/../keep.txt", 400), ("DELETE", "/" + "n" * 300, 400)):
        assert raw_status(server, method, path, token) == code, (method, path)
    resp = upload(server, token, {"d/sub": b"a file over a directory"})
    assert resp.status_code == 409, resp.text
    assert requests.delete(f"{server.files_url}/d/sub/x.txt", headers=bearer(token), timeout=10).json() == \
        {"deleted": True}
    assert requests.get(f"{server.files_url}/d/sub/x.txt", headers=bearer(token), timeout=10).status_code == 404
    assert requests.get(f"{server.files_url}/d/keep.txt", headers=bearer(token), timeout=10).content == b"keep"
    if bucket:
        stored = keys(server.moto_url, bucket)
        assert stored["files/d/keep.txt"] == b"keep" and "files/d/sub/x.txt" not in stored


def test_the_web_origin_serves_stored_files_from_every_backend(store, token):
    server, _ = store
    upload(server, token, {"w/report.html": b"<h1>hi</h1>", "w/data.bin": b"0123456789"})
    http = web_session(server)
    page = http.get(f"{server.web_url}/files/w/report.html", timeout=10)
    assert page.status_code == 200 and page.content == b"<h1>hi</h1>"
    assert page.headers["content-type"].startswith("text/html")          # for the sandboxed iframe only
    assert page.headers["content-security-policy"].startswith("sandbox")
    part_of = http.get(f"{server.web_url}/files/w/data.bin", headers={"Range": "bytes=2-4"}, timeout=10)
    assert part_of.status_code == 206 and part_of.content == b"234"
    assert part_of.headers["content-disposition"].startswith("attachment")
    assert http.get(f"{server.web_url}/files/w/none.bin", timeout=10).status_code == 404


def test_uploads_stream_in_parts_without_holding_the_file(store, token):
    server, bucket = store
    size = 48 * MIB
    block = os.urandom(MIB)
    before = peak_rss(server)

    def body():
        yield part("big/file.bin", b"")[:-2]
        for _ in range(size // MIB):
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    resp = requests.post(f"{server.files_url}/", data=body(), timeout=120, headers={
        **bearer(token), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert resp.status_code == 200, resp.text
    grown = peak_rss(server) - before
    assert grown < 24 * MIB, f"the server's peak memory grew by {grown // MIB} MiB for a {size // MIB} MiB upload"
    got = requests.get(f"{server.files_url}/big/file.bin", headers={**bearer(token), "Range": f"bytes={size - 4}-"},
                       timeout=30)
    assert got.status_code == 206 and got.content == block[-4:]
    if bucket:
        head = s3_client(server.moto_url).head_object(Bucket=bucket, Key="files/big/file.bin")
        assert head["ContentLength"] == size and head["ETag"].strip('"').endswith("-10")  # 10 parts of 5 MiB


def test_a_cut_upload_leaves_nothing_in_the_store(store, token):
    server, bucket = store
    host, port = urlsplit(server.files_url).hostname, urlsplit(server.files_url).port
    conn = socket.create_connection((host, port))
    head = part("cut/file.bin", b"")[:-2]
    conn.sendall((f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                  f"Content-Length: {len(head) + 20 * MIB}\r\n\r\n").encode() + head)
    for _ in range(12):
        conn.sendall(b"c" * MIB)
    if bucket:      # cut only once the server has begun storing: else "nothing left" may be checked too early
        wait_for_first_part(server.moto_url, bucket)
    else:
        until(lambda: list((server.data_dir / "files").rglob(".upload-*")), 30, what="the upload's temp file")
    conn.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if bucket and not s3_client(server.moto_url).list_multipart_uploads(Bucket=bucket).get("Uploads"):
            break
        if not bucket and not list((server.data_dir / "files").rglob(".upload-*")):
            break
        time.sleep(0.2)
    assert requests.get(f"{server.files_url}/cut/file.bin", headers=bearer(token), timeout=10).status_code == 404
    if bucket:
        assert not s3_client(server.moto_url).list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert not [k for k in keys(server.moto_url, bucket) if k.startswith("files/cut/")]
    else:
        assert not (server.data_dir / "files" / "cut").exists()


def wait_for_first_part(url: str, bucket: str) -> None:
    client = s3_client(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for started in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            if client.list_parts(Bucket=bucket, Key=started["Key"], UploadId=started["UploadId"]).get("Parts"):
                return
        time.sleep(0.05)
    raise AssertionError("the server sent no part")


def test_s3_outage_is_a_retryable_503_and_nothing_half_stored(moto, tmp_path):
    bucket = make_bucket(moto.url)
    relay = Relay(moto.port)
    server = start_server(tmp_path / "srv", env=server_env(relay.url, bucket, SHIPYARD_FILES_S3_PART_MB="5",
                                                           SHIPYARD_FILES_S3_TIMEOUT_S="2", SHIPYARD_FILES_S3_RETRIES="1"))
    try:
        token = server.api().token
        assert upload(server, token, {"o/before.txt": b"before"}).status_code == 200

        down_at: list[float] = []

        def cut_midway():                       # S3 goes away after the first 5 MiB part went in
            yield part("o/midway.bin", b"")[:-2]
            for _ in range(7):
                yield os.urandom(MIB)
            wait_for_first_part(moto.url, bucket)   # not while a request is on the wire: its answer would be lost
            relay.down()
            down_at.append(time.monotonic())
            for _ in range(6):
                yield os.urandom(MIB)
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        midway = requests.post(f"{server.files_url}/", data=cut_midway(), timeout=60, headers={
            **bearer(token), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert midway.status_code == 503, midway.text
        for parts in ({"o/small.txt": b"small"}, {"o/big.bin": os.urandom(11 * MIB)}):
            resp = upload(server, token, parts)
            assert resp.status_code == 503, resp.text
            assert "object storage unavailable, retry later" in resp.json()["error"]
            assert resp.headers["retry-after"]
        read = requests.get(f"{server.files_url}/o/before.txt", headers=bearer(token), timeout=30)
        assert read.status_code == 503 and "retry" in read.json()["error"]
        time.sleep(max(0.0, 10 - (time.monotonic() - down_at[0])))      # down for 10 s
        relay.up()
        assert upload(server, token, {"o/after.txt": b"after"}).status_code == 200
        assert requests.get(f"{server.files_url}/o/before.txt", headers=bearer(token), timeout=10).content == b"before"
        assert sorted(keys(moto.url, bucket)) == ["files/o/after.txt", "files/o/before.txt"]
        assert not s3_client(moto.url).list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted once back
    finally:
        server.stop()
        relay.down()


def test_a_missing_bucket_stops_the_server_with_the_reason(moto, tmp_path):
    with pytest.raises(RuntimeError) as failed:
        start_server(tmp_path / "srv", env=server_env(moto.url, "no-such-bucket"))
    assert "'no-such-bucket' does not exist (files_s3_bucket)" in str(failed.value)


@pytest.mark.parametrize("env, message", [
    ({"SHIPYARD_FILES_BACKEND": "gcs"}, "'files_backend' (from env:SHIPYARD_FILES_BACKEND) must be 'local' or 's3'"),
    ({"SHIPYARD_FILES_BACKEND": "s3"}, "files_s3_bucket (SHIPYARD_FILES_S3_BUCKET) must name the bucket"),
    ({"SHIPYARD_FILES_S3_ACCESS_KEY": "k"}, "go together"),
    ({"SHIPYARD_FILES_S3_PART_MB": "1"}, "'files_s3_part_mb' (from env:SHIPYARD_FILES_S3_PART_MB) must be at least 5"),
])
def test_bad_files_settings_name_the_setting_and_its_source(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_server_config(env=env)


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-0", (0, 0)), ("bytes=5-", (5, 9)), ("bytes=-3", (7, 9)), ("bytes=-30", (0, 9)), ("bytes=8-100", (8, 9)),
    ("bytes=0-1,4-5", None), ("bytes=x-1", None), ("items=0-1", None), ("bytes=5-2", None), (None, None),
])
def test_one_byte_range_or_the_whole_file(header, expected):
    assert parse_range(header, 10) == expected


@pytest.mark.parametrize("header, size", [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0)])
def test_ranges_past_the_end_are_not_satisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)

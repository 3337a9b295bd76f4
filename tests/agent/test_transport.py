"""The lean transport (shipyard/client/transport.py) where it differs from a plain request: which
transport the environment gets, a kept connection the server closed, a redirect, a chunked
answer, a cut answer, and TLS verified against the bundle requests would use."""
from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shipyard.client.transport import (
    ConnectFailed,
    LeanTransport,
    NoAnswer,
    RequestsTransport,
    TLSFailed,
    make_transport,
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def serve(answer, tls: ssl.SSLContext | None = None):
    """A keep-alive HTTP/1.1 server whose POSTs `answer(handler, body)` writes; (url, seen ports, stop)."""
    ports: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            ports.append(self.client_address[1])
            answer(self, self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def log_message(self, *args):
            pass

    httpd = _Server(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    scheme = "https" if tls else "http"
    return f"{scheme}://localhost:{httpd.server_address[1]}", ports, lambda: (httpd.shutdown(), httpd.server_close())


@contextmanager
def lean_to(answer, headers: dict[str, str] | None = None):
    """A `serve(answer)` server and a LeanTransport to it: (url, seen ports, transport), both closed after."""
    url, ports, stop = serve(answer)
    transport = LeanTransport(headers or {})
    try:
        yield url, ports, transport
    finally:
        transport.close()
        stop()


def reply(handler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def echo(handler, body):
    reply(handler, 200, body)


def test_the_environment_picks_the_transport():
    assert isinstance(make_transport({}, environ={}), LeanTransport)
    assert isinstance(make_transport({}, environ={"HTTPS_PROXY": "http://proxy:3128"}), RequestsTransport)
    assert isinstance(make_transport({}, environ={"all_proxy": "socks5://proxy:1080"}), RequestsTransport)
    assert isinstance(make_transport({}, environ={"NO_PROXY": "localhost", "https_proxy": ""}), LeanTransport)
    assert isinstance(make_transport({}, verify=False, environ={}), RequestsTransport)


def test_a_kept_connection_is_reused_and_one_the_server_closed_is_replaced():
    closing = []

    def answer(handler, body):
        reply(handler, 200, body, **({"Connection": "close"} if closing else {}))
        handler.close_connection = bool(closing)

    with lean_to(answer, {"X-Test": "1"}) as (url, ports, transport):
        assert transport.post(url + "/a", b"1", {}, timeout=5).content == b"1"
        assert transport.post(url + "/a", b"2", {}, timeout=5).content == b"2"
        assert len(set(ports)) == 1
        closing.append(True)   # the server says it closes after this answer: the connection is not kept
        transport.post(url + "/a", b"3", {}, timeout=5)
        closing.clear()
        assert transport.post(url + "/a", b"4", {}, timeout=5).content == b"4"
        assert len(set(ports)) == 2


def test_an_idle_connection_the_server_dropped_is_not_used():
    with lean_to(echo) as (url, ports, transport):
        transport.post(url + "/a", b"1", {}, timeout=5)
        (idle,) = next(iter(transport._idle.values()))
        assert idle.sock is not None
        idle.sock.shutdown(2)   # as if the server had closed it while idle: it reads as closed
        assert transport.post(url + "/a", b"2", {}, timeout=5).content == b"2"
        assert len(set(ports)) == 2


def test_a_redirect_is_followed_by_requests_as_before():
    def answer(handler, body):
        if handler.path == "/old":
            reply(handler, 307, b"", Location="/new")
        else:
            reply(handler, 200, b"at " + handler.path.encode() + b": " + body)

    with lean_to(answer) as (url, _, transport):
        assert transport.post(url + "/old", b"x", {}, timeout=5).content == b"at /new: x"


def test_a_chunked_answer_is_read_whole():
    def answer(handler, body):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for part in (b'{"a": ', b"1}"):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        handler.wfile.write(b"0\r\n\r\n")

    with lean_to(answer) as (url, _, transport):
        assert transport.post(url + "/a", b"", {}, timeout=5).json() == {"a": 1}


def test_a_cut_answer_is_no_answer_and_a_closed_port_no_connection():
    def answer(handler, body):
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b"{")
        handler.close_connection = True

    url, _, stop = serve(answer)
    transport = LeanTransport({})
    try:
        with pytest.raises(NoAnswer):
            transport.post(url + "/a", b"", {}, timeout=5)
    finally:
        stop()
    with pytest.raises(ConnectFailed):
        transport.post(url + "/a", b"", {}, timeout=5)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_tls_is_verified_against_the_bundle_requests_would_use(certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    url, _, stop = serve(echo, tls=context)
    try:
        with pytest.raises(TLSFailed):   # certifi's bundle does not know a self-signed certificate
            LeanTransport({}, environ={}).post(url + "/a", b"1", {}, timeout=5)
        trusted = LeanTransport({}, environ={"REQUESTS_CA_BUNDLE": str(cert)})
        assert trusted.post(url + "/a", b"1", {}, timeout=5).content == b"1"
        trusted.close()
    finally:
        stop()

"""ApiClient against a tiny in-test ClearML-like server (http.server on a thread), over each of
its transports (shipyard/client/transport.py): http.client's lean one and requests."""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest

from shipyard.client import api as api_module
from shipyard.client.api import CLIENT_HEADER, ApiClient
from shipyard.client.transport import LeanTransport, RequestsTransport
from shipyard.errors import AuthError, ServerError, ServerUnreachable

ACCESS, SECRET = "AK", "SK"


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # e.g. the broken pipe after a client gave up waiting: expected in these tests


class FakeServer:
    """Just enough of the ClearML envelope, auth and a few endpoints to exercise the client."""

    def __init__(self):
        self.token_ttl = 3600
        self.tokens: list[str] = []
        self.revoked: set[str] = set()
        self.requests: list[dict] = []
        self.scripted: dict[str, list[tuple]] = defaultdict(list)
        self.delay: dict[str, float] = {}
        self.always_401: set[str] = set()
        self.has_server_info = False
        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def logins(self) -> int:
        return sum(1 for request in self.requests if request["endpoint"] == "auth.login")

    def calls(self, endpoint: str) -> list[dict]:
        return [request for request in self.requests if request["endpoint"] == endpoint]

    def answer(self, handler, endpoint: str, headers, body: bytes) -> tuple[int, object]:
        if endpoint == "auth.login":
            return self.scripted[endpoint].pop(0) if self.scripted[endpoint] else self._login(headers)
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.tokens or token in self.revoked or endpoint in self.always_401:
            return 401, envelope(401, 30, "Invalid token")
        if endpoint in self.delay:
            time.sleep(self.delay[endpoint])
        if self.scripted[endpoint]:
            return self.scripted[endpoint].pop(0)
        if endpoint == "debug.echo":
            return 200, envelope(data=json.loads(body or b"{}"))
        if endpoint == "events.add_batch":
            events = [json.loads(line) for line in body.decode().split("\n") if line]
            return 200, envelope(data={"added": len(events), "errors": 0})
        if endpoint == "server.info" and self.has_server_info:
            return 200, envelope(data={"version": "1.0", "api_version": "2.31"})
        return 404, envelope(404, 0, f"Unable to find endpoint for name {endpoint} and version 2.31")

    def _login(self, headers) -> tuple[int, object]:
        expected = "Basic " + base64.b64encode(f"{ACCESS}:{SECRET}".encode()).decode()
        if headers.get("Authorization") != expected:
            return 401, envelope(401, 21, "Bad credentials")
        now = int(time.time())
        claims = {"iat": now, "exp": now + self.token_ttl, "api_version": "2.31", "n": len(self.tokens)}
        token = jwt.encode(claims, "a-server-signing-key-of-32-bytes-or-more", algorithm="HS256")
        self.tokens.append(token)
        return 200, envelope(data={"token": token})

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible
            disable_nagle_algorithm = True

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.lstrip("/")
                version, _, endpoint = path.rpartition("/")
                server.requests.append({
                    "endpoint": endpoint, "version": version, "headers": dict(self.headers), "body": body,
                    "port": self.client_address[1],
                })
                status, payload, *extra = server.answer(self, endpoint, self.headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler


def envelope(code=200, subcode=0, msg="OK", data=None):
    return {"meta": {"result_code": code, "result_subcode": subcode, "result_msg": msg}, "data": data}


@pytest.fixture(autouse=True, params=["lean", "requests"])
def transport(request, monkeypatch):
    """Every test, once over each transport: the client behaves the same over both."""
    if request.param == "requests":
        monkeypatch.setattr(api_module, "make_transport",
                            lambda headers, verify=True: RequestsTransport(headers, verify=verify))
    return request.param


def test_the_lean_transport_is_the_default(server, client, transport):
    assert isinstance(client._transport, LeanTransport if transport == "lean" else RequestsTransport)


@pytest.fixture()
def server():
    srv = FakeServer()
    yield srv
    srv.stop()


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture()
def sleeps():
    return Sleeps()


@pytest.fixture()
def client(server, sleeps):
    with ApiClient(server.url, ACCESS, SECRET, worker_id="host:0", timeout=5, sleep=sleeps) as api:
        yield api


def test_call_logs_in_posts_json_and_returns_data(server, client):
    assert client.call("debug.echo", {"a": 1}) == {"a": 1}
    login, echo = server.requests
    assert login["endpoint"] == "auth.login"
    assert echo["headers"]["Content-Type"] == "application/json"
    assert echo["headers"]["Authorization"] == f"Bearer {server.tokens[0]}"
    assert echo["headers"]["X-ClearML-Worker"] == "host:0"
    assert echo["headers"]["X-ClearML-Client"] == CLIENT_HEADER
    assert client.claims["api_version"] == "2.31"


def test_versioned_and_unversioned_paths(server, client):
    client.call("debug.echo", version="2.14")
    client.call("debug.echo", version="v2.5")
    client.call("debug.echo")
    assert [request["version"] for request in server.calls("debug.echo")] == ["v2.14", "v2.5", ""]


def test_connections_are_pooled(server, client):
    for _ in range(5):
        client.call("debug.echo")
    assert len({request["port"] for request in server.requests}) == 1


def test_null_data_becomes_empty_dict(server, client):
    server.scripted["tasks.ping"].append((200, envelope(data=None)))
    assert client.call("tasks.ping", {"task": "t"}) == {}


def test_error_envelope_raises_server_error(server, client):
    server.scripted["queues.get_by_id"].append((400, envelope(400, 701, "Invalid queue id: q")))
    with pytest.raises(ServerError) as caught:
        client.call("queues.get_by_id", {"queue": "q"})
    error = caught.value
    assert (error.code, error.subcode, error.endpoint) == (400, 701, "queues.get_by_id")
    assert "Invalid queue id: q" in str(error)
    assert not isinstance(error, AuthError)


def test_non_json_answer_raises_server_error(server, client):
    server.scripted["tasks.get_all"].append((500, b"<html>oops</html>"))
    with pytest.raises(ServerError) as caught:
        client.call("tasks.get_all")
    assert caught.value.code == 500
    assert "oops" in str(caught.value)


def test_expired_token_is_refreshed_once_and_call_retried(server, client):
    client.call("debug.echo")
    server.revoked.add(server.tokens[0])
    assert client.call("debug.echo", {"x": 2}) == {"x": 2}
    assert server.logins() == 2


def test_persistent_401_raises_auth_error_after_one_refresh(server, client):
    server.always_401.add("tasks.get_all")
    with pytest.raises(AuthError) as caught:
        client.call("tasks.get_all")
    assert caught.value.code == 401
    assert server.logins() == 2
    assert len(server.calls("tasks.get_all")) == 2


def test_bad_credentials_raise_auth_error(server, sleeps):
    with ApiClient(server.url, ACCESS, "wrong", sleep=sleeps) as api, pytest.raises(AuthError, match="Bad credentials"):
        api.call("debug.echo")


def test_login_without_token_is_reported(server, client):
    server.scripted["auth.login"].append((200, envelope(data={})))
    with pytest.raises(AuthError, match="no token"):
        client.call("debug.echo")


def test_token_is_refreshed_ahead_of_expiry(server, client):
    server.token_ttl = 6  # refresh when half of a short lifetime is left (3 s: room for a loaded CI box)
    client.call("debug.echo")
    client.call("debug.echo")
    assert server.logins() == 1
    time.sleep(3.2)
    client.call("debug.echo")
    assert server.logins() == 2


def test_transient_statuses_are_retried_with_backoff(server, client, sleeps):
    server.scripted["debug.echo"] += [(503, envelope(503, 0, "maintenance")), (502, b"bad gateway")]
    server.scripted["debug.echo"].append((504, b"timeout"))
    assert client.call("debug.echo", {"ok": True}) == {"ok": True}
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(server.calls("debug.echo")) == 4


def test_retry_after_is_honoured_within_the_cap(server, client, sleeps):
    server.scripted["debug.echo"].append((429, envelope(429, 0, "slow down"), {"Retry-After": "3"}))
    server.scripted["debug.echo"].append((503, envelope(503, 0, "busy"), {"Retry-After": "3600"}))
    client.call("debug.echo")
    assert sleeps == [3.0, 10.0]


def test_transient_errors_until_deadline_raise_unreachable(server, sleeps):
    fake_now = [0.0]

    def sleep(seconds):
        sleeps.append(seconds)
        fake_now[0] += seconds

    server.scripted["debug.echo"] += [(503, b"down")] * 100
    api = ApiClient(server.url, ACCESS, SECRET, retry_deadline_s=20, sleep=sleep, clock=lambda: fake_now[0])
    with pytest.raises(ServerUnreachable, match="HTTP 503"):
        api.call("debug.echo")
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]  # the next 10 s wait would pass the 20 s deadline
    assert max(sleeps) <= 10.0


def test_backoff_is_capped(server, sleeps):
    server.scripted["debug.echo"] += [(502, b"")] * 8
    api = ApiClient(server.url, ACCESS, SECRET, retry_deadline_s=1e9, sleep=sleeps)
    api.call("debug.echo")
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_connection_refused_raises_unreachable_after_retries(sleeps):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fake_now = [0.0]

    def sleep(seconds):
        sleeps.append(seconds)
        fake_now[0] += seconds

    url = f"http://127.0.0.1:{port}"
    api = ApiClient(url, ACCESS, SECRET, retry_deadline_s=5, sleep=sleep, clock=lambda: fake_now[0])
    with pytest.raises(ServerUnreachable, match="cannot connect"):
        api.call("debug.echo")
    assert sleeps == [0.5, 1.0, 2.0]


def test_read_timeout_is_not_retried(server, client):
    server.delay["queues.get_next_task"] = 1.0
    with pytest.raises(ServerUnreachable, match="no complete answer"):
        client.call("queues.get_next_task", {"queue": "q"}, timeout=0.2)
    assert len(server.calls("queues.get_next_task")) == 1


def test_add_events_sends_json_lines(server, client):
    events = [{"type": "log", "task": "t", "msg": "a\nb"}, {"type": "log", "task": "t", "msg": "ü"}]
    assert client.add_events(events) == {"added": 2, "errors": 0}
    (request,) = server.calls("events.add_batch")
    assert request["headers"]["Content-Type"] == "application/json-lines"
    assert [json.loads(line) for line in request["body"].decode().split("\n")] == events


def test_add_events_with_nothing_sends_nothing(server, client):
    assert client.add_events([]) == {"added": 0, "errors": 0}
    assert server.requests == []


def test_server_info_tolerates_a_reference_server(server, client):
    assert client.server_info() == {}
    server.has_server_info = True
    assert client.server_info()["api_version"] == "2.31"


def test_shared_between_threads(server, client):
    errors = []

    def work(n):
        try:
            for i in range(20):
                assert client.call("debug.echo", {"n": n, "i": i}) == {"n": n, "i": i}
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert server.logins() == 1


def test_from_settings(tmp_path, server):
    from shipyard.client.config import load_settings

    env = {"HOME": str(tmp_path), "CLEARML_API_HOST": server.url, "CLEARML_API_ACCESS_KEY": ACCESS,
           "CLEARML_API_SECRET_KEY": SECRET, "CLEARML_WORKER_ID": "w:1"}
    with ApiClient.from_settings(load_settings(env=env)) as api:
        api.call("debug.echo")
    assert server.requests[-1]["headers"]["X-ClearML-Worker"] == "w:1"


def test_add_events_gives_up_sooner_than_other_calls(server, sleeps):
    fake_now = [0.0]

    def sleep(seconds):
        sleeps.append(seconds)
        fake_now[0] += seconds

    api = ApiClient(server.url, ACCESS, SECRET, retry_deadline_s=600, sleep=sleep, clock=lambda: fake_now[0])
    api.login()
    server.scripted["events.add_batch"] += [(503, b"down")] * 100
    with pytest.raises(ServerUnreachable):
        api.add_events([{"type": "log", "msg": "x"}])
    assert sum(sleeps) <= 10

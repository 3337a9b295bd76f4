"""Test helpers: start a real `shipyard server` process on free ports, and a small API client."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ACCESS_KEY = "TESTACCESSKEY0000000000"
SECRET_KEY = "test-secret-key-0123456789abcdefghijklmnop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> tuple[int, ...]:
    """`count` distinct free ports (the kernel may hand the same just-freed port out twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return tuple(ports)


class ApiFailure(Exception):
    def __init__(self, meta: dict):
        super().__init__(f"{meta.get('result_code')}/{meta.get('result_subcode')}: {meta.get('result_msg')}")
        self.meta = meta
        self.code = meta.get("result_code")
        self.subcode = meta.get("result_subcode")
        self.msg = meta.get("result_msg")


class Api:
    """Minimal envelope-aware client for tests (the product's client is agent.api)."""

    def __init__(self, base: str, access: str = ACCESS_KEY, secret: str = SECRET_KEY):
        self.base = base
        self.http = requests.Session()
        self.token = self.login(access, secret)

    def login(self, access: str, secret: str) -> str:
        resp = self.http.get(f"{self.base}/auth.login", auth=(access, secret), timeout=10)
        body = resp.json()
        if body["meta"]["result_code"] != 200:
            raise ApiFailure(body["meta"])
        return body["data"]["token"]

    def raw(self, endpoint: str, data=None, *, token: str | None = "default", method: str = "POST",
            headers: dict | None = None, body: bytes | None = None, timeout: float = 30) -> requests.Response:
        hdrs = dict(headers or {})
        if token == "default":
            token = self.token
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is None:
            body = json.dumps(data or {}).encode()
            hdrs.setdefault("Content-Type", "application/json")
        return self.http.request(method, f"{self.base}/{endpoint}", data=body, headers=hdrs, timeout=timeout)

    def call(self, endpoint: str, data=None, **kw) -> dict:
        body = self.raw(endpoint, data, **kw).json()
        if body["meta"]["result_code"] != 200:
            raise ApiFailure(body["meta"])
        return body["data"]

    def events(self, events: list[dict]) -> dict:
        payload = "\n".join(json.dumps(e) for e in events).encode()
        return self.call("events.add_batch", body=payload, headers={"Content-Type": "application/json-lines"})


def client_env(api_url: str, files_url: str, web_url: str) -> dict[str, str]:
    """Environment for a clearml client process pointed at these addresses, with the admin key."""
    return {"CLEARML_API_HOST": api_url, "CLEARML_FILES_HOST": files_url, "CLEARML_WEB_HOST": web_url,
            "CLEARML_API_ACCESS_KEY": ACCESS_KEY, "CLEARML_API_SECRET_KEY": SECRET_KEY}


def until(check, timeout_s: float = 5.0, *, every_s: float = 0.01, what: str = ""):
    """Poll `check` every `every_s` until it returns something true (returned); AssertionError at
    the timeout, naming `what` was waited for."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}" if what else "condition not met in time")


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    data_dir: Path
    api_url: str
    files_url: str
    web_url: str
    ports: tuple[int, int, int]
    log_path: Path

    def api(self) -> Api:
        return Api(self.api_url)

    def env(self) -> dict[str, str]:
        """Environment for a clearml client process pointed at this server."""
        return client_env(self.api_url, self.files_url, self.web_url)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(data_dir: Path, *, db: str | None = None, extra_args: list[str] | None = None,
                 ports: tuple[int, int, int] | None = None, env: dict | None = None,
                 launcher: list[str] | None = None) -> ServerProcess:
    """A server on `ports`, or on free ones; a free port taken by another process before the
    server bound it (seen under load in CI) means another try on new ports. `launcher`: what
    runs `-m shipyard` instead of this Python (bench/bench_server.py's `--profile`: cProfile)."""
    for attempt in range(3):
        try:
            return _start_server(data_dir, db=db, extra_args=extra_args, ports=ports, env=env,
                                 launcher=launcher)
        except RuntimeError as exc:
            busy = any(m in str(exc) for m in ("address already in use", ") is in use", "is also given to"))  # the listener / the pre-check
            if ports is not None or not busy or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_server(data_dir: Path, *, db: str | None, extra_args: list[str] | None,
                  ports: tuple[int, int, int] | None, env: dict | None,
                  launcher: list[str] | None = None) -> ServerProcess:
    api_port, files_port, web_port = ports or free_ports(3)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    args = [*(launcher or [sys.executable]), "-m", "shipyard", "server", "--data-dir", str(data_dir),
            "--api-port", str(api_port), "--files-port", str(files_port), "--web-port", str(web_port),
            "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, *(extra_args or [])]
    if db:
        args += ["--db", db]
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
    server = ServerProcess(proc, data_dir, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{files_port}",
                           f"http://127.0.0.1:{web_port}", (api_port, files_port, web_port), log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            requests.get(f"{server.api_url}/debug.ping", timeout=1)
            requests.get(f"{server.files_url}/", timeout=1)
            return server
        except requests.ConnectionError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")


def web_session(server: ServerProcess, access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> requests.Session:
    """A requests session signed in on the web port (it holds the page's session cookie)."""
    http = requests.Session()
    resp = http.post(f"{server.web_url}/login", data={"access_key": access, "secret_key": secret},
                     allow_redirects=False, timeout=30)
    assert resp.status_code == 303, resp.text
    return http


def run_async(make_coro, timeout_s: float = 120.0):
    """`asyncio.run(make_coro())` on a thread of its own, its result returned (its exception
    re-raised here): a Playwright session earlier in the same worker keeps an event loop running
    on the main thread, where asyncio.run refuses to start."""
    result: list = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make_coro()))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            error.append(exc)

    worker = threading.Thread(target=target, name="run-async")
    worker.start()
    worker.join(timeout_s)
    assert not worker.is_alive(), f"the scenario did not finish in {timeout_s:.0f} s"
    if error:
        raise error[0]
    return result[0]


def queue_with(api, name: str, n: int) -> tuple[str, list[str]]:
    """A new queue `name` holding `n` new tasks, enqueued in order: (queue id, task ids)."""
    queue = api.call("queues.create", {"name": name})["id"]
    tasks = []
    for i in range(n):
        task = api.call("tasks.create", {"name": f"{name}-{i}", "type": "training"})["id"]
        api.call("tasks.enqueue", {"task": task, "queue": queue})
        tasks.append(task)
    return queue, tasks

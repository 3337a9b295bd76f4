"""S3 for tests: a real moto server process, a bucket on it, and a TCP relay that can be cut.

    moto = start_moto(tmp_path)         # moto_server on a free loopback port (moto[server])
    bucket = make_bucket(moto.url)      # a fresh bucket; boto3 client: s3_client(moto.url)
    relay = Relay(moto.port)            # clients talk to relay.url; relay.down() refuses and cuts
    relay.up()                          # every connection until up() listens again (same port)
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests

from tests.helpers import free_port

MOTO_KEY, MOTO_SECRET, REGION = "testing-key", "testing-secret", "us-east-1"


@dataclass
class Moto:
    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_moto(log_dir: Path) -> Moto:
    if importlib.util.find_spec("moto") is None:
        if os.environ.get("CI"):
            raise RuntimeError("moto[server] is missing (pip install -e '.[test]')")
        pytest.skip("moto[server] is not installed")
    port = free_port()
    with open(log_dir / "moto.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    moto = Moto(proc, port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"{moto.url}/moto-api/", timeout=1)
            return moto
        except requests.ConnectionError:
            assert proc.poll() is None, (log_dir / "moto.log").read_text()
            time.sleep(0.2)
    moto.stop()
    raise RuntimeError("moto server did not start")


def s3_client(url: str):
    return boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=MOTO_KEY,
                        aws_secret_access_key=MOTO_SECRET)


def make_bucket(url: str) -> str:
    name = f"shipyard-{uuid.uuid4().hex[:10]}"
    s3_client(url).create_bucket(Bucket=name)
    return name


def server_env(url: str, bucket: str, prefix: str = "files", **extra: str) -> dict[str, str]:
    """A server's environment for the S3 files backend on `url`/`bucket`."""
    return {"SHIPYARD_FILES_BACKEND": "s3", "SHIPYARD_FILES_S3_BUCKET": bucket, "SHIPYARD_FILES_S3_PREFIX": prefix,
            "SHIPYARD_FILES_S3_ENDPOINT_URL": url, "SHIPYARD_FILES_S3_REGION": REGION,
            "SHIPYARD_FILES_S3_ACCESS_KEY": MOTO_KEY, "SHIPYARD_FILES_S3_SECRET_KEY": MOTO_SECRET, **extra}


def keys(url: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(url)
    found = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in found}


class Relay:
    """A loopback TCP relay to `target_port`; `down()` closes its listener and every connection."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            doomed, self._sockets = self._sockets, []
        for sock in ([listener] if listener else []) + doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

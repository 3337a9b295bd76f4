"""A local package index for tests: PEP 503 directories served by http.server, optional basic auth.

    index = PackageIndex(tmp_path / "index", private=("/private/",), user="u", password="p")
    index.add_wheel("cu121", "torch", "2.5.0+cu121")       # -> cu121/torch/torch-2.5.0+cu121-py3-none-any.whl
    index.start(); index.url("cu121")                       # http://127.0.0.1:PORT/cu121
    ...; index.stop()

Wheels are minimal and pure Python: a package whose `__version__` is the wheel's version, so a
task that prints `torch.__version__` tells which index it was installed from.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name


def build_wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal valid wheel `name-version-py3-none-any.whl` in `directory`."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'__version__ = "{version}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: shipyard-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={_digest(text)},{len(text.encode())}" for path, text in files.items()]
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def _digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


class _Handler(SimpleHTTPRequestHandler):
    private: tuple[str, ...] = ()
    token = ""

    seen: list[str]

    def do_GET(self) -> None:   # noqa: N802 - http.server's name
        self.seen.append(self.path)
        if self.path.startswith(self.private) and self.headers.get("Authorization") != f"Basic {self.token}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private index"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


class PackageIndex:
    def __init__(self, root: Path, *, private: tuple[str, ...] = (), user: str = "", password: str = ""):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.requests: list[str] = []   # every GET's path, in order
        handler = type("Handler", (_Handler,), {"private": private, "token": token, "seen": self.requests})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def url(self, index: str) -> str:
        return f"http://{self.host}/{index}"

    def add_wheel(self, index: str, name: str, version: str) -> Path:
        return build_wheel(self.root / index / canonicalize_name(name), name, version)

    def start(self) -> PackageIndex:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

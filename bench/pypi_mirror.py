"""A package index on loopback for benchmarks: a wheelhouse served as a PEP 503 simple index.

Agents under benchmark install from `http://127.0.0.1:<port>/simple/` and nothing else, so a
"cold build" measures the agent (resolver, downloads over HTTP, unpacking, venv creation), not
the Internet, and every agent resolves to the very same files (one version of each project).

    wheels = ensure_wheelhouse(["numpy", "pandas", "pip<22.3"])   # downloads once, then cached
    with Mirror(wheels) as mirror:
        env = {"PIP_INDEX_URL": mirror.url, "UV_DEFAULT_INDEX": mirror.url}

The wheelhouse is `$SHIPYARD_BENCH_WHEELHOUSE` (default `~/.cache/shipyard-bench/wheelhouse`).
Filling it is the one step that talks to a package index (pip's own configuration decides
which); it runs before any measurement and only when a requested requirement is missing.
The server is `python -m http.server` in a process of its own; its request log is kept, so a
bench can tell which projects each agent asked for.
"""
from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MARKER = ".requirements.json"


def wheelhouse_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_BENCH_WHEELHOUSE")
                or Path.home() / ".cache" / "shipyard-bench" / "wheelhouse")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def ensure_wheelhouse(requirements: list[str], dest: Path | None = None, log=print) -> Path:
    """Download binary wheels of `requirements` and their dependencies for this interpreter,
    unless an earlier call already did (the satisfied requirement lines are remembered)."""
    dest = dest or wheelhouse_dir()
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / MARKER
    done = set(json.loads(marker.read_text())) if marker.exists() else set()
    missing = [r for r in requirements if r not in done]
    if missing:
        log(f"filling the wheelhouse {dest} with {' '.join(missing)} (one-time download)")
        for requirement in missing:  # one at a time: "pip" and "pip<22.3" may both be wanted
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                            "--only-binary=:all:", "--dest", str(dest), requirement], check=True)
            done.add(requirement)
            marker.write_text(json.dumps(sorted(done)))
    return dest


def write_index(wheelhouse: Path) -> Path:
    """(Re)write `simple/<project>/index.html` for every wheel; returns the root to serve."""
    projects: dict[str, list[str]] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        projects.setdefault(normalize(wheel.name.split("-")[0]), []).append(wheel.name)
    simple = wheelhouse / "simple"
    simple.mkdir(exist_ok=True)
    for project, files in projects.items():
        (simple / project).mkdir(exist_ok=True)
        links = "\n".join(f'<a href="../../{html.escape(f)}">{html.escape(f)}</a><br>' for f in files)
        (simple / project / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}\n</body></html>\n")
    root = "\n".join(f'<a href="{p}/">{p}</a><br>' for p in sorted(projects))
    (simple / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{root}\n</body></html>\n")
    return wheelhouse


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mirror:
    """`python -m http.server` on 127.0.0.1 serving a wheelhouse as a simple index."""

    def __init__(self, wheelhouse: Path, log_path: Path | None = None):
        self.root = write_index(wheelhouse)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/simple/"
        self.log_path = log_path or wheelhouse.parent / "mirror-requests.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mirror:
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                 "--directory", str(self.root)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=1).read()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mirror exited: {self.log_path.read_text()}") from None
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("mirror did not start")

    def requested_projects(self) -> list[str]:
        """Projects whose index page was asked for so far (from the request log)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return sorted(set(re.findall(r'"GET /simple/([^/ ]+)/', text)))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Mirror:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

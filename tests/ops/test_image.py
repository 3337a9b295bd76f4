"""The Docker image: built from this checkout with the local engine, then smoke-run.

No image registry is reachable in CI, so the base image is built locally first
(scripts/build-base-image.sh: a few minutes once, then kept under its tag). The project image is
rebuilt every run; Docker's layer cache makes that seconds when nothing changed. The engine is
started by scripts/test.sh; these tests skip only when it truly cannot run here, with its reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = "shipyard-test/python:bookworm"
IMAGE = "shipyard-test/shipyard:ops"
KEY, SECRET = "OPSIMAGEKEY0000000000000", "ops-image-secret-0123456789abcdefghijkl"


def _run(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _engine_answers() -> bool:
    return _run("docker", "info", timeout=30, check=False).returncode == 0


@pytest.fixture(scope="module")
def engine() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client on this machine")
    if _engine_answers():
        return
    started = _run("bash", str(ROOT / "scripts/start-dockerd.sh"), timeout=300, check=False)
    if started.returncode != 0 or not _engine_answers():
        pytest.skip(f"the Docker engine cannot start here: {started.stderr.strip()[-500:]}")


@pytest.fixture(scope="module")
def image(engine) -> str:
    _run("bash", str(ROOT / "scripts/build-base-image.sh"), BASE, timeout=900)
    previous = _run("docker", "image", "inspect", "-f", "{{.Id}}", IMAGE, check=False).stdout.strip()
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder: Debian's docker.io has no buildx
    build = subprocess.run(["docker", "build", "--build-arg", f"BASE={BASE}", "-t", IMAGE, str(ROOT)],
                           capture_output=True, text=True, timeout=600, env=env)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    current = _run("docker", "image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip()
    if previous and previous != current:  # the last run's image, untagged now: don't pile them up
        _run("docker", "rmi", previous, check=False)
    return IMAGE


def test_version_runs_as_non_root(image):
    assert _run("docker", "run", "--rm", image, "--version").stdout.strip() == "shipyard, version 0.1.0"
    identity = _run("docker", "run", "--rm", "--entrypoint", "id", image).stdout
    assert identity.startswith("uid=10001(shipyard)")


def test_image_carries_only_the_project(image):
    listing = _run("docker", "run", "--rm", "--entrypoint", "sh", image, "-c",
                   "ls /src 2>/dev/null; ls /opt/shipyard/bin | grep -c '^pip' || true").stdout.split()
    assert listing == ["0"], "the build stage's sources or pip leaked into the final image"


def test_server_answers_inside_the_container(image):
    name = f"shipyard-ops-{uuid.uuid4().hex[:8]}"
    _run("docker", "run", "-d", "--name", name, image, "server", "--host", "0.0.0.0",
         "--access-key", KEY, "--secret-key", SECRET)
    try:
        probe = ("import json, urllib.request as u\n"
                 "ping = json.load(u.urlopen('http://127.0.0.1:8008/debug.ping', timeout=5))\n"
                 "metrics = u.urlopen('http://127.0.0.1:8008/metrics', timeout=5).read().decode()\n"
                 "print(json.dumps({'code': ping['meta']['result_code'], 'metrics': metrics}))\n")
        deadline = time.monotonic() + 60
        while True:
            result = _run("docker", "exec", name, "python3", "-c", probe, check=False)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        logs = _run("docker", "logs", name, check=False)
        assert result.returncode == 0, result.stderr + logs.stdout + logs.stderr
        answer = json.loads(result.stdout)
        assert answer["code"] == 200
        assert 'shipyard_queue_depth{queue="default"' in answer["metrics"]
        assert "Data dir:     /var/lib/shipyard/server" in logs.stdout
    finally:
        stop = _run("docker", "stop", "-t", "10", name, check=False)
        status = _run("docker", "inspect", "-f", "{{.State.ExitCode}}", name, check=False).stdout.strip()
        _run("docker", "rm", "-f", name, check=False)
    assert stop.returncode == 0 and status == "0", f"the server did not stop cleanly on SIGTERM (exit {status})"

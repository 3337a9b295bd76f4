"""Docker-mode fixtures: a real Docker engine and a base image built locally (no registry).

The engine is started with scripts/start-dockerd.sh and the image built with
scripts/build-base-image.sh (falling back to ../shared/tools/ when a checkout lacks them).
Tests skip, saying why, only when the engine cannot be started; with SHIPYARD_REQUIRE_DOCKER=1
(CI) they fail instead.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "shipyard-test/python:bookworm"
REQUIRED = os.environ.get("SHIPYARD_REQUIRE_DOCKER") == "1"


def _script(name: str, fallback: str) -> Path | None:
    for path in (ROOT / "scripts" / name, ROOT.parent / "shared" / "tools" / fallback,
                 Path("/work/shared/tools") / fallback):
        if path.is_file():
            return path
    return None


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"SHIPYARD_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
        return client
    except docker.errors.DockerException:
        pass
    script = _script("start-dockerd.sh", "start-dockerd.sh")
    if script is None:
        _unavailable("no Docker engine answers and no start-dockerd.sh was found")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        _unavailable(f"the Docker engine could not be started: {(proc.stderr or proc.stdout).strip()[-500:]}")
    client = docker.from_env(timeout=60)
    client.ping()
    return client


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    import docker

    try:
        docker_client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    script = _script("build-base-image.sh", "build-test-image.sh")
    if script is None:
        pytest.fail("no build-base-image.sh to build the base image with")
    proc = subprocess.run(["bash", str(script), BASE_IMAGE], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"building {BASE_IMAGE} failed:\n{proc.stdout}\n{proc.stderr}"
    return BASE_IMAGE


def containers_of(client, **labels: str) -> list:
    return client.containers.list(all=True, filters={"label": [f"shipyard.{k}={v}" for k, v in labels.items()]})

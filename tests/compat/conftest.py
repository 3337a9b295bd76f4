"""Fixtures for the compatibility tests: the real clearml SDK / clearml-agent, in their own venvs
(see tests/peers.py), pointed at a real Shipyard server with a clean HOME and config."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests import peers
from tests.helpers import start_server

# Lines in a peer's output that reveal a protocol problem with the server.
BAD_OUTPUT = re.compile(r"Action failed|Failed parsing response|Traceback \(most recent call last\)"
                        r"|Internal server error|Unable to find endpoint|could not find queue", re.IGNORECASE)


TARGET_ENV = "SHIPYARD_TEST_TARGET"  # "replicas": the compat tests' server is two replicas behind nginx


@pytest.fixture(scope="session")
def server(request, tmp_path_factory):
    """The server the compat tests talk to: one process, or with SHIPYARD_TEST_TARGET=replicas two
    replicas on a private PostgreSQL behind nginx (tests/replicas.py; the nightly run does both)."""
    if os.environ.get(TARGET_ENV) == "replicas":
        yield request.getfixturevalue("replica_cluster").front
        return
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def api(server):
    """The compat server's API. (The root conftest's session `api` belongs to its own `server`; in
    a worker that made that one first, it would point the compat tests at the wrong server.)"""
    return server.api()


def _peer(key: str) -> Path:
    try:
        return peers.ensure(key)
    except Exception as exc:  # noqa: BLE001 - turned into a readable failure
        pytest.fail(f"could not create the {key} peer venv (python -m tests.peers {key}): {exc}",
                    pytrace=False)


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """The python of a venv with clearml==2.1.12."""
    return _peer("sdk")


@pytest.fixture(scope="session")
def agent_bin() -> Path:
    """The clearml-agent 3.0.3 executable, in its own venv."""
    return _peer("agent")


@pytest.fixture(scope="session")
def agent_wheels() -> Path:
    """A directory of wheels: what clearml-agent installs into a task's venv (clearml, pip)."""
    return _peer("wheels")


# The SDK forks its background reporter (os.fork) at the end of Task.init while its repository
# detection thread may be inside subprocess.Popen(git ...); the forked child then inherits the
# Popen error pipe and the detection thread blocks until the 300 s analysis timeout (an upstream
# race, seen in about one run of three here). Reporting from a thread sends the very same requests.
SDK_CONFIG = "sdk.development.report_use_subprocess: false\n"


def clean_env(home: Path, extra: dict[str, str] | None = None, *, config_text: str = SDK_CONFIG) -> dict[str, str]:
    """A peer's environment: no CLEARML_*/TRAINS_* leaking in from the developer's shell, a
    HOME of its own, and a config file of our own (nothing from the user's ~/clearml.conf)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "test-clearml.conf"
    config.write_text(config_text)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLEARML_", "TRAINS_", "VIRTUAL_ENV", "PYTHON", "PIP_", "UV_"))}
    env.update({"HOME": str(home), "CLEARML_CONFIG_FILE": str(config), "PYTHONUNBUFFERED": "1",
                "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"})
    env.update(extra or {})
    return env


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def make_repo(path: Path, files: dict[str, str], *, origin: str | None = None,
              uncommitted: dict[str, str] | None = None) -> str:
    """A git repo with `files` committed on branch main; returns the commit sha."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "add", *files)
    git(path, "commit", "-q", "-m", "initial")
    if origin:
        git(path, "remote", "add", "origin", origin)
    for name, text in (uncommitted or {}).items():
        (path / name).write_text(text)
    return git(path, "rev-parse", "HEAD")


def pushed_repo(root: Path, files: dict[str, str]) -> Path:
    """A work repo at root/work with `files` committed on main and pushed to a bare
    root/origin.git (a file:// remote the agent can clone); returns the work repo."""
    origin = root / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = root / "work"
    make_repo(work, files, origin=f"file://{origin}")
    git(work, "push", "-q", "-u", "origin", "main")
    return work


def bad_lines(output: str, *, tracebacks: bool = True) -> list[str]:
    """Lines of a peer's output that reveal protocol problems (and, unless told otherwise,
    tracebacks, which a script that fails on purpose prints)."""
    return [line for line in output.splitlines() if BAD_OUTPUT.search(line)
            and (tracebacks or not line.startswith("Traceback"))]

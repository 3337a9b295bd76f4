"""`shipyard init` and `shipyard doctor`, as a person runs them: real processes, a real server."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.cli.doctor import FAIL, OK, WARN, clock_skew
from shipyard.cli.init import derive_servers
from shipyard.errors import ConfigError
from tests.agent_helpers import agent_env
from tests.helpers import ACCESS_KEY, SECRET_KEY, free_port

CONNECTION = ("CLEARML_API_HOST", "CLEARML_FILES_HOST", "CLEARML_WEB_HOST", "CLEARML_API_ACCESS_KEY",
              "CLEARML_API_SECRET_KEY")


def shipyard(env: dict, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shipyard", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture()
def bare_env(server, tmp_path) -> dict:
    """A machine with no connection settings at all: only what `init` writes will connect it."""
    env = agent_env(server, tmp_path)
    for name in CONNECTION:
        env.pop(name)
    return env


def _init(env: dict, server, *extra: str, secret: str = SECRET_KEY) -> subprocess.CompletedProcess:
    return shipyard(env, "init", "--api-server", server.api_url, "--files-server", server.files_url,
                    "--web-server", server.web_url, "--access-key", ACCESS_KEY, "--secret-key", secret, *extra)


def test_init_writes_a_conf_the_agent_and_cli_use(server, bare_env, tmp_path):
    # When
    result = _init(bare_env, server, "--queue", "ops-init")
    # Then: written where the agent looks by default, private, and it connects
    conf = Path(bare_env["HOME"]) / "clearml.conf"
    assert result.returncode == 0, result.stderr
    assert f"credentials accepted by {server.api_url}" in result.stdout
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    shown = shipyard(bare_env, "config").stdout
    assert f"api.api_server = '{server.api_url}'    # file:{conf}" in shown
    assert "agent.queues = ('ops-init',)" in shown
    assert shipyard(bare_env, "list").returncode == 0  # an authenticated call with the written keys


def test_init_is_readable_by_pyhocon_as_the_sdk_reads_it(server, bare_env):
    from pyhocon import ConfigFactory

    assert _init(bare_env, server).returncode == 0
    tree = ConfigFactory.parse_file(str(Path(bare_env["HOME"]) / "clearml.conf"))
    assert tree["api"]["credentials"]["secret_key"] == SECRET_KEY
    assert tree["api"]["files_server"] == server.files_url


def test_init_refuses_rejected_credentials_and_writes_nothing(server, bare_env):
    result = _init(bare_env, server, secret="not-the-secret")
    assert result.returncode == 4, result.stdout + result.stderr  # AuthError's exit code
    assert "auth.login refused" in result.stderr
    assert not (Path(bare_env["HOME"]) / "clearml.conf").exists()


def test_init_refuses_an_unreachable_server(bare_env):
    dead = f"http://127.0.0.1:{free_port()}"
    result = shipyard(bare_env, "init", "--api-server", dead, "--files-server", dead, "--web-server", dead,
                      "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, timeout=90)
    assert result.returncode == 5, result.stderr  # ServerUnreachable


def test_init_keeps_an_existing_file_unless_forced(server, bare_env):
    conf = Path(bare_env["HOME"]) / "clearml.conf"
    conf.write_text("sdk { }\n")
    refused = _init(bare_env, server)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert conf.read_text() == "sdk { }\n"
    forced = _init(bare_env, server, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (conf.parent / "clearml.conf.bak").read_text() == "sdk { }\n"
    assert ACCESS_KEY in conf.read_text()


@pytest.mark.parametrize("api, files, web", [
    ("http://box:8008", "http://box:8081", "http://box:8080"),
    ("https://api.ml.example.com", "https://files.ml.example.com", "https://app.ml.example.com"),
])
def test_files_and_web_servers_are_derived_as_clearml_does(api, files, web):
    assert derive_servers(api) == (files, web)


def test_an_address_with_no_convention_needs_explicit_servers():
    with pytest.raises(ConfigError, match="--files-server"):
        derive_servers("http://10.0.0.5:9000")


# --- doctor ----------------------------------------------------------------------------------------


def test_doctor_on_a_ready_machine(server, tmp_path):
    result = shipyard(agent_env(server, tmp_path), "doctor")
    lines = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()[:11] if line.strip()}
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("config", "git", "python", "server", "credentials", "clock"):
        assert lines[name] == OK, result.stdout
    assert lines["nvml"] in ("ok", "skip") and lines["docker"] in ("ok", "skip", "warn")
    assert result.stdout.rstrip().endswith("ready")


def test_doctor_json_and_an_unreachable_server(server, tmp_path):
    env = agent_env(server, tmp_path, CLEARML_API_HOST=f"http://127.0.0.1:{free_port()}")
    result = shipyard(env, "doctor", "--json")
    checks = {check["name"]: check for check in map(json.loads, result.stdout.splitlines())}
    assert result.returncode == 1
    assert checks["server"]["status"] == FAIL and "unreachable" in checks["server"]["detail"]
    assert "credentials" not in checks and "clock" not in checks  # nothing to ask past a dead server


def test_doctor_reports_a_broken_config_and_still_checks_the_machine(server, tmp_path):
    env = agent_env(server, tmp_path, SHIPYARD_POLL_INTERVAL_S="soon")
    result = shipyard(env, "doctor")
    assert result.returncode == 1
    assert result.stdout.startswith("fail  config       setting agent.poll_interval_s")
    assert "ok    git" in result.stdout


def test_doctor_names_wrong_credentials(server, tmp_path):
    result = shipyard(agent_env(server, tmp_path, CLEARML_API_SECRET_KEY="wrong"), "doctor")
    assert result.returncode == 1 and "fail  credentials  auth.login refused" in result.stdout


@pytest.mark.parametrize("offset, status", [(0.0, OK), (-3.0, OK), (30.0, WARN), (-600.0, FAIL)])
def test_clock_skew_against_the_date_header(offset, status):
    from email.utils import formatdate

    now = 1_800_000_000.0
    check = clock_skew(formatdate(now + offset, usegmt=True), now - 0.05, now + 0.05)
    assert check.status == status, check.detail


def test_doctor_sees_the_engine_when_one_runs(server, tmp_path):
    if not os.path.exists("/var/run/docker.sock"):
        pytest.skip("no Docker engine on this machine (scripts/test.sh starts one where it can)")
    result = shipyard(agent_env(server, tmp_path), "doctor", "--json")
    docker = next(c for c in map(json.loads, result.stdout.splitlines()) if c["name"] == "docker")
    assert docker["status"] == OK and docker["detail"].startswith("engine "), docker

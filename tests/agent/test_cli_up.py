"""The README's flow: `shipyard up`, then the task CLI against it, with no other configuration,
from a clean home directory; nothing along the way prints a warning or a traceback a newcomer
would have to understand (issue 20)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.agent_helpers import git, make_repo
from tests.helpers import Api, ApiFailure, free_port


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    root = tmp_path_factory.mktemp("up")
    ports = [free_port() for _ in range(3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SHIPYARD_"))}
    env.update({"HOME": str(root / "home"), "SHIPYARD_WORK_DIR": str(root / "work"),
                "SHIPYARD_CACHE_DIR": str(root / "cache"), "SHIPYARD_LONG_POLL_S": "5"})
    (root / "home").mkdir()
    with open(root / "up.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "shipyard", "up", "--api-port", str(ports[0]),
                                 "--files-port", str(ports[1]), "--web-port", str(ports[2])],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while "listening on" not in (root / "up.log").read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, (root / "up.log").read_text()
        time.sleep(0.1)
    conf = root / "home" / ".shipyard" / "clearml.conf"
    client_env = {**env, "CLEARML_CONFIG_FILE": str(conf)}
    yield {"root": root, "env": client_env, "log": root / "up.log", "conf": conf, "port": ports[0]}
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def cli(up, *args: str, cwd=None) -> str:
    proc = subprocess.run([sys.executable, "-m", "shipyard", *args], env=up["env"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not _alarming(proc.stderr), proc.stderr
    return proc.stdout


def _alarming(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(word in line.lower() for word in ("warning", "traceback"))]


def api_from_conf(up) -> Api:
    text = up["conf"].read_text()
    access = text.split('access_key: "')[1].split('"')[0]
    secret = text.split('secret_key: "')[1].split('"')[0]
    return Api(f"http://127.0.0.1:{up['port']}", access, secret)


def test_up_prints_where_and_credentials(up):
    text = up["log"].read_text()
    assert f"http://localhost:{up['port']}" in text and "CLEARML_API_SECRET_KEY=" in text
    assert "listening on default" in text
    assert not _alarming(text), text
    assert oct(up["conf"].stat().st_mode & 0o777) == "0o600"


def test_first_task_from_a_local_repo(up):
    repo, _ = make_repo(up["root"] / "repo", {"train.py": "import sys\nprint('args', sys.argv[1:])\n"})
    (repo / "train.py").write_text("import sys\nprint('args', sys.argv[1:])\nprint('local edit')\n")
    task = cli(up, "task", "create", "--script", "train.py", "--args", "lr=0.1", "--queue", "default",
               cwd=repo).split()[0]
    logs = cli(up, "task", "logs", task, "--follow")
    assert "args ['--lr', '0.1']" in logs and "local edit" in logs and "-- task completed" in logs
    clone = cli(up, "task", "clone", task, "--set", "Args/lr=0.5", "--queue", "default").split()[0]
    logs = cli(up, "task", "logs", clone, "--follow")
    assert "args ['--lr', '0.5']" in logs
    shown = json.loads(cli(up, "task", "show", clone, "--json"))
    assert shown["status"] == "completed" and shown["parent"] == task
    assert shown["script"]["version_num"] == git(repo, "rev-parse", "HEAD")
    assert task in cli(up, "task", "list")
    assert "default" in cli(up, "queue", "list")
    assert "default" in cli(up, "list")  # the worker and its queue
    assert not _alarming(up["log"].read_text()), up["log"].read_text()  # the agent's side of it too


def test_config_shows_sources_and_masks_secrets(up):
    out = cli(up, "config")
    assert "api.api_server" in out and "file:" in out
    secret = up["conf"].read_text().split('secret_key: "')[1].split('"')[0]
    assert secret not in out


def test_the_agent_key_is_not_admin(up):
    """The key `shipyard up` gives its agent (and writes to clearml.conf) has the agent role: it
    mints per-run task keys, and no admin, agent or user keys (issue 17, attack 3)."""
    key_file = up["root"] / "home" / ".shipyard" / "local-agent.key"
    access, secret = key_file.read_text().split()
    agent = Api(f"http://127.0.0.1:{up['port']}", access, secret)
    assert agent.call("users.get_current_user")["user"]["role"] == "agent"
    assert f'access_key: "{access}"' in up["conf"].read_text()
    for role in ("admin", "agent", "user"):
        with pytest.raises(ApiFailure) as err:
            agent.call("auth.create_credentials", {"role": role})
        assert err.value.code == 403, role

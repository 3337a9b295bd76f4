"""Issue 17, attack 4: one task plants code in the cached environment another task imports.

A real server, a real daemon, real tasks of two users with the same requirements (six==1.16.0,
as the daemon tests use). Task A attacks the venv it got from the environment cache; task B,
another user's, must not run what A planted (no PWNED on its console, no marker file).

* same user (the agent's own, which is root in CI): A's venv is an overlay over the cache entry
  (sandbox/overlay.py), so six.__file__ is the entry's file: A chmods it and appends to it, or
  replaces it (chmodding its sealed directory first and back after), or finds it by inode
  from the cache's root and replaces it; when A's run ends the entry is verified, the change
  found, the entry discarded, and B's run rebuilds it with the warning naming the file;
* a task user (`--task-user`, root only): A's writes into the cached files fail with
  EACCES, it can only shadow six in its own site-packages, and B reuses the intact entry;
* docker mode: A's container, building an environment of its own, cannot reach B's entry;
* the cache alone: a changed .pyc or a .pth added to an entry is caught before reuse.
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.docker.conftest import base_image, docker_client  # noqa: F401  (the docker test's fixtures)
from tests.helpers import Api, start_server

QUEUE = "poison"
REQUIREMENTS = {"pip": "six==1.16.0\n"}
VICTIM = "import six\nprint('victim imported six', six.__version__)\n"

# The attacker's script: `where` is "venv-append", "venv-replace" or "cache-replace".
ATTACK = textwrap.dedent("""
    import os, six, sys
    where, marker, cache = {where!r}, {marker!r}, {cache!r}
    planted = "\\nprint('PWNED'); open(%r, 'a').write('pwned')\\n" % marker
    path = six.__file__
    if where == "cache-replace":
        inode = os.stat(path).st_ino
        path = next(os.path.join(d, n) for d, _, names in os.walk(cache) for n in names
                    if n == "six.py" and os.stat(os.path.join(d, n)).st_ino == inode)
        print("found the cache's file", path)
    if where == "venv-append":
        os.chmod(path, 0o644)              # the files are read-only: a determined attacker chmods first
        with open(path, "a") as handle:
            handle.write(planted)
    else:
        text = open(path).read()
        folder = os.path.dirname(path)
        os.chmod(folder, 0o755)            # so are the directories: chmod, replace, and hide the chmod
        os.unlink(path)
        with open(path, "w") as handle:
            handle.write(text + planted)
        os.chmod(folder, 0o555)
    print("planted into", path)
""")


def _user_api(admin: Api, label: str) -> Api:
    key = admin.call("auth.create_credentials", {"label": label})
    return Api(admin.base, key["access_key"], key["secret_key"])


def _run(api: Api, name: str, script: str) -> tuple[dict, str]:
    task = create_task(api, name, {"repository": "", "entry_point": f"{name}.py", "diff": script,
                                   "requirements": REQUIREMENTS}, queue=QUEUE)
    doc = wait_status(api, task, timeout=180)
    return doc, "\n".join(task_log(api, task))


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("env-poison")
    server = start_server(root / "server")
    try:
        daemon = start_daemon(agent_env(server, root), [QUEUE], root / "daemon.log")
    except RuntimeError:
        server.stop()
        raise
    admin = server.api()
    yield {"root": root, "daemon": daemon, "alice": _user_api(admin, "alice"), "bob": _user_api(admin, "bob")}
    daemon.stop()
    server.stop()


@pytest.mark.parametrize("where", ["venv-append", "venv-replace", "cache-replace"])
def test_a_planted_module_never_reaches_another_task(rig, where):
    marker = rig["root"] / f"marker-{where}"
    # Given an environment in the cache that bob's tasks use
    doc, log = _run(rig["bob"], f"bob-before-{where}", VICTIM)
    assert doc["status"] == "completed", doc.get("status_reason")
    # When alice's task with the same requirements plants code into it
    attack = ATTACK.format(where=where, marker=str(marker), cache=str(rig["root"] / "cache"))
    doc, log = _run(rig["alice"], f"alice-{where}", attack)
    assert doc["status"] == "completed", (doc.get("status_reason"), log)
    assert "planted into" in log
    # Then bob's next task runs the original module
    doc, log = _run(rig["bob"], f"bob-after-{where}", VICTIM)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "victim imported six 1.16.0" in log
    assert "PWNED" not in log and not marker.exists()
    # the entry itself changed (a venv is an overlay over it): discarded, rebuilt, the file named
    assert "was changed after it was built" in log and "site-packages/six.py" in log
    assert "was changed after it was built" in rig["daemon"].output()


def test_a_root_agent_without_task_user_says_so(rig):
    if os.geteuid() != 0:
        pytest.skip("the warning is for agents running as root")
    assert "agent.task_user is not set" in rig["daemon"].output()


# --- a task user of its own ------------------------------------------------------------------------

PROBE = textwrap.dedent("""
    import os, six
    path = six.__file__
    print("uid", os.getuid())
    for name, attempt in (("append", lambda: open(path, "a")), ("chmod", lambda: os.chmod(path, 0o666))):
        try:
            attempt()
            print(name, "WORKED")
        except PermissionError as exc:
            print(name, "refused:", exc.strerror)
    try:
        os.unlink(path)                   # the entry's directory is the agent's, sealed
        print("unlink WORKED")
    except PermissionError as exc:
        print("unlink refused:", exc.strerror)
    import site
    own = site.getsitepackages()[0]       # its own layer is its own: it may shadow six there
    with open(os.path.join(own, "six.py"), "w") as handle:
        handle.write(open(path).read() + "\\nprint('PWNED'); open(%r, 'a').write('pwned')\\n")
    print("shadowed six in its own venv; home", os.environ["HOME"])
""")


@pytest.fixture()
def task_user():
    if os.geteuid() != 0:
        pytest.skip("switching to a task user needs root")
    if shutil.which("useradd") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("needs useradd and a system python a task user can run (/usr/bin/python3)")
    name = f"sy-poison-{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


# --- the cache alone: what the manifest sees ----------------------------------------------------------

def _cache(tmp_path: Path):
    import sys

    from sandbox.env_cache import EnvCache
    from sandbox.pyenv import EnvBuilder, probe

    uv_cache = Path(os.environ.get("SHIPYARD_TEST_UV_CACHE", Path.home() / ".cache" / "shipyard-test-uv"))
    cache = EnvCache(tmp_path / "cache", builder=EnvBuilder(uv_cache_dir=uv_cache, seed_pip=False))
    return cache, probe(sys.executable)


def _append_to_compiled_six(site: Path) -> None:
    pyc = next((site / "__pycache__").glob("six.*.pyc"))
    pyc.chmod(0o644)
    with pyc.open("ab") as handle:
        handle.write(b"\0")


def _plant_a_pth(site: Path) -> None:  # a .pth file in site-packages runs at every interpreter start
    site.chmod(0o755)                    # the sealed directory made writable, and sealed again
    (site / "zz-planted.pth").write_text("import os; print('PWNED')\n")
    site.chmod(0o555)


@pytest.mark.parametrize("attack", [_append_to_compiled_six, _plant_a_pth])
def test_bytecode_and_added_files_in_the_entry_are_caught(tmp_path, attack):
    cache, python = _cache(tmp_path)
    first = cache.materialize("six==1.16.0", python, tmp_path / "t1", log=print)
    assert cache.wait_for_bytecode(first.key, 120)
    # Given an entry whose compiled six, or whose site-packages, was changed after it was built
    attack(next((cache.root / "entries" / first.key / "venv").glob("lib/python3*/site-packages")))
    # When the next task materializes it
    logged: list[str] = []
    result = cache.materialize("six==1.16.0", python, tmp_path / "t2", log=logged.append)
    # Then the entry was rebuilt first, and the target runs clean
    assert not result.cache_hit and any("was changed after it was built" in line for line in logged)
    out = subprocess.run([str(result.python), "-c", "import six"], capture_output=True, text=True)
    assert out.returncode == 0 and "PWNED" not in out.stdout


def _settings(work_dir: Path, task_user: str):
    from shipyard.client.config import load_settings

    return load_settings({"agent.task_user": task_user, "agent.work_dir": str(work_dir)},
                         env={"HOME": str(work_dir)})


def test_a_task_user_that_cannot_work_is_refused_at_start(tmp_path):
    from agent.execution.task_user import startup_check
    from shipyard.errors import ConfigError

    with pytest.raises(ConfigError, match="no user"):
        startup_check(_settings(tmp_path, "shipyard-no-such-user-xyz"))
    with pytest.raises(ConfigError, match="must not be root"):
        startup_check(_settings(tmp_path, "root"))


def test_a_work_dir_the_task_user_cannot_reach_is_refused(task_user, tmp_path):
    from agent.execution.task_user import startup_check
    from shipyard.errors import ConfigError

    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="cannot reach the work dir"):
        startup_check(_settings(hidden / "work", task_user.pw_name))


def test_with_a_task_user_the_cache_is_read_only_to_tasks(task_user):
    base = Path(tempfile.mkdtemp(prefix="shipyard-task-user-"))  # under /tmp: a task user can reach it
    base.chmod(0o755)
    server = start_server(base / "server")
    daemon = None
    try:
        env = agent_env(server, base, SHIPYARD_PYTHON_BINARY="/usr/bin/python3")
        daemon = start_daemon(env, [QUEUE], base / "daemon.log", "--task-user", task_user.pw_name)
        admin = server.api()
        marker = base / "marker"
        # When alice's task, running as the task user, attacks the cached files of its venv
        probe = PROBE.replace("%r", repr(str(marker)))
        doc, log = _run(_user_api(admin, "alice"), "alice-task-user", probe)
        # Then every write into them is refused, and its own run still works
        assert doc["status"] == "completed", (doc.get("status_reason"), log)
        assert f"uid {task_user.pw_uid}" in log and "WORKED" not in log
        assert "append refused: Permission denied" in log and "chmod refused: Operation not permitted" in log
        assert "unlink refused: Permission denied" in log and "shadowed six in its own venv" in log
        # And bob's task gets the intact entry from the cache
        doc, log = _run(_user_api(admin, "bob"), "bob-task-user", VICTIM)
        assert doc["status"] == "completed", doc.get("status_reason")
        assert "victim imported six 1.16.0" in log and "cache hit" in log
        assert "PWNED" not in log and not marker.exists()
        cached = next((base / "cache" / "venvs" / "entries").glob("*/venv/lib/python3*/site-packages/six.py"))
        info = cached.stat()
        assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o444
        assert "agent.task_user is not set" not in daemon.output()
    finally:
        if daemon is not None:
            daemon.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- docker mode -------------------------------------------------------------------------------------

# The attacker in a container that builds its own entry (its setup script makes its key differ
# from bob's): it appends to every six.py of the cache it can reach, other than its venv's.
DOCKER_ATTACK = textwrap.dedent("""
    import os, sys
    mine = os.path.realpath(sys.prefix)
    reached = [os.path.join(d, "six.py") for d, _, names in os.walk("/shipyard/cache/envs")
               if "six.py" in names and not os.path.realpath(d).startswith(mine)]
    for path in reached:
        os.chmod(path, 0o644)
        with open(path, "a") as handle:
            handle.write("\\nprint('PWNED')\\n")
    print("entries of others reached:", len(reached))
""")


def test_a_building_container_cannot_reach_other_entries(tmp_path, base_image):  # noqa: F811
    server = start_server(tmp_path / "server")
    daemon = None
    try:
        env = agent_env(server, tmp_path, CLEARML_WORKER_ID=f"poison-docker-{uuid.uuid4().hex[:6]}:0")
        daemon = start_daemon(env, ["poison-docker"], tmp_path / "daemon.log", "--docker", base_image)
        admin = server.api()
        bob, alice = _user_api(admin, "bob"), _user_api(admin, "alice")

        def run(api: Api, name: str, code: str, **container) -> tuple[dict, str]:
            task = create_task(api, name, {"repository": "", "entry_point": "main.py", "diff": code,
                                           "requirements": REQUIREMENTS}, queue="poison-docker",
                               container=container)
            doc = wait_status(api, task, timeout=300)
            return doc, "\n".join(task_log(api, task))

        # Given bob's environment in the docker cache
        doc, _ = run(bob, "bob-before", VICTIM)
        assert doc["status"] == "completed", doc.get("status_reason")
        # When alice's container, building an environment of its own, looks for the others
        doc, log = run(alice, "alice-builds", DOCKER_ATTACK, setup_shell_script="echo alice")
        assert doc["status"] == "completed", (doc.get("status_reason"), log[-2000:])
        # Then it reached none, and bob's next task (a cache hit, read-only) runs the original
        assert "entries of others reached: 0" in log
        doc, log = run(bob, "bob-after", VICTIM)
        assert doc["status"] == "completed" and "ready (cache hit)" in log
        assert "victim imported six 1.16.0" in log and "PWNED" not in log
    finally:
        if daemon is not None:
            daemon.stop()
        server.stop()
